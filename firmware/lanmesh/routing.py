# Runs the pure mesh core (mesh/node.py) on the daemon's loop: datagrams from the mesh socket
# (inside the tunnel) and the path socket (link probes between underlay addresses, outside
# it) become MessageReceived facts, the core's deadlines drive tick(), and its effects go out
# as datagrams (SendMessage), as new routes for the data plane (RoutesChanged), as what this
# node forwards as a blind relay (RelayMaps), and as peers' underlay addresses (PeerAddress).
# A sampler reads WireGuard's per-peer counters (one dump) and the echo socket's replies every
# core.sample_ms(): that is how links that carry traffic are watched (mesh/liveness.py).
from .log import getLogger

from . import aio
from .adapters.echo import EchoSocket
from .adapters.udp import MeshSocket, PathSocket, host_of
from .advert_keys import AdvertKeys
from .errors import LanmeshError
from .mesh import wire
from .mesh.node import (DocumentChanged, LinkChanged, MeshNode, MessageReceived, PeerAddress,
                        RelayMaps, RoutesChanged, Sample, SendEcho, SendMessage)
from .ticks import ticks_add, ticks_diff, ticks_ms

log = getLogger("lanmesh.mesh")
IDLE_WAIT_MS = 1000


class MeshRouting:
    def __init__(self, daemon):
        self.daemon = daemon
        doc = daemon.document
        self.keys = AdvertKeys(daemon.private_key)
        self.core = MeshNode(daemon.cfg.name, list(doc.nodes.values()), doc.settings, keys=self.keys)
        self.sock = None
        self.path = None               # the path socket (None in-process: probes go in-tunnel)
        self._path_watch = None
        self.on_relays = None          # maps -> None: what this node forwards as a relay
        self.on_address = None         # (peer, (ip, port)) -> None: a peer's underlay address
        self.by_address = {}
        self.addresses = {}
        self.unknown_source = 0
        self._wrong_interface_before = 0   # counted by sockets since replaced
        self.wakeups = 0               # reader and timer callbacks run (idle CPU is mostly these)
        self.wakeups_by = {"mesh": 0, "path": 0, "timer": 0, "sample": 0}
        self._watching = None          # the reader registration of self.sock, while running
        self._timer = None             # the core's deadline timer, while running
        self._armed = None             # the deadline it is armed for
        self.late_max_ms = 0           # the loop's own lateness: how late the timer fired
        self.on_links = None           # (up, total) -> None: told whenever a link changes
        self.on_routes = None          # plan -> None: told when the core's routes change
        self.echo = None               # the echo socket (None in-process, or without CAP_NET_RAW)
        self.names = {}                # WireGuard public key -> node name
        self._sampler = None
        self.samples = 0
        self.sample_ms_total = 0.0     # time spent reading counters and echo replies
        self._bind(doc)

    def socket_for(self, doc):
        """The mesh socket `doc` needs: the current one if it fits, else a new one bound now
        (so a document whose port cannot be bound is refused before anything changes).
        Raises LanmeshError."""
        me = doc.node(self.daemon.cfg.name)
        port = doc.settings["mesh_port"]
        s = self.sock
        if s is not None and (s.address, s.port) == (host_of(me.ipv6), port) and not s.stale():
            return s
        try:
            return (self.daemon.mesh_socket or MeshSocket)(me.ipv6, port, self.daemon.cfg.interface)
        except OSError as e:
            raise LanmeshError(f"mesh socket [{host_of(me.ipv6)}]:{port} on "
                               f"{self.daemon.cfg.interface}: {e.strerror or e}") from None

    def _bind_path(self, doc):
        """The path socket on the document's path_port (real daemons only)."""
        if self.daemon.mesh_socket is not None:
            return
        port = doc.settings["path_port"]
        if self.path is not None and self.path.port == port:
            return
        try:
            new = PathSocket(port)
        except OSError as e:
            log.error("path probes: cannot bind UDP port %d (%s); links are probed inside the "
                      "tunnel until it can", port, e.strerror or e)
            return
        if self._path_watch is not None:
            self._path_watch.close()
            self._path_watch = aio.on_readable(new, self._path_readable)
        if self.path is not None:
            self.path.close()
        if self.echo is not None:
            self.echo.close()
        self.path = new

    def _bind_echo(self, doc):
        """A new echo socket with every new mesh socket: bound like it to our overlay address
        and the tunnel device, whose recreation (wireguard-go restarted) strands both. Real
        daemons only; without it, links are watched by probes alone."""
        if self.daemon.mesh_socket is not None:
            return
        me = host_of(doc.node(self.daemon.cfg.name).ipv6)
        try:
            new = EchoSocket(me, self.daemon.cfg.interface)
        except OSError as e:
            log.warning("link echoes: cannot open an ICMPv6 socket (%s); every link is probed "
                        "instead", e.strerror or e)
            new = None
        if self.echo is not None:
            self.echo.close()
        self.echo = new

    def _bind(self, doc, sock=None):
        self._bind_path(doc)
        self.names = {n.public_key: n.name for n in doc.nodes.values()}
        self.addresses = {n.name: host_of(n.ipv6) for n in doc.nodes.values()}
        self.by_address = {a: name for name, a in self.addresses.items()}
        sock = sock or self.socket_for(doc)
        if sock is self.sock:
            return
        watching = self._watching is not None
        if watching:
            self._unwatch()
        old, self.sock = self.sock, sock
        if old is not None:
            self._wrong_interface_before += old.wrong_interface
            old.close()
        if watching:
            self._watching = aio.on_readable(self.sock, self._readable)
        self._bind_echo(doc)

    def check_device(self):
        """The tunnel device was recreated (wireguard-go restarted): the socket, bound to the
        old device, would hear nothing. Rebind; a failure is retried on the next check."""
        if self.sock is not None and self.sock.stale():
            try:
                self._bind(self.daemon.document)
                log.info("mesh socket rebound to the new %s", self.daemon.cfg.interface)
            except LanmeshError as e:
                log.warning("%s", e)

    def document_changed(self, doc, sock=None):
        """sock: from socket_for(doc), already bound (the daemon's all-or-nothing apply)."""
        self._bind(doc, sock)
        self._effects(self.core.handle(DocumentChanged(list(doc.nodes.values()), doc.settings), ticks_ms()))
        self._schedule()

    def links_up(self):
        links = self.core.status()["links"]
        return sum(1 for l in links.values() if l["up"]), len(links)

    def status(self):
        st = self.core.status()
        links = [{"peer": p, "up": l["up"], "rtt_ms": l["rtt_ms"], "loss": l["loss_pct"] / 100,
                  "cost": l["cost"], "flaps": l["flaps"], "watch": l["watch"]}
                 for p, l in sorted(st["links"].items())]
        echo = self.echo.counts() if self.echo is not None else {}
        counters = dict(st["counters"], unknown_source=self.unknown_source, wakeups=self.wakeups,
                        **{"wakeups_" + k: v for k, v in self.wakeups_by.items()},
                        send_errors=self.sock.send_errors if self.sock else 0,
                        wrong_interface=self._wrong_interface_before +
                        (self.sock.wrong_interface if self.sock else 0),
                        adverts_signed=self.keys.signed, adverts_verified=self.keys.verified,
                        loop_late_max_ms=self.late_max_ms, samples=self.samples,
                        sample_ms_total=round(self.sample_ms_total, 1),
                        **{"echo_" + k: v for k, v in echo.items()})
        return {"links": links, "next_hops": st["next_hops"], "counters": counters,
                "lsdb": st["lsdb"], "relayed": st["relayed"], "relay": st["relay"]}

    def _effects(self, effects):
        for e in effects:
            if isinstance(e, SendMessage):
                if self.path is not None and e.data[2] in (wire.PROBE, wire.ACK):
                    to = e.to or self.daemon.underlay(e.peer, "path_port")
                    if to is not None:
                        self.path.send(to, e.data)
                    continue
                addr = self.addresses.get(e.peer)
                if addr is not None:
                    self.sock.send(addr, e.data)
            elif isinstance(e, SendEcho):
                addr = self.addresses.get(e.peer)
                if self.echo is not None and addr is not None:
                    self.echo.send(addr, e.seq)
            elif isinstance(e, RelayMaps):
                log.info("relay: forwarding %d session directions", len(e.maps))
                if self.on_relays is not None:
                    self.on_relays(e.maps)
            elif isinstance(e, PeerAddress):
                if self.on_address is not None:
                    self.on_address(e.peer, e.addr)
            elif isinstance(e, RoutesChanged):
                hops = e.plan.next_hops
                log.info("routes: %s", ", ".join(
                    f"{d}→{v or 'unreachable'}" for d, v in sorted(hops.items())))
                if self.on_routes is not None:
                    self.on_routes(e.plan)
            elif isinstance(e, LinkChanged):
                log.info("link %s %s (rtt %s ms, cost %s)", e.peer, "up" if e.up else "DOWN",
                         e.rtt_ms, e.cost)
                if self.on_links is not None:
                    self.on_links(*self.links_up())

    # The core runs from two loop callbacks, no task: a reader on the mesh socket (datagrams
    # are handled as they arrive) and one timer armed for the core's next deadline.
    def _readable(self):
        self.wakeups += 1
        self.wakeups_by["mesh"] += 1
        try:
            for src, data in self.sock.receive():
                peer = self.by_address.get(src)
                if peer is None:
                    self.unknown_source += 1
                    continue
                self._effects(self.core.handle(MessageReceived(peer, data), ticks_ms()))
        except Exception:
            log.exception("mesh: handling a datagram failed")
        self._schedule()

    def _path_readable(self):
        self.wakeups += 1
        self.wakeups_by["path"] += 1
        try:
            for src, data, age in self.path.receive():
                head = wire.peek(data)
                if head is None or head[1] not in self.addresses:
                    self.unknown_source += 1
                    continue
                self._effects(self.core.handle(MessageReceived(head[1], data, via=src, age_ms=age),
                                               ticks_ms()))
        except Exception:
            log.exception("mesh: handling a path datagram failed")
        self._schedule()

    def _due(self):
        self.wakeups += 1
        self.wakeups_by["timer"] += 1
        armed, self._armed = self._armed, None
        try:
            now = ticks_ms()
            if armed is not None:
                self.late_max_ms = max(self.late_max_ms, ticks_diff(now, armed))
            deadline = self.core.next_deadline()
            if deadline is None or ticks_diff(deadline, now) <= 0:
                self._effects(self.core.tick(now))
        except Exception:
            log.exception("mesh: tick failed")
        self._schedule()

    def _sample(self):
        """Feed WireGuard's counters and the echo replies to the core; re-arm at its cadence."""
        self.wakeups += 1
        self.wakeups_by["sample"] += 1
        try:
            t0 = ticks_ms()
            counters = self._counters()
            if counters is not None:
                echoes = []
                if self.echo is not None:
                    for addr, seq, ms in self.echo.drain():
                        peer = self.by_address.get(addr)
                        if peer is not None:
                            echoes.append((peer, seq, ms))
                self.samples += 1
                self.sample_ms_total += ticks_diff(ticks_ms(), t0)
                self._effects(self.core.handle(Sample(counters, echoes), ticks_ms()))
        except Exception:
            log.exception("mesh: sampling link counters failed")
        if self._sampler is not None:
            self._sampler.arm_ms(self.core.sample_ms())
        self._schedule()

    def _counters(self):
        """{peer name: (rx, tx)}, or None when this backend has no counters (in-process) or
        links are not watched by traffic (no echo socket)."""
        read = getattr(self.daemon.backend, "counters", None)
        if read is None or self.echo is None:
            return None
        try:
            by_key = read()
        except LanmeshError as e:
            log.debug("link counters: %s", e)
            return None
        out = {}
        for key, c in by_key.items():
            name = self.names.get(key)
            if name is not None:
                out[name] = c
        return out

    def _schedule(self):
        """(Re-)arm the timer for the core's next deadline; cheap when it did not move."""
        if self._timer is None:
            return
        now = ticks_ms()
        deadline = self.core.next_deadline()
        if deadline is None:
            deadline = ticks_add(now, IDLE_WAIT_MS)
        elif deadline == self._armed:
            return
        self._armed = deadline
        self._timer.arm_ms(max(0, ticks_diff(deadline, now)))

    def _unwatch(self):
        if self._watching is not None:
            self._watching.close()
            self._watching = None

    async def run(self, stopped):
        self._timer = aio.Timer(self._due)
        if self.echo is not None:
            self._sampler = aio.Timer(self._sample)
            self._sampler.arm_ms(self.core.sample_ms())
        self._watching = aio.on_readable(self.sock, self._readable)
        if self.path is not None:
            self._path_watch = aio.on_readable(self.path, self._path_readable)
        self._schedule()
        try:
            await stopped.wait()
        finally:
            self._unwatch()
            if self._path_watch is not None:
                self._path_watch.close()
                self._path_watch = None
            self._timer.cancel()
            self._timer = None
            if self._sampler is not None:
                self._sampler.cancel()
                self._sampler = None

    def close(self):
        if self.sock is not None:
            self.sock.close()
        if self.path is not None:
            self.path.close()
        if self.echo is not None:
            self.echo.close()
