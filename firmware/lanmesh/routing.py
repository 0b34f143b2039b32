# Runs the pure mesh core (mesh/node.py) on the daemon's loop: datagrams from the mesh socket
# become MessageReceived facts, the core's deadlines drive tick(), and its effects go out as
# datagrams (SendMessage) or as new next hops for the data plane (RoutesChanged).
import logging

from . import aio
from .adapters.udp import MeshSocket, host_of
from .mesh.node import DocumentChanged, LinkChanged, MeshNode, MessageReceived, RoutesChanged, SendMessage
from .ticks import ticks_diff, ticks_ms

log = logging.getLogger("lanmesh.mesh")
IDLE_WAIT_MS = 1000


class MeshRouting:
    def __init__(self, daemon):
        self.daemon = daemon
        doc = daemon.document
        self.core = MeshNode(daemon.cfg.name, list(doc.nodes.values()), doc.settings)
        self.sock = None
        self.by_address = {}
        self.addresses = {}
        self.unknown_source = 0
        self._bind(doc)

    def _bind(self, doc):
        me = doc.node(self.daemon.cfg.name)
        port = doc.settings["mesh_port"]
        self.addresses = {n.name: host_of(n.ipv6) for n in doc.nodes.values()}
        self.by_address = {a: name for name, a in self.addresses.items()}
        if self.sock is not None and (self.sock.address, self.sock.port) == (host_of(me.ipv6), port):
            return
        if self.sock is not None:
            self.sock.close()
        self.sock = MeshSocket(me.ipv6, port)

    def document_changed(self, doc):
        self._bind(doc)
        self._effects(self.core.handle(DocumentChanged(list(doc.nodes.values()), doc.settings), ticks_ms()))

    def links_up(self):
        links = self.core.status()["links"]
        return sum(1 for l in links.values() if l["up"]), len(links)

    def status(self):
        st = self.core.status()
        links = [{"peer": p, "up": l["up"], "rtt_ms": l["rtt_ms"], "loss": l["loss_pct"] / 100,
                  "cost": l["cost"], "flaps": l["flaps"]} for p, l in sorted(st["links"].items())]
        counters = dict(st["counters"], unknown_source=self.unknown_source,
                        send_errors=self.sock.send_errors if self.sock else 0)
        return {"links": links, "next_hops": st["next_hops"], "counters": counters}

    def _effects(self, effects):
        for e in effects:
            if isinstance(e, SendMessage):
                addr = self.addresses.get(e.peer)
                if addr is not None:
                    self.sock.send(addr, e.data)
            elif isinstance(e, RoutesChanged):
                hops = e.plan.next_hops
                log.info("routes: %s", ", ".join(
                    f"{d}→{v or 'unreachable'}" for d, v in sorted(hops.items())))
                self.daemon.set_next_hops(dict(hops))
            elif isinstance(e, LinkChanged):
                log.info("link %s %s (rtt %s ms, cost %s)", e.peer, "up" if e.up else "DOWN",
                         e.rtt_ms, e.cost)

    async def run(self, stopped):
        while not stopped.is_set():
            now = ticks_ms()
            deadline = self.core.next_deadline()
            if deadline is None or ticks_diff(deadline, now) <= 0:
                self._effects(self.core.tick(now))
                deadline = self.core.next_deadline()
            wait = IDLE_WAIT_MS if deadline is None else max(0, ticks_diff(deadline, ticks_ms()))
            if wait > 0:
                try:
                    await aio.wait_for_ms(aio.wait_readable(self.sock), wait)
                except aio.TimeoutError:
                    pass
            for src, data in self.sock.receive():
                peer = self.by_address.get(src)
                if peer is None:
                    self.unknown_source += 1
                    continue
                self._effects(self.core.handle(MessageReceived(peer, data), ticks_ms()))

    def close(self):
        if self.sock is not None:
            self.sock.close()
