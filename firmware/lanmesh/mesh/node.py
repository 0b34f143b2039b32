# One node's mesh routing: link monitors for every peer, the link-state database and its
# flooding, and the routing plan computed from it. Pure: facts and `now` in, effects out.
#
#   node = MeshNode("hq", doc["nodes"], doc["settings"], keys=AdvertKeys(private_key))
#   effects = node.handle(MessageReceived("branch", data), now)   # or DocumentChanged(...)
#   effects = node.tick(now)          # when now reaches node.next_deadline()
#   effects = node.handle(Sample(counters, echoes), now)  # every node.sample_ms(): WireGuard's
#                                     # per-peer (rx, tx) and echo RTTs (mesh/liveness.py)
# Effects: SendMessage(peer, data, to) - PROBE/ACK: UDP on the path port to the peer's
#                                    underlay address (`to`, else the one the runner knows),
#                                    outside the tunnel; anything else: to the peer's pinned
#                                    probe address, inside the tunnel;
#          RoutesChanged(plan)       - next hops, and the relay each relayed peer sends to;
#          RelayMaps(maps)           - what this node's kernel forwards as a blind relay;
#          PeerAddress(peer, addr)   - an authenticated path message came from this address;
#          SendEcho(peer, seq)       - an ICMPv6 echo inside the tunnel to the peer's overlay
#                                    address (its kernel answers: liveness.py);
#          LinkChanged(peer, up, rtt_ms, cost) - for the log.
# Links are probed (PROBE/ACK) until they are up and carry their peer's route directly; then,
# once the runner feeds WireGuard's counters, their traffic is their proof of life (liveness).
# Without counters (in-process tests) every link is probed every probe_interval_ms, as before.
# `keys` signs our own LSAs and verifies everyone else's against the public key the
# document lists for their origin (sign(message) -> 64 bytes, verify(public_key, message,
# sig) -> bool): pure functions, so the core stays pure. An LSA that does not verify is
# dropped and counted; it never enters the database, moves a route or makes us fight back.
# What one received datagram makes us send back (LSAs for a REQUEST, SUMMARY or stale
# copy) is bounded by ANSWER_FACTOR times its size.
from ..ticks import ticks_add, ticks_diff, ticks_min
from . import wire
from .links import Link, DEFAULT_INTERVAL_MS
from .lsdb import Lsdb, REFRESH_MS, MAX_AGE_MS, NEWER, OLDER, OWN
from .paths import shortest_paths
from .plan import node_facts, make_plan
from .liveness import Watch, IDLE_MS
from .relay import Relays, session

PROBE_SLACK_PCT = 20    # probes due within this share of the interval go with the current wake-up
SPF_DELAY_MS = 10       # batch the LSAs of one event (both ends of a link) into one computation
SYNC_AFTER_MS = 1000    # neighbours whose DB digest differs this long get a summary
SYNC_BACKOFF_MAX_MS = 16000
ANSWER_FACTOR = 2       # bytes sent in answer to a datagram, at most this many times its size
FIGHT_BACK_MS = 1000    # re-originations forced by an old copy of our own LSA: at most one per
STANDBY_MS = 2000       # probe interval of an up link that is not the route (it is a standby)
DOWN_MS = 1000          # ... of a link down for longer than FRESH_MS (a site that is gone)
FRESH_MS = 10000
STARTUP_HOLD_MS = 3000  # a node just started asks no relay yet: its direct links are up within
                        # ~1 s, and a fleet starting together would first relay through itself


class MessageReceived:
    __slots__ = ("from_peer", "data", "via", "age_ms")

    def __init__(self, from_peer, data, via=None, age_ms=0):
        self.from_peer = from_peer      # peer name: from the pinned source address (tunnel),
        self.data = data                # or as the datagram claims (path: its MAC decides)
        self.via = via                  # path messages: the underlay (ip, port) it came from
        self.age_ms = age_ms            # how long ago the kernel received it (its timestamp)


class DocumentChanged:
    __slots__ = ("nodes", "settings")

    def __init__(self, nodes, settings=None):
        self.nodes = nodes
        self.settings = settings


class Sample:
    __slots__ = ("counters", "echoes")

    def __init__(self, counters, echoes=()):
        self.counters = counters        # {peer: (rx_bytes, tx_bytes)} as WireGuard counts them
        self.echoes = echoes            # [(peer, seq, rtt_ms)]: echo replies read since


class SendEcho:
    __slots__ = ("peer", "seq")

    def __init__(self, peer, seq):
        self.peer = peer
        self.seq = seq

    def __repr__(self):
        return "SendEcho(%s, %d)" % (self.peer, self.seq)


class SendMessage:
    __slots__ = ("peer", "data", "to")

    def __init__(self, peer, data, to=None):
        self.peer = peer
        self.data = data
        self.to = to

    def __repr__(self):
        return "SendMessage(%s, %d bytes)" % (self.peer, len(self.data))


class RoutesChanged:
    __slots__ = ("plan",)

    def __init__(self, plan):
        self.plan = plan

    def __repr__(self):
        return "RoutesChanged(%r)" % (self.plan,)


class RelayMaps:
    __slots__ = ("maps",)

    def __init__(self, maps):
        self.maps = maps                # see relay.Relays.forwarding

    def __repr__(self):
        return "RelayMaps(%r)" % (self.maps,)


class PeerAddress:
    __slots__ = ("peer", "addr")

    def __init__(self, peer, addr):
        self.peer = peer
        self.addr = addr

    def __repr__(self):
        return "PeerAddress(%s, %r)" % (self.peer, self.addr)


class LinkChanged:
    __slots__ = ("peer", "up", "rtt_ms", "cost")

    def __init__(self, peer, up, rtt_ms, cost):
        self.peer = peer
        self.up = up
        self.rtt_ms = rtt_ms
        self.cost = cost

    def __repr__(self):
        return "LinkChanged(%s, up=%s, rtt=%s, cost=%s)" % (self.peer, self.up, self.rtt_ms, self.cost)


def _salt(a, b):
    h = 0x811C9DC5
    for c in (a + "/" + b).encode():
        h = ((h ^ c) * 0x01000193) & 0xFFFFFFFF
    return h


def _public_key(n):
    return n.get("public_key") if isinstance(n, dict) else n.public_key


class MeshNode:
    def __init__(self, name, doc_nodes, settings=None, keys=None, refresh_ms=REFRESH_MS,
                 max_age_ms=MAX_AGE_MS):
        if keys is None:
            raise TypeError("MeshNode needs keys (sign/verify of link-state adverts)")
        self.name = name
        self.keys = keys
        self.public_keys = {}           # name -> public key text, from the document
        self.refresh_ms = refresh_ms
        self.lsdb = Lsdb(name, max_age_ms)
        self.links = {}                 # peer -> Link
        self.nodes = {}                 # name -> node facts (plan.node_facts)
        self.interval = DEFAULT_INTERVAL_MS
        self.seq = 0
        self.adjacent = set()           # peers whose link we advertise as up
        self.plan = None
        self.relays = Relays(name)
        self._hops = {}                 # the last computed next hops
        self._maps = ()                 # what we forward as a relay (last RelayMaps)
        self._nonces = {}               # peer -> {seq: nonce} of our outstanding path probes
        self._addr = {}                 # peer -> underlay address its path messages come from
        self.watches = {}               # peer -> liveness.Watch, for links its traffic proves
        self._counted = set()           # peers whose WireGuard counters we are fed
        self._down_at = {}              # peer -> tick its link was last seen not up
        self._hold_until = None         # no relay asks before this tick (STARTUP_HOLD_MS)
        self.counters = {"malformed": 0, "bad_sender": 0, "unknown_origin": 0,
                         "bad_signature": 0, "bad_mac": 0, "answers_cut": 0, "fight_backs": 0,
                         "rx_msgs": 0, "rx_bytes": 0, "tx_msgs": 0, "tx_bytes": 0, "spf_runs": 0}
        self._fight_at = None           # earliest next re-origination forced by a fight-back
        self._now = None
        self._pending_doc = (doc_nodes, settings)
        self._dirty_at = None           # routes need recomputing from this tick on
        self._refresh_at = None
        self._mismatch = {}             # peer -> tick its digest was first seen differing
        self._sync_at = {}              # peer -> earliest next summary
        self._backoff = {}

    # ---- the three verbs --------------------------------------------------------------------
    def handle(self, fact, now):
        out = self._start(now)
        if isinstance(fact, MessageReceived):
            if self._message(fact.from_peer, fact.data, now, out, fact.via, fact.age_ms):
                self._probe(now, out)
        elif isinstance(fact, DocumentChanged):
            self._document(fact.nodes, fact.settings, now, out)
        elif isinstance(fact, Sample):
            self._sample(fact, now, out)
        else:
            raise TypeError("unknown fact %r" % (fact,))
        self._settle_links(now, out)
        if self._dirty_at is not None and ticks_diff(now, self._dirty_at) >= 0:
            self._compute(out)
        return self._count(out)

    def tick(self, now):
        out = self._start(now)
        if self._hold_until is not None and ticks_diff(now, self._hold_until) >= 0:
            self._hold_until = None
            self._dirty(now)
        self._probe(now, out)
        self._settle_links(now, out)
        d = self.relays.next_deadline()
        if d is not None and ticks_diff(now, d) >= 0:
            self._relay_tick(now, out)      # refreshes and expiries due (routes: _compute)
        if self.lsdb.expire(now):
            self._dirty(now)
        if ticks_diff(now, self._refresh_at) >= 0:
            self._originate(now, out)
        for peer in sorted(self._mismatch):
            if peer in self.adjacent and ticks_diff(now, self._sync_due(peer)) >= 0:
                self._send_summary(peer, now, out)
        if self._dirty_at is not None and ticks_diff(now, self._dirty_at) >= 0:
            self._compute(out)
        return self._count(out)

    def next_deadline(self):
        if self._now is None:
            return None
        d = ticks_min(ticks_min(self._dirty_at, self._refresh_at), self._hold_until)
        for peer, link in self.links.items():
            if peer not in self.watches:
                d = ticks_min(d, link.next_deadline())
        d = ticks_min(d, self.lsdb.next_deadline())
        d = ticks_min(d, self.relays.next_deadline())
        for peer in self._mismatch:
            if peer in self.adjacent:
                d = ticks_min(d, self._sync_due(peer))
        return d

    def sample_ms(self):
        """How soon the runner should feed the next Sample (liveness.py cadences)."""
        ms = IDLE_MS
        for w in self.watches.values():
            c = w.cadence_ms()
            if c < ms:
                ms = c
        return ms

    def status(self):
        links = {}
        for peer in sorted(self.links):
            l = self.links[peer]
            w = self.watches.get(peer)
            links[peer] = {"up": l.up, "rtt_ms": l.rtt_ms(), "loss_pct": l.loss_pct(),
                           "cost": l.cost, "flaps": l.flaps,
                           "watch": None if w is None else ("suspect" if w.suspect_since is not None
                                                            else "busy" if w.busy else "idle")}
        plan = self.plan
        return {"links": links,
                "routes": dict(plan.routes) if plan else {},
                "next_hops": dict(plan.next_hops) if plan else {},
                "relayed": dict(plan.relayed) if plan else {},
                "relay": self.relays.status(),
                "lsdb": {o: self.lsdb.get(o).seq for o in self.lsdb.origins()},
                "counters": dict(self.counters)}

    # ---- facts ------------------------------------------------------------------------------
    def _start(self, now):
        self._now = now
        out = []
        if self._pending_doc is not None:
            nodes, settings = self._pending_doc
            self._pending_doc = None
            self._refresh_at = now
            self._hold_until = ticks_add(now, STARTUP_HOLD_MS)
            self._document(nodes, settings, now, out)
        return out

    def _document(self, doc_nodes, settings, now, out):
        facts = [node_facts(n) for n in doc_nodes]
        self.nodes = {f[0]: f for f in facts}
        self.public_keys = {}
        for n in doc_nodes:
            self.public_keys[node_facts(n)[0]] = _public_key(n)
        if settings and settings.get("probe_interval_ms"):
            self.interval = int(settings["probe_interval_ms"])
        me = self.nodes.get(self.name)
        self.relays.configure(bool(me and me[4]), int((settings or {}).get("relay_port_base", 52000)),
                              int((settings or {}).get("relay_sessions", 32)))
        for peer in sorted(self.nodes):
            if peer == self.name:
                continue
            if peer not in self.links:
                self.links[peer] = Link(peer, now, self.interval, _salt(self.name, peer))
            else:
                self.links[peer].set_interval(self.interval)
        for peer in [p for p in self.links if p not in self.nodes]:
            del self.links[peer]
            self._forget(peer)
            self.watches.pop(peer, None)
            self._counted.discard(peer)
        for origin in self.lsdb.origins():
            if origin not in self.nodes:
                self.lsdb.remove(origin)
        if self.adjacent - set(self.links):
            self.adjacent &= set(self.links)
            self._originate(now, out)
        self._dirty(now)

    def _probe(self, now, out):
        # Every wake-up (a deadline or a message) also sends the probes due soon: the links'
        # schedules then share wake-ups instead of each costing its own, which is most of an
        # idle node's CPU. Probes go at most PROBE_SLACK_PCT of an interval early.
        slack = self.interval * PROBE_SLACK_PCT // 100
        for peer in sorted(self.links):
            if peer in self.watches:
                continue
            link = self.links[peer]
            link.set_interval(self._probe_interval(peer, link, now))
            seq = link.tick(now, slack)
            if seq is not None:
                nonce = self.keys.nonce()
                sent = self._nonces.setdefault(peer, {})
                sent[seq] = nonce
                if len(sent) > 16:
                    del sent[min(sent)]
                data = self._path(peer, wire.encode_probe, seq, nonce)
                if data is not None:
                    out.append(SendMessage(peer, data))

    def _probe_interval(self, peer, link, now):
        if peer not in self._counted:
            return self.interval            # no traffic counters: probes are all we have
        if link.up:
            self._down_at.pop(peer, None)
            # a standby that missed an answer is asked fast (as in the past) until it answers
            # or is down: else a cut standby stays "up" with its misses in the loss window,
            # and that cost keeps traffic on the relay for a whole window after it heals
            return self.interval if link.miss_run else max(self.interval, STANDBY_MS)
        since = self._down_at.setdefault(peer, now)
        return self.interval if ticks_diff(now, since) < FRESH_MS else max(self.interval, DOWN_MS)

    def _sample(self, fact, now, out):
        for peer, (rx, tx) in fact.counters.items():
            link = self.links.get(peer)
            if link is None:
                continue
            self._counted.add(peer)
            w = self.watches.get(peer)
            if not (link.up and self._hops.get(peer) == peer):
                if w is not None:           # back to probes: a standby, or down
                    del self.watches[peer]
                    link.next_probe_at = now
                continue
            if w is None:
                link.quiet()
                w = self.watches[peer] = Watch(peer, now, rx, tx, _salt(self.name, peer))
                continue
            if w.counters(rx, tx, now, link.low):
                del self.watches[peer]
                link.lost(now)
                link.next_probe_at = now
        for peer, seq, ms in fact.echoes:
            w = self.watches.get(peer)
            if w is not None and w.answered(seq):
                self.links[peer].sample(ms, loaded=w.busy)
        for peer in sorted(self.watches):
            seq = self.watches[peer].echo_due(now)
            if seq is not None:
                out.append(SendEcho(peer, seq))

    def _path(self, peer, encode, seq, nonce, *hold):
        """A PROBE/ACK under the pair's MAC; None if the peer's key cannot make one."""
        tag = [None]

        def mac(b):
            tag[0] = self.keys.path_mac(self.public_keys.get(peer), b)
            return tag[0] or bytes(wire.MAC_BYTES)
        data = encode(self.name, seq, self.lsdb.digest(), nonce, mac, *hold)
        return data if tag[0] else None

    def _forget(self, peer):
        for d in (self._mismatch, self._sync_at, self._backoff):
            d.pop(peer, None)

    def _message(self, peer, data, now, out, via=None, age_ms=0):
        self.counters["rx_msgs"] += 1
        self.counters["rx_bytes"] += len(data)
        try:
            m = wire.decode(data)
        except wire.WireError:
            self.counters["malformed"] += 1
            return False
        if m.sender != peer or peer not in self.links:
            self.counters["bad_sender"] += 1
            return False
        budget = [ANSWER_FACTOR * len(data)]
        if m.type == wire.PROBE or m.type == wire.ACK:
            tag = self.keys.path_mac(self.public_keys.get(peer), m.maced)
            if tag is None or tag != m.mac:
                self.counters["bad_mac"] += 1
                return False
            if m.type == wire.ACK:
                if self._nonces.get(peer, {}).pop(m.seq, None) != m.nonce:
                    self.counters["bad_mac"] += 1      # not an answer to a probe of ours
                    return False
                self.links[peer].acked(m.seq, now, max(0, age_ms) + m.hold)
            else:
                ack = self._path(peer, wire.encode_ack, m.seq, m.nonce, max(0, age_ms))
                if ack is not None:
                    out.append(SendMessage(peer, ack, via))
            if via is not None and self._addr.get(peer) != via:
                self._addr[peer] = via
                out.append(PeerAddress(peer, via))
            self._digest_seen(peer, m.digest, now)
        elif via is not None:
            self.counters["bad_sender"] += 1           # only probes travel outside the tunnel
            return False
        elif m.type == wire.RELAY:
            answer = self.relays.request(peer, m.a, m.b, m.want, self.nodes, now)
            if answer is not None:
                out.append(SendMessage(peer, wire.encode_relayed(self.name, m.a, m.b, *(
                    (answer[0],) + tuple(answer[1])))))
            self._relay_tick(now, out)
        elif m.type == wire.RELAYED:
            if self.relays.granted(peer, m.a, m.b, m.status, m.ports, now):
                self._dirty(now)
            self._relay_tick(now, out)
        elif m.type == wire.LSAS:
            self._lsas(peer, m.lsas, now, out, budget)
        elif m.type == wire.SUMMARY:
            self._summary(peer, m.entries, now, out, budget)
        elif m.type == wire.REQUEST:
            have = [o for o in m.origins if self.lsdb.get(o) is not None]
            self._send_lsas(peer, have, now, out, budget)
        return True

    def _verified(self, lsa):
        key = self.public_keys.get(lsa.origin)
        if key and self.keys.verify(key, wire.signed_bytes(lsa), lsa.sig):
            return True
        self.counters["bad_signature"] += 1
        return False

    def _lsas(self, peer, lsas, now, out, budget):
        forward = {}                    # neighbour -> [origin]
        back = []
        for lsa in lsas:
            if lsa.origin not in self.nodes:
                self.counters["unknown_origin"] += 1
                continue
            verdict = self.lsdb.classify(lsa)
            if verdict in (NEWER, OWN) and not self._verified(lsa):
                continue
            if verdict == NEWER:
                old = self.lsdb.get(lsa.origin)
                self.lsdb.store(lsa, now)
                link = self.links.get(lsa.origin)
                if link is not None and old is not None and self.name in lsa.links and \
                        self.name not in old.links:
                    link.forgive_loss()     # it saw our link down and up again
                if old is None or old.links != lsa.links:
                    # a refresh that changes nothing costs no SPF run; one that does is
                    # computed in this wake-up (no timer of its own), unless a batch is due
                    self._dirty(now, 0)
                for n in self.adjacent:
                    # the origin already sent it to every neighbour it lists
                    if n == peer or n == lsa.origin or (peer == lsa.origin and n in lsa.links):
                        continue
                    forward.setdefault(n, []).append(lsa.origin)
            elif verdict == OLDER:
                back.append(lsa.origin)
            elif verdict == OWN:
                # A genuine copy of ours from before a restart: jump past it. Re-originating
                # is rate-limited, so even replayed copies cannot make us flood.
                self.counters["fight_backs"] += 1
                self.seq = max(self.seq, lsa.seq)
                if self._fight_at is None or ticks_diff(now, self._fight_at) >= 0:
                    self._fight_at = ticks_add(now, FIGHT_BACK_MS)
                    self._originate(now, out)
                else:
                    self._refresh_at = ticks_min(self._refresh_at, self._fight_at)
        for n in sorted(forward):
            self._send_lsas(n, forward[n], now, out)
        if back:
            self._send_lsas(peer, back, now, out, budget)

    def _summary(self, peer, entries, now, out, budget):
        theirs = {}
        for origin, seq in entries:
            theirs[origin] = seq
        want, give = [], []
        for origin in sorted(theirs):
            mine = self.lsdb.get(origin)
            if origin in self.nodes and (mine is None or mine.seq < theirs[origin]):
                want.append(origin)
        for origin in self.lsdb.origins():
            if origin not in theirs or theirs[origin] < self.lsdb.get(origin).seq:
                give.append(origin)
        self._send_lsas(peer, give, now, out, budget)
        for data in wire.encode_request(self.name, want, self._per_request()) if want else ():
            out.append(SendMessage(peer, data))

    def _per_request(self):
        # The answer to a padded REQUEST may be twice its size: ask for as many LSAs as
        # should fit, from the largest LSA this document allows (links to every node).
        largest = 80 + 3 * len(self.nodes)
        for n in self.nodes:
            largest += len(n)
        return max(1, (ANSWER_FACTOR * wire.MAX_DATAGRAM - 64) // largest)

    def _digest_seen(self, peer, digest, now):
        if digest == self.lsdb.digest():
            self._forget(peer)
        elif peer not in self._mismatch:
            self._mismatch[peer] = now

    def _sync_due(self, peer):
        due = ticks_add(self._mismatch[peer], SYNC_AFTER_MS)
        at = self._sync_at.get(peer)
        return due if at is None or ticks_diff(due, at) >= 0 else at

    def _send_summary(self, peer, now, out):
        for data in wire.encode_summary(self.name, self.lsdb.summary()):
            out.append(SendMessage(peer, data))
        if peer in self.watches:
            # a watched link carries no probes, so no digest would ever clear the mismatch:
            # one summary syncs both ways (each end sends what the other lacks); a lost one
            # is repaired by the next refresh
            self._forget(peer)
            return
        back = self._backoff.get(peer, SYNC_AFTER_MS)
        self._sync_at[peer] = ticks_add(now, back)
        self._backoff[peer] = min(SYNC_BACKOFF_MAX_MS, back * 2)
        self._mismatch[peer] = now

    # ---- our own LSA, flooding, routes ------------------------------------------------------
    def _settle_links(self, now, out):
        changed = False
        came_up = []
        for peer in sorted(self.links):
            l = self.links[peer]
            if not l.take_change():
                continue
            changed = True
            out.append(LinkChanged(peer, l.up, l.rtt_ms(), l.cost))
            if l.up and peer not in self.adjacent:
                self.adjacent.add(peer)
                came_up.append(peer)
            elif not l.up:
                self.adjacent.discard(peer)
                self._forget(peer)
        if changed:
            self._originate(now, out)
            if self._hold_until is not None and all(l.up for l in self.links.values()):
                self._hold_until = None     # every direct link is up: nothing to wait for
        for peer in came_up:            # a new neighbour gets our whole database
            self._send_lsas(peer, [o for o in self.lsdb.origins() if o != self.name], now, out)

    def _originate(self, now, out):
        self.seq = min(self.seq + 1, wire.U32)     # saturates, never wraps (see lsdb)
        links = {}
        for peer in self.adjacent:
            links[peer] = self.links[peer].cost
        lsa = wire.Lsa(self.name, self.seq, links)
        lsa.sig = self.keys.sign(wire.signed_bytes(lsa))
        prev = self.lsdb.get(self.name)
        self.lsdb.install_own(lsa, now)
        self._refresh_at = ticks_add(now, self.refresh_ms)
        if prev is None or prev.links != links:
            self._dirty(now)            # a refresh that changes nothing costs no SPF run
        for peer in sorted(self.adjacent):
            self._send_lsas(peer, [self.name], now, out)

    def _send_lsas(self, peer, origins, now, out, budget=None):
        """budget: [bytes] left for answers to one received datagram (None: not an answer)."""
        if origins:
            lsas = [self.lsdb.outgoing(o, now) for o in origins]
            for data in wire.encode_lsas(self.name, lsas):
                if budget is not None:
                    if len(data) > budget[0]:
                        self.counters["answers_cut"] += 1
                        return          # the digest stays different: the next sync asks again
                    budget[0] -= len(data)
                out.append(SendMessage(peer, data))

    def _dirty(self, now, delay_ms=SPF_DELAY_MS):
        if self._dirty_at is None:
            self._dirty_at = ticks_add(now, delay_ms)

    def _compute(self, out):
        self._dirty_at = None
        self.counters["spf_runs"] += 1
        relays = set(n for n, f in self.nodes.items() if f[4])
        table = self.lsdb.link_table()
        next_hop, _, _ = shortest_paths(self.name, table, relays)
        self._hops = dict(next_hop)
        self._relay_tick(self._now, out, plan=False)
        relayed = {}
        for dest, via in next_hop.items():
            if via is not None and via != dest and dest != self.name:
                p = self.relays.port(via, self.name, dest, dest)
                if p is not None:
                    relayed[dest] = (via, p)
        plan = make_plan(self.name, self.nodes, next_hop, relayed)
        if plan != self.plan:
            self.plan = plan
            out.append(RoutesChanged(plan))

    def _relay_tick(self, now, out, plan=True):
        """Ask relays for what our routes need, refresh and release; forward as a relay what
        our sessions need now. plan: also recompute routes if a grant changed."""
        self.relays.expire(now)
        for user, x, y, px, py in self.relays.retarget(self._hops, now):
            if user in self.links:
                out.append(SendMessage(user, wire.encode_relayed(self.name, x, y, wire.GRANTED,
                                                                 px, py)))
        maps, onward = self.relays.forwarding(self._hops)
        wanted = set(onward)
        for dest, via in self._hops.items() if self._hold_until is None else ():
            if via is not None and via != dest and dest != self.name and dest in self.nodes:
                wanted.add((via,) + session(self.name, dest))
        before = {k: (a.ports and dict(a.ports)) for k, a in self.relays.asks.items()}
        for peer, data in self.relays.want(wanted, now):
            if peer in self.links:
                out.append(SendMessage(peer, data))
        if maps != self._maps:
            self._maps = maps
            out.append(RelayMaps(maps))
        after = {k: (a.ports and dict(a.ports)) for k, a in self.relays.asks.items()}
        if plan and before != after:
            self._dirty(now)

    def _count(self, out):
        for e in out:
            if isinstance(e, SendMessage):
                self.counters["tx_msgs"] += 1
                self.counters["tx_bytes"] += len(e.data)
        return out
