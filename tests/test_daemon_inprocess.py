# Whole daemons in one process, with fakes where the OS would be (issue 11): a recording
# backend instead of WireGuard, and mesh sockets that are real UDP sockets on loopback with
# a fake "tunnel" in between that the test can cut. No root, no namespaces. A link that
# fails makes the mesh reroute with exactly one backend update, and the data-plane work
# never runs on the loop (the backend sees the applier's thread).
import json
import os
import socket
import threading

from lanmesh import aio
from lanmesh.adapters.udp import host_of
from lanmesh.config import parse_config
from lanmesh.daemon import Daemon
from lanmesh.keys import genkey, pubkey, read_private_key, write_private_key


class FakeNet:
    def __init__(self):
        self.ports, self.names, self.cut = {}, {}, set()


class FakeMeshSocket:
    """What adapters.udp.MeshSocket offers, over loopback UDP; `cut` pairs drop."""

    def __init__(self, net, address, port, ifname):
        self.net, self.address, self.port, self.ifname = net, host_of(address), port, ifname
        self.send_errors = self.wrong_interface = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        net.ports[self.address] = self.sock.getsockname()[1]
        net.names[self.sock.getsockname()[1]] = self.address

    def fileno(self):
        return self.sock.fileno()

    def stale(self):
        return False

    def send(self, address, data):
        if frozenset((self.address, address)) not in self.net.cut and address in self.net.ports:
            self.sock.sendto(data, ("127.0.0.1", self.net.ports[address]))

    def receive(self):
        out = []
        while True:
            try:
                data, src = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return out
            if src[1] in self.net.names:
                out.append((self.net.names[src[1]], data))

    def close(self):
        self.sock.close()


class RecordingBackend:
    kind = "fake"

    def __init__(self):
        self.applied, self.threads = [], set()

    def apply(self, state):
        self.threads.add(threading.current_thread().name)
        self.applied.append(state)
        return []

    def peers(self):
        return {}

    def supervise(self):
        return False

    def close(self):
        pass


def running(cfgs, net, body):
    """Run the daemons of `cfgs` on one loop, await body(daemons, backends), stop them."""
    async def main():
        backends = [RecordingBackend() for _ in cfgs]
        daemons = [Daemon(c, backend=b, mesh_socket=lambda *a: FakeMeshSocket(net, *a))
                   for c, b in zip(cfgs, backends)]
        for d in daemons:
            d.start()
        tasks = [aio.create_task(d.run()) for d in daemons]
        try:
            await body(daemons, backends)
        finally:
            for d in daemons:
                d.request_stop()
            await aio.gather(*tasks, return_exceptions=True)
    aio.run(main())


def make_sites(tmp_path, n=3):
    keys = [genkey() for _ in range(n)]
    names = [f"site-{c}" for c in "abc"[:n]]
    doc = {"fleet": "lab", "version": 1, "overlay": {"ipv4": "100.64.0.0/10", "ipv6": "fd00:6c6d::/64"},
           "settings": {"probe_interval_ms": 100},
           "nodes": [{"name": names[i], "public_key": pubkey(keys[i]),
                      "address": [f"100.64.0.{i + 1}/32", f"fd00:6c6d::{i + 1}/128"],
                      "lan": [f"198.19.{i + 1}.0/24"], "endpoints": [f"198.18.{i + 1}.2:51820"],
                      "relay": True} for i in range(n)]}
    cfgs = []
    for i, name in enumerate(names):
        d = tmp_path / name
        d.mkdir()
        write_private_key(str(d / "private.key"), keys[i])
        (d / "network.json").write_text(json.dumps(doc))
        cfgs.append(parse_config({"name": name, "interface": f"lmt{i}", "private_key_file": "private.key",
                                  "document": "network.json", "state_dir": "state", "run_dir": "run"},
                                 str(d / "node.json")))
    return cfgs


async def until(cond, timeout):
    for _ in range(int(timeout / 0.05)):
        if cond():
            return True
        await aio.sleep(0.05)
    return cond()


def test_a_failed_link_reroutes_with_exactly_one_backend_update(tmp_path):
    net = FakeNet()
    cfgs = make_sites(tmp_path)

    def direct(d):
        st = d.status()
        return st["links"] and all(l["up"] for l in st["links"]) and \
            all(r["via"] == r["node"] for r in st["routes"])

    async def body(daemons, backends):
        assert await until(lambda: all(direct(d) for d in daemons), 10)
        a = daemons[0]
        await aio.sleep(0.5)
        before = len(backends[0].applied)
        net.cut.add(frozenset((host_of("fd00:6c6d::1/128"), host_of("fd00:6c6d::3/128"))))
        assert await until(lambda: {r["node"]: r["via"] for r in a.status()["routes"]}
                           .get("site-c") == "site-b", 5)
        await aio.sleep(0.5)              # both ends' adverts are in: nothing more moves
        new = backends[0].applied[before:]
        assert len(new) == 1, new
        peers = {p.public_key: p for p in new[0].peers.values()}
        via_b = peers[pubkey(read_private_key(cfgs[1].private_key_file))].allowed_ips
        assert "198.19.3.0/24" in via_b
        assert all(t == "lanmesh-applier" for b in backends for t in b.threads), backends[0].threads
    running(cfgs, net, body)


def test_fleet_document_is_applied_off_the_loop_and_confirmed(tmp_path):
    """Freshly enrolled routers (no document) with a real mosquitto: the retained v1 and then
    a published v2 are each applied (the backend records them, on the applier's thread) and
    confirmed by every router."""
    import sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from mqtt_broker import Broker
    from lanmesh.operator import brokerconf, controller

    fd = controller.FleetDir.init(str(tmp_path / "acme"), "acme", overlay6="fd00:6c6d::/64")
    fd.registry.set_settings({"confirm_window": 10, "probe_interval_ms": 100})
    names, keys = ["hq", "branch", "shop"], {}
    for i, n in enumerate(names):
        keys[n] = genkey()
        fd.registry.add_node(n, pubkey(keys[n]), [f"198.19.{i + 1}.0/24"], [f"198.18.{i + 1}.2:51820"],
                             relay=True)
    pws = {n: brokerconf.new_password() for n in names}
    broker = Broker(str(tmp_path / "broker"), dict(pws, controller=open(fd.password_path).read().strip()),
                    prefix="lanmesh/acme/").start()
    fd.registry.set("broker", broker.url)
    fd.registry.set("controller_broker", broker.controller_url)
    fd.registry.set("ca_file", broker.ca_file)
    cfgs = []
    for n in names:
        d = tmp_path / n
        d.mkdir()
        write_private_key(str(d / "private.key"), keys[n])
        (d / "mqtt.pass").write_text(pws[n])
        cfgs.append(parse_config({"name": n, "interface": f"lmf{len(cfgs)}", "private_key_file": "private.key",
                                  "state_dir": "state", "run_dir": "run", "fleet": {
                                      "name": "acme", "public_key": fd.public_key(), "broker": broker.url,
                                      "ca_file": broker.ca_file, "password_file": "mqtt.pass"}},
                                 str(d / "node.json")))
    net = FakeNet()

    def publish(**settings):
        # the operator's side, in a thread of its own (the registry is opened there)
        op = controller.FleetDir(fd.path)
        if settings:
            op.registry.set_settings(settings)
        doc, env, _, _ = controller.prepare(op)
        controller.publish(op, env, doc["version"], op.broker_options())
        op.registry.close()
        return doc["version"]

    def done(d, version):
        st = d.status()["fleet_state"]
        return bool(st) and st["applied_version"] == version and st["pending_version"] is None

    async def confirmed(daemons, version):
        return await until(lambda: all(done(d, version) for d in daemons), 20)

    async def body(daemons, backends):
        loop = aio.get_running_loop()
        v1 = await loop.run_in_executor(None, publish)
        assert await confirmed(daemons, v1), [d.status()["fleet_state"] for d in daemons]
        v2 = await loop.run_in_executor(None, lambda: publish(keepalive=17))
        assert await confirmed(daemons, v2), [d.status()["fleet_state"] for d in daemons]
        for b in backends:
            assert {p.keepalive for p in b.applied[-1].peers.values()} == {17}
            assert b.threads == {"lanmesh-applier"}

    try:
        running(cfgs, net, body)
    finally:
        broker.stop()
