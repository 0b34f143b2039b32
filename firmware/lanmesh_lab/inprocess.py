# Whole daemons in one process, with fakes where the OS would be (issue 11): a recording
# backend instead of WireGuard, and mesh sockets that are real UDP sockets on loopback with
# a fake "tunnel" in between that a test or benchmark can cut. No root, no namespaces.
import json
import socket
import threading
import time

from lanmesh import aio
from lanmesh.adapters.udp import host_of
from lanmesh.config import parse_config
from lanmesh.daemon import Daemon
from lanmesh.keys import genkey, pubkey, write_private_key


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
        self.applied, self.threads, self.applied_at = [], set(), []

    def apply(self, state):
        self.threads.add(threading.current_thread().name)
        self.applied.append(state)
        self.applied_at.append(time.monotonic())
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
        await aio.sleep(0)              # each run() has begun (a stop before that is lost)
        try:
            await body(daemons, backends)
        finally:
            for d in daemons:
                d.request_stop()
            await aio.gather(*tasks, return_exceptions=True)
    aio.run(main())


def make_sites(tmp_path, n=3, probe_interval_ms=100):
    keys = [genkey() for _ in range(n)]
    names = [f"site-{c}" for c in "abcdefgh"[:n]]
    doc = {"fleet": "lab", "version": 1, "overlay": {"ipv4": "100.64.0.0/10", "ipv6": "fd00:6c6d::/64"},
           "settings": {"probe_interval_ms": probe_interval_ms},
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
