# Blind relays (issue 14). When the direct path A–C fails, A's WireGuard peer for C keeps its
# allowed IPs and only its endpoint moves: to a port on the relay B that B's kernel forwards
# to C (nftables DNAT + SNAT, conntrack for the way back). B never holds a key of A–C and
# never sees a decrypted packet. Each relayed session {a, b} gets two ports on the relay:
# ports[a] (what arrives there goes toward a) and ports[b]; a packet forwarded toward one end
# leaves from the other end's port, so the receiver's WireGuard roams to that port and its
# answers take the same way back. A relay whose own next hop toward an end is another relay
# forwards to that relay's port for the same session (multi-hop: A→B→D→C).
#
# Two tables, both pure (facts and `now` in, what to send and forward out):
#   asks     — what this node asked a relay for: its own sessions and onward hops of the
#              sessions it forwards; refreshed every REFRESH_MS, released when not needed;
#   sessions — what this node forwards as a relay: granted only if it is marked `relay`,
#              at most `max_sessions`, forgotten EXPIRE_MS after its last user's refresh.
from ..ticks import ticks_add, ticks_diff, ticks_min
from . import wire

REFRESH_MS = 5000
EXPIRE_MS = 3 * REFRESH_MS
RETRY_MS = 1000         # an unanswered ask is repeated this soon (a reroute must be quick)


def session(a, b):
    return (a, b) if a < b else (b, a)


class _Ask:
    __slots__ = ("sent_at", "ports", "granted_at", "status")

    def __init__(self):
        self.sent_at = None
        self.ports = None           # {end: port} once granted
        self.granted_at = None
        self.status = None


class _Session:
    __slots__ = ("slot", "ports", "users", "hops")

    def __init__(self, slot, ports):
        self.slot = slot
        self.ports = ports          # {end: port on this relay toward that end}
        self.users = {}             # peer -> tick of its last ask
        self.hops = None            # {end: our next hop toward it} the ports were granted for


class Relays:
    def __init__(self, me, relay=False, port_base=52000, max_sessions=32):
        self.me = me
        self.relay = relay
        self.port_base = port_base
        self.max_sessions = max_sessions
        self.asks = {}              # (via, a, b) -> _Ask
        self.sessions = {}          # (a, b) -> _Session
        self._freed = {}            # slot -> tick it was freed (reused last: see request)
        self.refused = 0            # asks we refused (not a relay, full, unknown ends)

    def configure(self, relay, port_base, max_sessions):
        if (relay, port_base, max_sessions) != (self.relay, self.port_base, self.max_sessions):
            self.relay, self.port_base, self.max_sessions = relay, port_base, max_sessions
            self.sessions = {}      # ports moved: users ask again and get new ones
            self._freed = {}

    # ---- requester side ---------------------------------------------------------------
    def want(self, wanted, now):
        """wanted: set of (via, a, b) needed now. → [(peer, datagram)] to send."""
        out = []
        for key in sorted(set(self.asks) - wanted):
            del self.asks[key]
            out.append((key[0], wire.encode_relay(self.me, key[1], key[2], False)))
        for key in sorted(wanted):
            ask = self.asks.get(key)
            if ask is None:
                ask = self.asks[key] = _Ask()
            if ask.granted_at is not None and ticks_diff(now, ask.granted_at) >= EXPIRE_MS:
                ask.ports = ask.granted_at = None       # the relay went silent: not ours now
            every = REFRESH_MS if ask.ports is not None else RETRY_MS
            if ask.sent_at is None or ticks_diff(now, ask.sent_at) >= every:
                ask.sent_at = now
                out.append((key[0], wire.encode_relay(self.me, key[1], key[2], True)))
        return out

    def granted(self, via, a, b, status, ports, now):
        """A RELAYED from `via`. → True if what we may send through it changed."""
        ask = self.asks.get((via,) + session(a, b))
        if ask is None:
            return False
        before = ask.ports
        ask.status = status
        if status == wire.GRANTED and all(0 < p < 65536 for p in ports):
            ask.ports = {a: ports[0], b: ports[1]}
            ask.granted_at = now
        else:
            ask.ports = ask.granted_at = None
        return ask.ports != before

    def port(self, via, a, b, toward):
        ask = self.asks.get((via,) + session(a, b))
        return ask.ports.get(toward) if ask is not None and ask.ports else None

    # ---- relay side -------------------------------------------------------------------
    def request(self, peer, a, b, want, known, now):
        """A RELAY from `peer` (inside the tunnel: authenticated). known: the document's node
        names. → (status, (port_a, port_b)) to answer, or None (a release: no answer)."""
        key = session(a, b)
        s = self.sessions.get(key)
        if not want:
            if s is not None:
                s.users.pop(peer, None)
                if not s.users:
                    self._free(key, now)
            return None
        if not self.relay or self.me in key or a not in known or b not in known:
            self.refused += 1
            return (wire.NOT_RELAY if not self.relay else wire.NO_PATH), (0, 0)
        if s is None:
            s = self._new(key, now)
            if s is None:
                self.refused += 1
                return wire.FULL, (0, 0)
        s.users[peer] = now
        return wire.GRANTED, (s.ports[a], s.ports[b])

    def _new(self, key, now, users=None):
        used = set(x.slot for x in self.sessions.values())
        free = [i for i in range(self.max_sessions) if i not in used]
        if not free:
            return None
        # The kernel's conntrack entries of a freed slot's ports outlive the session (and
        # stay alive while anyone still sends there): a reused port would go on to the old
        # target. So a slot never used comes first, then the one freed longest ago.
        slot = max(free, key=lambda i: (i not in self._freed,
                                        ticks_diff(now, self._freed.get(i, now)), -i))
        base = self.port_base + 2 * slot
        s = self.sessions[key] = _Session(slot, {key[0]: base, key[1]: base + 1})
        s.users = dict(users or {})
        return s

    def retarget(self, next_hops, now):
        """Sessions whose next hop toward an end moved get new ports (the kernel's conntrack
        entries would keep the old target for as long as the ends send to the old ones).
        → [(user, a, b, port_a, port_b)]: the new grants to tell the users now."""
        out = []
        for key in sorted(self.sessions):
            s = self.sessions[key]
            hops = {end: next_hops.get(end) for end in key}
            if s.hops is None or s.hops == hops:
                s.hops = hops
                continue
            users = s.users
            self._free(key, now)
            new = self._new(key, now, users)
            if new is None:
                continue
            new.hops = hops
            for user in sorted(users):
                out.append((user, key[0], key[1], new.ports[key[0]], new.ports[key[1]]))
        return out

    def expire(self, now):
        for key in sorted(self.sessions):
            s = self.sessions[key]
            for peer in [p for p, t in s.users.items() if ticks_diff(now, t) >= EXPIRE_MS]:
                del s.users[peer]
            if not s.users:
                self._free(key, now)

    def _free(self, key, now):
        self._freed[self.sessions.pop(key).slot] = now

    def forwarding(self, next_hops):
        """What this relay's kernel forwards now, and the onward asks that needs.
        → (maps, onward): maps = sorted tuple of (port_in, snat_port, kind, name, port),
        kind "node" (forward to that node's WireGuard endpoint) or "relay" (to that relay's
        `port` for this session); onward = set of (via, a, b)."""
        maps, onward = [], set()
        for key in sorted(self.sessions):
            s = self.sessions[key]
            for end in key:
                other = key[1] if end == key[0] else key[0]
                hop = next_hops.get(end)
                if hop is None:
                    continue                    # no way toward that end now: nothing forwarded
                if hop == end:
                    maps.append((s.ports[end], s.ports[other], "node", end, 0))
                    continue
                onward.add((hop,) + key)
                p = self.port(hop, key[0], key[1], end)
                if p is not None:
                    maps.append((s.ports[end], s.ports[other], "relay", hop, p))
        return tuple(maps), onward

    def next_deadline(self):
        d = None
        for ask in self.asks.values():
            if ask.sent_at is not None:
                d = ticks_min(d, ticks_add(ask.sent_at, REFRESH_MS if ask.ports else RETRY_MS))
        for s in self.sessions.values():
            for t in s.users.values():
                d = ticks_min(d, ticks_add(t, EXPIRE_MS))
        return d

    def status(self):
        return {"sessions": {"%s-%s" % k: {"ports": dict(s.ports), "users": sorted(s.users)}
                             for k, s in sorted(self.sessions.items())},
                "asks": {"%s:%s-%s" % k: (dict(a.ports) if a.ports else a.status)
                         for k, a in sorted(self.asks.items())},
                "refused": self.refused}
