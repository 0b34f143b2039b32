# Issue 13: `fleet status` tells the truth, against a real mosquitto and a second broker
# (amqtt, from PyPI): links as the node itself reports them, a killed router `lost` and a
# silently cut one `stale` within 3 report intervals, a removed node gone, a broker that
# lost its retained document said so and healed by `fleet publish`. And the operator's
# set-up: `fleet node set` keeps the address, a LAN that covers the broker is refused, the
# generated mosquitto config starts as root without a warning and the routers connect.
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from lanmesh.adapters.udp import host_of
from lanmesh_lab.inprocess import Background
from mqtt_broker import free_port
from test_fleet_mqtt import FIRMWARE, generated_broker, lanmesh, publish_next
from test_fleet_mesh import wait_for
from test_fleet_mqtt import fleet  # noqa: F401 (the fixture)

NODE_PROC = r"""
import json, sys
from lanmesh.config import load_config
from lanmesh_lab.inprocess import Background
Background([load_config(sys.argv[1])]).thread.join()
"""


def _status(f, *extra):
    r = lanmesh("fleet", "status", "--dir", f.fd.path, "--wait", "0.3", *extra)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _rows(f):
    return {x["node"]: x for x in json.loads(_status(f, "--json"))}


def _until(pred, what, timeout=20.0):
    return wait_for(pred, timeout, what)


def _router_process(cfg):
    """A router of its own (kill -9 / SIGSTOP it as a power cut or a cut WAN would)."""
    return subprocess.Popen([sys.executable, "-c", NODE_PROC, cfg.path],
                            env=dict(os.environ, PYTHONPATH=FIRMWARE),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait()


EVERY = 2     # report interval (s) of the routers here


def test_fleet_status_on_mosquitto(fleet):
    f = fleet
    b = Background([f.cfg("hq", fleet={"report_interval": EVERY}),
                    f.cfg("branch", fleet={"report_interval": EVERY})])
    f.running.append(b)
    shop = _router_process(f.cfg("shop", keepalive=2, fleet={"report_interval": EVERY}))
    try:
        publish_next(f)
        # (shop runs in a process of its own, outside the in-process "tunnel": its links
        # stay down; hq and branch reach each other)
        _until(lambda: all(r["applied_version"] == 1 and r["links_up"] == 1
                           for n, r in _rows(f).items() if n in ("hq", "branch")),
               "hq and branch on v1 with their link up")
        # Links as the node reports them, also when they change: cut hq-branch.
        doc = b.daemons[0].document
        b.net.cut.add(frozenset(host_of(doc.node(n).ipv6) for n in ("hq", "branch")))
        row = _until(lambda: (_rows(f)["hq"]["links_up"] == 0) and _rows(f)["hq"], "hq: 0/2 up")
        own = b.daemons[0].status()["links"]
        assert row["links_total"] == len(own) == 2
        assert row["links_up"] == sum(x["up"] for x in own) == 0
        assert "0/2 up" in next(x for x in _status(f).splitlines() if x.startswith("hq "))
        b.net.cut.clear()
        _until(lambda: _rows(f)["hq"]["links_up"] == 1, "hq: 1/2 up again")

        # A killed router: `lost` (its will, 1.5 × keepalive) well within 3 intervals.
        _until(lambda: _rows(f)["shop"]["state"] == "online", "shop online")
        t0 = time.monotonic()
        shop.kill()
        shop.wait()
        _until(lambda: _rows(f)["shop"]["state"] == "lost", "shop lost", timeout=3 * EVERY + 1)
        print("killed router lost after %.1f s" % (time.monotonic() - t0))

        # A removed node disappears (its retained topics are purged at the next publish).
        r = lanmesh("fleet", "node", "remove", "shop", "--dir", f.fd.path)
        assert r.returncode == 0, r.stderr
        r = lanmesh("fleet", "publish", "--dir", f.fd.path)
        assert r.returncode == 0 and "cleared the retained state of removed nodes: shop" in r.stdout, \
            r.stdout + r.stderr
        assert "shop" not in _rows(f) and "shop" not in _status(f)

        # A broker restarted without its persistence: it holds no document; publish heals.
        _until(lambda: _rows(f)["hq"]["applied_version"] == 2, "hq on v2")
        f.broker.stop()
        for name in os.listdir(f.broker.dir):
            if name.endswith(".db"):
                os.unlink(os.path.join(f.broker.dir, name))
        f.broker.start()
        out = _until(lambda: "broker holds no document" in _status(f) and _status(f),
                     "the lost document reported")
        assert "Heal: lanmesh fleet publish" in out
        assert _rows(f)["hq"]["broker_version"] is None
        r = lanmesh("fleet", "publish", "--dir", f.fd.path)
        assert r.returncode == 0, r.stderr
        _until(lambda: "broker holds" not in _status(f), "healed")
        _until(lambda: _rows(f)["hq"]["applied_version"] == 3, "hq on v3 after the heal")
    finally:
        _stop(shop)


class Amqtt:
    """amqtt (asyncio MQTT 3.1.1 broker from PyPI) on loopback: anonymous, plain TCP, no
    persistence; it answers retained messages and last wills like mosquitto."""

    def __init__(self, directory):
        self.port = free_port()
        self.conf = os.path.join(directory, "amqtt.yaml")
        with open(self.conf, "w") as fh:
            fh.write("listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:%d\n"
                     "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
                     "    allow_anonymous: true\n" % self.port)
        self.log = open(os.path.join(directory, "amqtt.log"), "w")
        self.proc = None

    @property
    def url(self):
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self):
        exe = os.path.join(os.path.dirname(sys.executable), "amqtt")
        self.proc = subprocess.Popen([exe, "-c", self.conf], stdout=self.log, stderr=subprocess.STDOUT)
        import socket
        end = time.monotonic() + 15
        while time.monotonic() < end:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                assert self.proc.poll() is None, "amqtt exited"
                time.sleep(0.1)
        raise RuntimeError("amqtt did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.mark.skipif(not os.path.exists(os.path.join(os.path.dirname(sys.executable), "amqtt")),
                    reason="amqtt not installed (make test installs it)")
def test_fleet_status_on_amqtt_a_silently_cut_router_is_stale(fleet, tmp_path):
    f = fleet
    broker = Amqtt(str(tmp_path)).start()
    try:
        f.fd.registry.set("broker", broker.url)
        f.fd.registry.set("controller_broker", broker.url)
        f.fd.registry.set("ca_file", "")
        # keepalive 600: whatever the broker enforces, it will not notice within this test
        cfgs = [f.cfg(n, keepalive=600, fleet={"broker": broker.url, "ca_file": None,
                                               "report_interval": EVERY})
                for n in ("hq", "branch")]
        b = Background(cfgs[:1])            # hq here (its links compared with its own view)
        f.running.append(b)
        procs = [_router_process(cfgs[1])]  # branch in a process of its own, to SIGSTOP
        try:
            _until(lambda: all(_rows(f)[n]["state"] == "online" for n in ("hq", "branch")),
                   "both online on amqtt")
            r = lanmesh("fleet", "publish", "--dir", f.fd.path)
            assert r.returncode == 0, r.stdout + r.stderr
            _until(lambda: all(_rows(f)[n]["applied_version"] == 1 for n in ("hq", "branch")),
                   "v1 applied on amqtt")
            own = b.daemons[0].status()["links"]
            row = _until(lambda: _rows(f)["hq"]["links_total"] == len(own) and _rows(f)["hq"],
                         "hq's links in fleet status")
            assert row["links_up"] == sum(x["up"] for x in b.daemons[0].status()["links"])
            t0 = time.monotonic()
            procs[0].send_signal(signal.SIGSTOP)          # WAN silently cut: no FIN, no will
            _until(lambda: _rows(f)["branch"]["state"] == "stale", "branch stale",
                   timeout=3 * EVERY + 4)
            took = time.monotonic() - t0
            assert took <= 3 * EVERY + 3, took
            print("silent router stale after %.1f s (interval %d s)" % (took, EVERY))
            assert _rows(f)["hq"]["state"] == "online"
            assert "stale" in next(x for x in _status(f).splitlines() if x.startswith("branch"))
        finally:
            for p in procs:
                _stop(p)
    finally:
        broker.stop()


def test_node_set_keeps_the_address_and_a_lan_over_the_broker_is_refused(fleet):
    f = fleet
    before = f.fd.registry.node("branch")
    r = lanmesh("fleet", "node", "set", "branch", "--lan", "198.19.20.0/24", "--endpoint",
                "198.18.0.20:51820", "--relay", "--dir", f.fd.path)
    assert r.returncode == 0, r.stderr
    after = f.fd.registry.node("branch")
    assert after["address"] == before["address"] and after["lan"] == ["198.19.20.0/24"]
    assert after["endpoints"] == ["198.18.0.20:51820"] and after["relay"] is True
    # The broker is on 127.0.0.1: a LAN that covers it would route the fleet into the mesh.
    r = lanmesh("fleet", "node", "set", "branch", "--lan", "127.0.0.0/8", "--dir", f.fd.path)
    assert r.returncode != 0 and "contains the broker mqtts://127.0.0.1" in r.stderr, r.stderr
    assert "fleet config broker_site=branch" in r.stderr
    # ... unless the broker really sits on that site's LAN (the others reach it via the mesh)
    r = lanmesh("fleet", "config", "broker_site=branch", "--dir", f.fd.path)
    assert r.returncode == 0, r.stderr
    f.fd.registry.set_node("branch", lan=["127.0.0.0/8"])
    f.fd.registry.set("broker_site", "")
    f.fd.registry.set_node("branch", lan=after["lan"])
    r = lanmesh("fleet", "node", "add", "x", "--public-key", "A" * 43 + "=", "--lan",
                "198.18.0.0/24", "--dir", f.fd.path)
    assert r.returncode != 0 and "contains node 'hq''s endpoint 198.18.0.1:51820" in r.stderr, r.stderr
    assert f.fd.registry.node("branch") == after and f.fd.registry.node("x") is None


def test_generated_mosquitto_config_starts_as_root_without_warnings(fleet, tmp_path):
    """As root mosquitto drops to its own account: the generated files are its, the TLS
    files copied beside them; it starts without a warning and a router connects."""
    if os.geteuid() != 0:
        pytest.skip("the case is mosquitto started as root")
    # A directory the mosquitto account cannot reach is refused, with what to do instead.
    r = lanmesh("fleet", "broker-config", "--dir", fleet.fd.path, "--out", str(tmp_path / "gen"))
    assert r.returncode != 0 and "cannot reach" in r.stderr and "--out" in r.stderr, r.stderr
    with generated_broker(fleet, tmp_path) as (ctl, nodes, creds, output):
        cfg = fleet.cfg("hq", fleet={"broker": nodes["broker"], "ca_file": nodes["ca_file"],
                                     "password_file": str(creds / "hq.pass")})
        b = Background([cfg])
        fleet.running.append(b)
        hq = b.daemons[0]
        _until(lambda: hq.fleet is not None and hq.fleet.core.connected, "hq connected")
        time.sleep(3.5)                     # the own-topic check has run
        assert hq.status()["fleet_state"]["broker_error"] is None
        text = output()
        assert "Warning" not in text and "Error" not in text, text
        assert "runs as user mosquitto" in text, text
        assert os.stat(creds.parent / "passwd").st_uid != 0
        assert os.stat(creds / "hq.pass").st_uid == 0          # plaintext stays root's
