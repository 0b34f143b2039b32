# Fleet control against a real mosquitto on loopback (TLS with a throwaway CA, password
# file, ACL with pattern rules), whole daemons in-process (lanmesh_lab.inprocess: a
# recording backend instead of WireGuard, loopback mesh sockets that a test can cut) with
# their real fleet agents, and the `lanmesh fleet` CLI as an operator runs it.
import contextlib
import json
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from lanmesh import keys, netdoc
from lanmesh.adapters.udp import host_of
from lanmesh.config import parse_config
from lanmesh.fleet import agent as agent_mod
from lanmesh.fleet import signing, topics
from lanmesh.operator import brokerconf, controller
from lanmesh_lab.inprocess import Background
from mqtt_broker import Broker, make_ca

FIRMWARE = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "firmware"))
PREFIX = "lanmesh/acme/"
NODES = ("hq", "branch", "shop")
log = logging.getLogger("test-fleet")


def sites(fleet, *names, **kw):
    """Whole daemons for `names` (in-process: a recording backend and loopback mesh
    sockets), their fleet agents talking to the real broker; stopped by the fixture."""
    b = Background([fleet.cfg(n) for n in names], **kw)
    fleet.running.append(b)
    return b


@pytest.fixture
def fleet(tmp_path):
    """A fleet directory with three nodes, a broker for it, node configs; all torn down."""
    fd = controller.FleetDir.init(str(tmp_path / "acme"), "acme", overlay6="fd00:6c6d::/64")
    fd.registry.set_settings({"confirm_window": 5})
    privs = {}
    for i, n in enumerate(NODES):
        privs[n] = keys.genkey()
        fd.registry.add_node(n, keys.pubkey(privs[n]), [f"198.19.{i + 1}.0/24"],
                             [f"198.18.0.{i + 1}:51820"])
    passwords = {n: brokerconf.new_password() for n in NODES}
    ctl = open(fd.password_path).read().strip()
    broker = Broker(str(tmp_path / "broker"), dict(passwords, controller=ctl), prefix=PREFIX)
    broker.start()
    fd.registry.set("broker", broker.url)
    fd.registry.set("controller_broker", broker.controller_url)
    fd.registry.set("ca_file", broker.ca_file)

    class F:
        pass
    f = F()
    f.fd, f.broker, f.passwords, f.tmp = fd, broker, passwords, tmp_path
    f.opts = fd.broker_options()
    f.cfg = lambda name, **kw: node_cfg(tmp_path, name, fd, broker, passwords[name], privs[name], **kw)
    f.running = []
    try:
        yield f
    finally:
        for b in f.running:
            b.stop()
        broker.stop()


def node_cfg(tmp, name, fd, broker, password, private_key, keepalive=30, fleet=None):
    d = tmp / name
    if not d.exists():
        d.mkdir()
        (d / "mqtt.pass").write_text(password + "\n")
        keys.write_private_key(str(d / "private.key"), private_key)
    raw = {"name": name, "interface": "lmf-" + name, "private_key_file": "private.key",
           "document": "network.json", "state_dir": "state", "run_dir": "run",
           "fleet": {"name": "acme", "public_key": fd.public_key(), "broker": broker.url,
                     "ca_file": broker.ca_file, "username": name, "password_file": "mqtt.pass",
                     "keepalive": keepalive, **(fleet or {})}}
    (d / "node.json").write_text(json.dumps(raw))   # for `lanmesh status --config`
    return parse_config(raw, str(d / "node.json"))


class Watcher(controller.BrokerSession):
    """The controller's view: every retained and live message under the fleet prefix."""

    def __init__(self, f):
        super().__init__(f.opts)
        self.__enter__()
        self.client.subscribe(PREFIX + "#", 1)

    def reported(self, name):
        raw = self.messages.get(topics.reported(PREFIX, name))
        return json.loads(raw) if raw else {}

    def wait(self, pred, timeout=15.0, what="condition"):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = pred()
            if got:
                return got
            self.changed.clear()
            self.changed.wait(0.1)
        raise AssertionError(f"timed out waiting for {what}; messages: "
                             f"{ {k: v[:300] for k, v in self.messages.items()} }")


def lanmesh(*args, timeout=60):
    env = dict(os.environ, PYTHONPATH=FIRMWARE)
    return subprocess.run([sys.executable, "-m", "lanmesh.cli", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def publish_next(f):
    doc, env, _, _ = controller.prepare(f.fd)
    controller.publish(f.fd, env, doc["version"], f.opts)
    return doc


def signed(doc, key=None, fd=None):
    return signing.envelope_bytes(signing.sign(doc, key or signing.read_key(fd.key_path)))


def test_publish_apply_confirm_last_good_and_status(fleet):
    w = Watcher(fleet)
    cfg = fleet.cfg("hq")
    b = sites(fleet, "hq", "branch")
    hq = b.daemons[0]
    w.wait(lambda: w.messages.get(topics.state(PREFIX, "hq")) == b"online", what="hq online")
    assert hq.document is None                      # provisioned, waiting for the fleet's

    r = lanmesh("fleet", "publish", "--dir", fleet.fd.path)
    assert r.returncode == 0, r.stderr
    assert "v- -> v1" in r.stdout and "+ node hq" in r.stdout and "published v1" in r.stdout
    w.wait(lambda: w.reported("hq").get("applied_version") == 1, what="v1 applied")
    assert b.applied[0] == [1] and hq.document.version == 1
    assert set(b.backends[0].applied[-1].peers) == {
        fleet.fd.registry.node("branch")["public_key"], fleet.fd.registry.node("shop")["public_key"]}
    assert agent_mod.load_last_good(cfg).version == 1
    assert os.stat(cfg.last_good_document).st_mode & 0o777 == 0o600

    fleet.fd.registry.remove_node("shop")           # revocation
    t0 = time.monotonic()
    r = lanmesh("fleet", "publish", "--dir", fleet.fd.path)
    assert r.returncode == 0 and "- node shop (revoked" in r.stdout, r.stdout + r.stderr
    rep = w.wait(lambda: w.reported("hq").get("applied_version") == 2 and w.reported("hq"),
                 what="v2 applied")
    log.info("publish→confirmed v2 in %.2fs", time.monotonic() - t0)
    assert "shop" not in hq.document.nodes and b.applied[0] == [1, 2]
    assert rep["rollback"] is None and rep["software"]
    rep = w.wait(lambda: w.reported("hq").get("links_up") == [1, 1] and w.reported("hq"),
                 what="hq's report: its one link up")
    assert [x["peer"] for x in rep["links"] if x["up"]] == ["branch"]
    assert {x["node"] for x in rep["routes"]} == {"branch"}
    good = agent_mod.load_last_good(cfg)
    assert good.version == 2

    r = lanmesh("fleet", "status", "--dir", fleet.fd.path, "--json")
    assert r.returncode == 0, r.stderr
    rows = {x["node"]: x for x in json.loads(r.stdout)}
    assert rows["hq"]["state"] == "online" and rows["hq"]["applied_version"] == 2
    assert rows["branch"]["state"] == "online" and "shop" not in rows
    r = lanmesh("fleet", "status", "--dir", fleet.fd.path)
    assert "hq" in r.stdout and "online" in r.stdout and "1/1 up" in r.stdout

    dry = lanmesh("fleet", "publish", "--dir", fleet.fd.path, "--dry-run")
    assert dry.returncode == 0 and "v2 -> v3" in dry.stdout and "dry run" in dry.stdout
    assert fleet.fd.registry.last_published()[0] == 2
    w.close()


def test_bad_documents_rejected_with_reason_nothing_applied(fleet):
    w = Watcher(fleet)
    b = sites(fleet, "hq")
    hq = b.daemons[0]
    publish_next(fleet)
    v2 = publish_next(fleet)
    w.wait(lambda: w.reported("hq").get("applied_version") == 2, what="v2 applied")
    assert b.applied[0][-1] == 2
    before = list(b.applied[0])
    net = topics.net(PREFIX)

    def reject(payload, reason):
        w.publish(net, payload, retain=True)
        w.wait(lambda: any(reason in x["reason"] for x in w.reported("hq").get("rejected", [])),
               what=f"rejection {reason!r}")
        assert b.applied[0] == before and hq.document.version == 2

    tampered = json.loads(signed(dict(v2, version=3), fd=fleet.fd))
    tampered["doc"]["nodes"][0]["endpoints"] = ["198.18.9.9:51820"]
    reject(json.dumps(tampered).encode(), "signature does not verify with the fleet key")
    reject(b'{"doc": {"fleet": "acme", "version": 9', "payload: not valid JSON")
    reject(signed(dict(v2, version=3), key=signing.generate_key()),
           "signature does not verify with the fleet key")
    reject(signed(dict(v2, version=1, settings={"confirm_window": 6}), fd=fleet.fd),
           "version 1 is not newer than the applied version 2")
    reject(signed(dict(v2, settings={"confirm_window": 7}), fd=fleet.fd),
           "version 2 is not newer than the applied version 2")
    reject(signed(dict(v2, fleet="other", version=9), fd=fleet.fd),
           "document is for fleet 'other', this node is in fleet 'acme'")
    reject(b" " * (netdoc.MAX_DOC_BYTES + 1), "over the 1048576-byte limit")
    bad = dict(v2, version=10, nodes=[dict(v2["nodes"][0], lan=["198.19.300.0/24"])] + v2["nodes"][1:])
    reject(signed(bad, fd=fleet.fd), "nodes[0].lan[0]: '198.19.300.0/24' is not an IP prefix")
    # And a good one still goes through afterwards.
    publish_next(fleet)
    w.wait(lambda: w.reported("hq").get("applied_version") == 3, what="v3 applied")
    w.close()


def test_broker_unreachable_after_apply_rolls_back(fleet):
    w = Watcher(fleet)
    cfg = fleet.cfg("hq")

    def cut_broker(i, doc):      # the new configuration "cuts" the node off the broker
        if doc.version == 2:
            fleet.broker.stop()
    b = sites(fleet, "hq", before_apply=cut_broker)
    publish_next(fleet)
    w.wait(lambda: w.reported("hq").get("applied_version") == 1, what="v1 applied")
    w.close()
    doc, env, _, _ = controller.prepare(fleet.fd)
    with controller.BrokerSession(fleet.opts) as s:
        s.publish(topics.net(PREFIX), env, retain=True)
    t0 = time.monotonic()
    while b.applied[0][-1:] != [1] or len(b.applied[0]) < 3:
        assert time.monotonic() - t0 < 15, b.applied
        time.sleep(0.1)
    waited = time.monotonic() - t0
    assert b.applied[0] == [1, 2, 1] and 5 <= waited < 12, (b.applied, waited)
    assert b.daemons[0].document.version == 1
    assert agent_mod.load_last_good(cfg).version == 1
    fleet.broker.start()         # the broker comes back: the node reports what happened
    w = Watcher(fleet)
    rep = w.wait(lambda: (w.reported("hq").get("rollback") or {}).get("version") == 2
                 and w.reported("hq"), what="rollback reported")
    assert "broker not reachable within the 5s confirm window" in rep["rollback"]["reason"]
    assert rep["applied_version"] == 1 and rep["pending_version"] is None
    time.sleep(1.0)              # the retained v2 came again on reconnect: not re-applied
    assert b.applied[0] == [1, 2, 1]
    w.close()


def test_all_links_lost_after_apply_rolls_back(fleet):
    """v2 cuts hq off the mesh (here: the loopback "tunnel" between the sites is cut as v2
    is applied): hq's own mesh links go down, and it rolls back by itself."""
    w = Watcher(fleet)
    cut = []

    def cut_links(i, doc):
        if i == 0 and doc.version == 2:   # the mesh runs between overlay IPv6 addresses
            cut.append(frozenset(host_of(doc.node(n).ipv6) for n in ("hq", "branch")))
            b.net.cut.add(cut[0])
    b = sites(fleet, "hq", "branch", before_apply=cut_links)
    publish_next(fleet)
    w.wait(lambda: w.reported("hq").get("applied_version") == 1
           and w.reported("hq").get("links_up") == [1, 2], what="v1 applied, branch's link up")
    publish_next(fleet)
    rep = w.wait(lambda: w.reported("hq").get("rollback") and w.reported("hq"), timeout=12,
                 what="rollback reported")
    assert cut and cut[0] in b.net.cut
    assert "mesh links lost after the apply" in rep["rollback"]["reason"], rep
    assert b.applied[0] == [1, 2, 1] and rep["applied_version"] == 1
    w.close()


def free_port_is_taken(port):
    import socket
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return False
        except OSError:
            return True


@contextlib.contextmanager
def generated_broker(fleet, tmp_path, out=None):
    """mosquitto running the `fleet broker-config` output, started as root exactly as the
    output says → (controller opts, node opts without a user, credentials dir, output of
    `broker-config` and of mosquitto)."""
    shared = None
    if out is None:             # as root, the mosquitto account must reach it: not tmp_path
        shared = tempfile.mkdtemp(prefix="lanmesh-gen-", dir="/tmp")
        os.chmod(shared, 0o755)
        out = pathlib.Path(shared) / "gen"
    tls = make_ca(str(tmp_path), ("127.0.0.1",))
    from mqtt_broker import free_port
    port = free_port()
    while port >= 65535 or free_port_is_taken(port + 1):
        port = free_port()          # the controller listens on the port after it
    r = lanmesh("fleet", "broker-config", "--dir", fleet.fd.path, "--out", str(out),
                "--listen", "127.0.0.1", "--port", str(port), "--cert", tls["server.pem"],
                "--key", tls["server.key"], "--ca", tls["ca.pem"])
    assert r.returncode == 0, r.stderr
    log = open(tmp_path / "mosquitto.out", "w+")
    proc = subprocess.Popen(["mosquitto", "-c", str(out / "mosquitto.conf")],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(0.5)
        assert proc.poll() is None, (tmp_path / "mosquitto.out").read_text()
        ctl = dict(fleet.opts, broker=f"mqtts://127.0.0.1:{port + 1}", ca_file=tls["ca.pem"])
        yield (ctl, dict(ctl, broker=f"mqtts://127.0.0.1:{port}"), out / "credentials",
               lambda: r.stdout + (tmp_path / "mosquitto.out").read_text())
    finally:
        proc.terminate()
        proc.wait(5)
        log.close()
        if shared:
            shutil.rmtree(shared, ignore_errors=True)


def test_acl_from_generated_broker_config(fleet, tmp_path):
    """`fleet broker-config` output, run by mosquitto: a node writes only its own subtree."""
    with generated_broker(fleet, tmp_path) as (ctl, nodes, creds, _):
        hq = dict(nodes, username="hq", password_file=str(creds / "hq.pass"))
        with controller.BrokerSession(ctl) as spy, controller.BrokerSession(hq) as node:
            spy.client.subscribe(PREFIX + "#", 1)
            time.sleep(0.3)
            node.publish(PREFIX + "node/branch/state", b"forged", retain=True)
            node.publish(PREFIX + "node/branch/reported", b"{}", retain=True)
            node.publish(PREFIX + "net", b"forged doc", retain=True)
            node.publish(PREFIX + "node/hq/state", b"online", retain=True)   # its own: allowed
            spy.changed.wait(3)
            time.sleep(0.5)
            assert spy.messages == {PREFIX + "node/hq/state": b"online"}
        bad = dict(hq, password_file=str(creds / "branch.pass"))
        with pytest.raises(Exception, match="refused"):
            with controller.BrokerSession(bad):
                pass


def test_another_nodes_client_id_cannot_kick_it_off(fleet, tmp_path):
    """The finding: hq connecting with its own credentials but branch's client id kicked
    branch off and published branch's retained `lost` will. The generated config ties the
    client id to the username, so branch stays on and no will fires."""
    from lanmesh.operator.paho_client import make_client
    with generated_broker(fleet, tmp_path) as (ctl, nodes, creds, _):
        def client(user, client_id, will=None):
            pw = open(creds / f"{user}.pass").read().strip()
            c = make_client(nodes["broker"], client_id, ca_file=ctl["ca_file"], username=user,
                            password=pw, will=will)
            c.connected = threading.Event()
            c.on_connect = lambda *a: c.connected.set()
            c.on_disconnect = lambda *a: c.connected.clear()
            c.connect(*c._lanmesh_addr, keepalive=30)
            c.loop_start()
            assert c.connected.wait(5), user
            return c
        with controller.BrokerSession(ctl) as spy:
            spy.client.subscribe(PREFIX + "node/+/state", 1)
            victim = client("branch", "lanmesh-branch", will=(PREFIX + "node/branch/state", "lost"))
            victim.publish(PREFIX + "node/branch/state", "online", qos=1, retain=True).wait_for_publish(5)
            time.sleep(0.3)
            thief = client("hq", "lanmesh-branch")
            time.sleep(1.5)
            try:
                assert victim.connected.is_set(), "branch was kicked off by hq's connection"
                assert spy.messages.get(PREFIX + "node/branch/state") == b"online"
            finally:
                for c in (thief, victim):
                    c.disconnect()
                    c.loop_stop()


NODE_PROC = r"""
import json, sys
from lanmesh.config import parse_config
from lanmesh_lab.inprocess import Background
a = json.loads(sys.argv[1])
Background([parse_config(a["cfg"], a["path"])]).thread.join()
"""


def test_last_will_sigkill_shows_lost_in_status(fleet):
    cfg = fleet.cfg("branch", keepalive=2)
    w = Watcher(fleet)
    env = dict(os.environ, PYTHONPATH=FIRMWARE)
    proc = subprocess.Popen([sys.executable, "-c", NODE_PROC, json.dumps(
        {"cfg": cfg.raw, "path": cfg.path})],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        w.wait(lambda: w.messages.get(topics.state(PREFIX, "branch")) == b"online",
               what="branch online")
        rows = {r["node"]: r for r in controller.collect_status(fleet.fd, fleet.opts)}
        assert rows["branch"]["state"] == "online"
        os.kill(proc.pid, signal.SIGKILL)
        t0 = time.monotonic()
        proc.wait(5)
        w.wait(lambda: w.messages.get(topics.state(PREFIX, "branch")) == b"lost", timeout=10,
               what="branch lost")
        took = time.monotonic() - t0
        assert took <= 1.5 * 2 + 1.0, took      # mosquitto: 1.5 × keepalive
        r = lanmesh("fleet", "status", "--dir", fleet.fd.path)
        line = next(x for x in r.stdout.splitlines() if x.startswith("branch"))
        assert " lost " in line, r.stdout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        w.close()


def test_missing_password_file_disables_fleet_but_not_the_node(fleet, caplog):
    cfg = fleet.cfg("hq")
    os.unlink(cfg.fleet["password_file"])
    with caplog.at_level(logging.ERROR):
        b = sites(fleet, "hq")
        time.sleep(0.5)
    assert "fleet: disabled" in caplog.text and "cannot read password file" in caplog.text
    assert b.alive() and b.daemons[0].status()["fleet_state"]["connected"] is False


def test_wrong_password_is_retried_without_crashing(fleet):
    cfg = fleet.cfg("hq")
    with open(cfg.fleet["password_file"], "w") as fh:
        fh.write("wrong\n")
    b = sites(fleet, "hq")
    time.sleep(1.5)
    fs = b.daemons[0].status()["fleet_state"]
    assert b.alive() and fs["connected"] is False and "not authorized" in fs["broker_error"], fs
