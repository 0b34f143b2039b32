# WireGuard roams a peer's endpoint to where its packets really come from (a NAT that
# rebinds, another address family). A routes-only reroute and the periodic re-apply must
# never force it back to the configured endpoint (dataplane.peerdiff.choose_endpoints). On
# real daemons: the WAN NATs c's packets to a from another address and port, a's WireGuard
# roams, then a's routes move (a↔b cut) and re-applies come by. Runs with the lab's backend:
# uapi here, kernel inside the VM (tests/test_kernel_vm.py runs this file there too).
import os
import time

import pytest

pytestmark = pytest.mark.netns
SLOW = max(1.0, float(os.environ.get("LANMESH_LAB_SLOW") or 1))
NATTED = "198.18.3.99:40000"


def endpoint(lab, s, peer):
    for line in lab.ns.exec(s.router, "wg", "show", s.ifname, "endpoints").stdout.splitlines():
        key, _, ep = line.partition("\t")
        if key == peer.public_key:
            return ep.strip()
    return None


def wait(cond, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return cond()


def test_roamed_endpoint_survives_a_routes_only_reroute_and_re_applies(make_lab):
    lab = make_lab(3)
    a, b, c = lab.sites
    # c's packets to a reach a from 198.18.3.99:40000, and a's packets to that go to c: a NAT
    # that rebinds, written stateless (notrack) so it holds whoever sends first
    host, port = NATTED.split(":")
    lab.ns.exec(lab.wan, "nft", "-f", "-", input=(
        "table ip lab_nat {\n chain pre {\n  type filter hook prerouting priority -300;\n"
        f"  ip saddr {c.wan_ip} ip daddr {a.wan_ip} udp sport 51820 notrack "
        f"ip saddr set {host} udp sport set {port}\n"
        f"  ip daddr {host} udp dport {port} notrack ip daddr set {c.wan_ip} udp dport set 51820\n"
        " }\n}\n"))
    lab.write_document(lab.document())
    for s in lab.sites:
        lab.start(s, wait=False, extra_env={"LANMESH_REAPPLY_S": "2"})
    for s in lab.sites:
        lab.wait_ready(s, timeout=15 * SLOW)
    assert lab.wait_direct(timeout=20 * SLOW)
    assert wait(lambda: endpoint(lab, a, c) == NATTED, 10 * SLOW), endpoint(lab, a, c)
    lab.cut(a, b)                       # a's routes move: b's prefixes now ride on c
    assert lab.wait_routes(a, {b.name: c.name}, timeout=10 * SLOW)
    time.sleep(5)                       # re-applies come by (every 2 s, wall clock)
    assert endpoint(lab, a, c) == NATTED
    ok, _ = lab.ping(a, b)
    assert ok
    lab.restore(a, b)
    assert lab.wait_routes(a, {b.name: b.name}, timeout=20 * SLOW)
    assert endpoint(lab, a, c) == NATTED
