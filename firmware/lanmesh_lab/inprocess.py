# Whole daemons in one process, with fakes where the OS would be (issue 11): a recording
# backend instead of WireGuard, and mesh sockets that are real UDP sockets on loopback with
# a fake "tunnel" in between that a test or benchmark can cut. No root, no namespaces.
import json
import os
import socket
import threading
import time

from lanmesh import aio
from lanmesh.adapters.udp import host_of
from lanmesh.config import load_config, parse_config
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


def _reader(cfg):
    """The config file, re-read as `lanmesh run` would on SIGHUP or a rekey; None when the
    config exists only in memory."""
    if cfg.path and os.path.exists(cfg.path):
        return lambda: load_config(cfg.path)
    return None


def running(cfgs, net, body, spy=None):
    """Run the daemons of `cfgs` on one loop, await body(daemons, backends), stop them.
    spy(i, daemon), if given, may instrument each daemon before it starts."""
    async def main():
        backends = [RecordingBackend() for _ in cfgs]
        daemons = [Daemon(c, backend=b, mesh_socket=lambda *a: FakeMeshSocket(net, *a),
                          load_config=_reader(c)) for c, b in zip(cfgs, backends)]
        for i, d in enumerate(daemons):
            if spy is not None:
                spy(i, d)
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


class Background:
    """The daemons of `cfgs` on one loop in a thread, for tests whose body is synchronous
    (a broker, the CLI in a subprocess, polling). applied[i]: the document versions daemon
    i applied, in order; before_apply(i, doc) runs on the loop just before each apply."""

    def __init__(self, cfgs, net=None, before_apply=None):
        self.net = net or FakeNet()
        self.before_apply = before_apply
        self.daemons = self.backends = None
        self.applied = [[] for _ in cfgs]
        self.error = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, args=(cfgs,), daemon=True)
        self.thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("in-process daemons did not start")
        if self.error:
            raise self.error

    def _spy(self, i, d):
        apply = d.apply_document

        async def recorded(doc):
            if self.before_apply:
                self.before_apply(i, doc)
            await apply(doc)
            self.applied[i].append(doc.version)
        d.apply_document = recorded

    def _main(self, cfgs):
        async def body(daemons, backends):
            self.daemons, self.backends = daemons, backends
            self._ready.set()
            while not self._stop.is_set():
                await aio.sleep(0.05)
        try:
            running(cfgs, self.net, body, spy=self._spy)
        except BaseException as e:  # surfaced by stop()
            self.error = e
            self._ready.set()

    def alive(self):
        return self.thread.is_alive()

    def stop(self):
        self._stop.set()
        self.thread.join(15)
        if self.thread.is_alive():
            raise TimeoutError("in-process daemons did not stop")
        if self.error:
            raise self.error


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
