# Data-plane work off the loop (issue 11), on real daemons in namespaces with endpoints given
# as DNS names served by the lab's own DNS server: a resolver that takes 2 s per answer (every
# apply then spends 4 s resolving) never delays the mesh's probes, so no link goes down and no
# route moves; and a site whose address changes behind its name is reached again by the
# periodic re-apply, when nothing else could find it.
import time

import pytest

from lanmesh_lab.dns import LabDns

pytestmark = pytest.mark.netns


def named(lab, sites):
    table = {}
    for s in sites:
        name = f"{s.name}.lab.test"
        s.endpoints = [f"{name}:51820"]
        table[name] = s.wan_ip
    return table


def test_slow_dns_and_applies_never_delay_probes(make_lab):
    lab = make_lab(3)
    dns = LabDns(lab, lab.wan, named(lab, lab.sites), delay_ms=2000)
    for s in lab.sites:
        dns.use(s, f"198.18.{s.i}.1")
    lab.write_document(lab.document())
    for s in lab.sites:
        lab.start(s, wait=False, extra_env={"LANMESH_REAPPLY_S": "1"})
    for s in lab.sites:
        lab.wait_ready(s, timeout=30)
    assert lab.wait_direct(timeout=30)
    flaps0 = {s.name: [l["flaps"] for l in lab.status(s)["links"]] for s in lab.sites}
    end = time.monotonic() + 8           # two whole 4 s applies, every site
    samples = 0
    while time.monotonic() < end:
        for s in lab.sites:
            st = lab.status(s)
            assert all(l["up"] for l in st["links"]), (s.name, st["links"])
            assert all(r["via"] == r["node"] for r in st["routes"]), (s.name, st["routes"])
        samples += 1
        time.sleep(0.5)
    for s in lab.sites:
        st = lab.status(s)
        assert [l["flaps"] for l in st["links"]] == flaps0[s.name]
        assert st["dataplane"]["longest_apply_ms"] >= 3500     # the resolver really was slow
        assert " DOWN " not in lab.daemon_log_full(s)
    assert samples >= 10


def test_site_that_moved_behind_its_name_is_reached_again(make_lab):
    lab = make_lab(2)
    a, b = lab.sites
    a.endpoints = []                    # a is behind NAT: only a can start a session with b
    table = named(lab, [b])
    dns = LabDns(lab, lab.wan, table)
    dns.use(a, "198.18.1.1")
    lab.write_document(lab.document())
    for s in lab.sites:
        lab.start(s, extra_env={"LANMESH_REAPPLY_S": "2"})
    assert lab.wait_ping(a, b, timeout=20)
    # b reboots with a new address; its name follows, nothing else does
    lab.stop(b)
    lab.ns.exec(b.router, "sysctl", "-qw", "net.ipv4.conf.wan0.promote_secondaries=1")
    lab.ns.exec(b.router, "ip", "addr", "add", "198.18.2.3/24", "dev", "wan0")
    lab.ns.exec(b.router, "ip", "addr", "del", "198.18.2.2/24", "dev", "wan0")
    lab.ns.exec(b.router, "ip", "route", "replace", "default", "via", "198.18.2.1")
    dns.set({f"{b.name}.lab.test": "198.18.2.3"})
    lab.start(b)
    assert lab.wait_ping(a, b, timeout=30), lab.daemon_log(a)
    ep = lab.ns.exec(a.router, "wg", "show", a.ifname, "endpoints").stdout
    assert "198.18.2.3:51820" in ep
