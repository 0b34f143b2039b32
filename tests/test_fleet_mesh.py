# Fleet control over a real mesh (issue 5, namespace acceptance): real daemons in the
# namespace test bed, a real mosquitto (TLS + passwords + ACL) inside a lab namespace, and
# `lanmesh fleet …` run by the operator inside the broker's namespace (lab/fleetlab.py).
import json
import os
import time

import pytest

from lanmesh import keys
from lanmesh_lab.fleetlab import FleetLab

pytestmark = pytest.mark.netns


@pytest.fixture
def fleet_lab(make_lab, tmp_path):
    """fleet_lab(n, **FleetLab kw) → (lab, FleetLab); broker and namespaces always go."""
    made = []

    def make(n, broker_site=None, **kw):
        lab = make_lab(n)
        site = None if broker_site is None else lab.sites[broker_site]
        fl = FleetLab(lab, tmp_path / f"f{len(made)}", broker_site=site, **kw)
        made.append(fl)
        return lab, fl

    yield make
    for fl in made:
        fl.close()


def start_all(lab, sites=None):
    sites = lab.sites if sites is None else sites
    for s in sites:
        lab.start(s, wait=False)
    for s in sites:
        lab.wait_ready(s)


def wait_for(pred, timeout, what, every=0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def logs(lab):
    return "\n".join(f"--- {s.name}\n{lab.daemon_log(s)}" for s in lab.sites)


def test_publish_adding_a_site_applied_everywhere_and_lans_reach(fleet_lab):
    lab, fl = fleet_lab(3)
    fl.start_broker()
    start_all(lab)
    assert lab.wait_ping(lab.sites[0], lab.sites[2]), logs(lab)
    fl.wait_applied(1, timeout=30)
    # The registry allocated exactly the lab's overlay addresses.
    nodes = {n["name"]: n["address"] for n in fl.fd.registry.nodes()}
    for s in lab.sites:
        assert nodes[s.name] == [f"100.64.0.{s.i}/32", f"fd00:6c6d::{s.i}/128"]

    d = lab.add_site()
    v = fl.publish(add=[d])                     # runs `lanmesh fleet publish` in the broker ns
    assert v == 2
    fl.wait_applied(2, timeout=30, sites=lab.sites[:3])
    for s in lab.sites[:3]:
        st = lab.status(s)
        assert st["version"] == 2 and any(r["node"] == d.name for r in st["routes"]), st
    lab.start(d)                                # the new router, provisioned with v2
    rows = fl.wait_applied(2, timeout=30, sites=lab.sites)
    assert all(rows[s.name]["state"] == "online" and rows[s.name]["applied_version"] == 2
               and rows[s.name]["published_version"] == 2 for s in lab.sites), rows
    a = lab.sites[0]
    for dst in lab.sites[1:]:
        assert lab.wait_ping(a, dst, timeout=20), f"{a.name} -> {dst.name}\n{logs(lab)}"
    assert lab.wait_ping(d, lab.sites[1], family=6, timeout=20), logs(lab)
    # The broker runs the controller-generated ACL: nodes read `net`, write only their subtree.
    acl = open(fl.broker_dir + "/acl").read()
    assert "pattern readwrite lanmesh/lab/node/%u/#" in acl
    assert all(f"user {s.name}\ntopic read lanmesh/lab/net" in acl for s in lab.sites), acl


def test_document_cutting_branch_from_broker_rolls_back(fleet_lab):
    lab, fl = fleet_lab(3, broker_site=0, settings={"confirm_window": 8})
    a, b, c = lab.sites       # broker on a's LAN host: b and c reach it only through the mesh
    fl.start_broker()
    start_all(lab)
    assert lab.wait_ping(b, a) and lab.wait_ping(c, a), logs(lab)
    fl.wait_applied(1, timeout=40)
    bad_key = keys.pubkey(keys.genkey())

    def break_a(doc):      # a's key is wrong in everyone's view: no tunnel to a's LAN
        for n in doc["nodes"]:
            if n["name"] == a.name:
                n["public_key"] = bad_key
    t0 = time.monotonic()
    v = fl.publish(edit=break_a)
    assert v == 2

    def rolled_back(s):
        rep = next((r for r in fl.status_rows() if r["node"] == s.name), {})
        return rep if (rep.get("rollback") or {}).get("version") == 2 and \
            rep.get("state") == "online" and rep.get("applied_version") == 1 else None
    for s in (b, c):
        rep = wait_for(lambda: rolled_back(s), 40, f"{s.name} rollback reported")
        assert "broker not reachable within the 8s confirm window" in rep["rollback"]["reason"], rep
        assert rep["pending_version"] is None
        assert lab.status(s)["version"] == 1
    took = time.monotonic() - t0
    assert took < 8 + 25, took
    # a refused the document (its own key does not match) and kept v1.
    rows = {r["node"]: r for r in fl.status_rows()}
    assert rows[a.name]["applied_version"] == 1
    assert any("public_key" in x["reason"] for x in rows[a.name]["rejected"]), rows[a.name]
    assert lab.wait_ping(b, a) and lab.wait_ping(c, a), logs(lab)
    # A good document afterwards goes through everywhere.
    v = fl.publish()
    fl.wait_applied(v, timeout=30)


def test_broker_down_mesh_keeps_running_restart_uses_last_good(fleet_lab):
    lab, fl = fleet_lab(3)
    a, b, c = lab.sites
    fl.start_broker()
    start_all(lab)
    fl.wait_applied(1, timeout=30)
    v = fl.publish(settings={"keepalive": 20})
    fl.wait_applied(v, timeout=30)
    local = json.load(open(c.dir + "/network.json"))["version"]
    assert local < v
    fl.stop_broker()
    assert lab.wait_ping(a, c) and lab.wait_ping(b, c), logs(lab)
    wait_for(lambda: not lab.status(a)["fleet_state"]["connected"], 15, "a sees the broker gone")
    lab.stop(c)
    lab.start(c)                                  # restarted while the broker is down
    st = lab.status(c)
    assert st["version"] == v and st["fleet_state"]["connected"] is False, st
    assert lab.wait_ping(a, c, timeout=20) and lab.wait_ping(c, b, timeout=20), logs(lab)
    for _ in range(3):
        assert lab.ping(a, b)[0] and lab.ping(b, c)[0]
    fl.start_broker()                             # no operator action on the routers
    for s in lab.sites:
        wait_for(lambda: lab.status(s)["fleet_state"]["connected"], 60, f"{s.name} reconnected")
    rows = fl.wait_applied(v, timeout=30)
    assert all(rows[s.name]["state"] == "online" for s in lab.sites), rows
    v3 = fl.publish(settings={"keepalive": 25})   # and they follow the fleet again
    fl.wait_applied(v3, timeout=30)
    assert lab.status(c)["version"] == v3


def test_router_enrolled_over_serial_starts_with_no_document_and_joins(fleet_lab):
    # Issues 5 + 6 end to end, the technician's whole journey: a router with only its image
    # defaults is enrolled over its serial console (a real /bin/sh behind a pty, pyserial on
    # the host end); `lanmesh provision --fleet-dir` registers it and gives it a broker
    # account; the router boots with no network document at all, refuses the retained one
    # that does not list it yet, and joins the mesh from the next one the operator publishes.
    import signal
    from console_device import Device
    from lanmesh.atomic import write_atomic
    from lanmesh.operator import provision
    lab, fl = fleet_lab(2)
    fl.start_broker()
    start_all(lab)
    fl.wait_applied(1, timeout=30)
    c = lab.add_site()                  # namespaces and addresses; its lab key is thrown away
    os.unlink(os.path.join(c.dir, "private.key"))
    write_atomic(c.config_path, json.dumps({  # what a firmware image ships: no name, key, fleet
        "interface": c.ifname, "backend": c.backend, "document": "network.json",
        "state_dir": "state", "run_dir": "run"}))
    dev = Device(c.dir)
    try:
        out = []
        rc = provision.main(["--port", dev.host_port, "--name", c.name, "--lan", c.lan4,
                             "--lan", c.lan6, "--fleet", "lab", "--fleet-dir", fl.dir,
                             "--agent-cmd", dev.agent_cmd], out=out.append)
        assert rc == 0, "\n".join(out)
        private = open(os.path.join(c.dir, json.load(open(c.config_path))["private_key_file"])).read().strip()
        assert private.encode() not in bytes(dev.to_host) + bytes(dev.to_device)
    finally:
        dev.stop()
    out = "\n".join(out)
    reg = fl.fd.registry.node(c.name)
    assert reg is not None and reg["public_key"] == keys.pubkey(private), out
    assert "registry    added" in out and "broker      account site-c added" in out, out
    c.public_key = reg["public_key"]
    fl.members.append(c)
    fl.proc.send_signal(signal.SIGHUP)  # the broker reloads its passwd with c's account

    lab.start(c)                        # no document, no last good: it waits for the fleet
    st = lab.status(c)
    assert st["version"] is None and st["peers"] == [], st
    wait_for(lambda: (lab.status(c).get("fleet_state") or {}).get("connected"), 20, "c online")
    fl.cli("publish")                   # v2 lists c
    rows = fl.wait_applied(2, timeout=40, sites=lab.sites)
    assert rows[c.name]["state"] == "online", rows
    for dst in lab.sites[:2]:
        assert lab.wait_ping(c, dst, timeout=20), f"{c.name} -> {dst.name}\n{logs(lab)}"
        assert lab.wait_ping(dst, c, family=6, timeout=20), logs(lab)
    assert os.path.exists(os.path.join(c.dir, "state", "last-good.json"))
    assert "not in the document" in lab.daemon_log_full(c)   # v1 refused, v2 taken
