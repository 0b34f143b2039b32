# A simulated network of MeshNodes over fake links (integer clock started just below the tick
# wrap, per-link one-way delay, cut links drop), and the end-to-end routing tests built on it.
# Kept free of pytest/hypothesis imports so MicroPython (tests/mesh_mpy_smoke.py) and
# bench/mesh_compute.py can reuse MeshSim.
import heapq

from lanmesh.ticks import TICKS_PERIOD, ticks_add, ticks_diff
from lanmesh.mesh.node import MeshNode, MessageReceived, SendMessage, RoutesChanged, DocumentChanged
from lanmesh.mesh import wire

START = TICKS_PERIOD - 500      # every simulation crosses the tick wrap while starting up


def _fake_sig(key, message):
    h = 0x811C9DC5
    for c in key.encode() + bytes(message):
        h = ((h ^ c) * 0x01000193) & 0xFFFFFFFF
    out = bytearray()
    for i in range(16):
        h = ((h ^ i) * 0x01000193) & 0xFFFFFFFF
        out.extend(h.to_bytes(4, "big"))
    return bytes(out)


class FakeKeys:
    """Stands in for lanmesh.advert_keys.AdvertKeys in fast simulations and under MicroPython:
    a "signature" is a checksum of the message keyed by the signer's public key name. Only
    code that sets out to forge one can; the attack tests use the real AdvertKeys."""

    def __init__(self, public_key):
        self.public_key = public_key

    def sign(self, message):
        return _fake_sig(self.public_key, message)

    def verify(self, public_key, message, sig):
        return sig == _fake_sig(public_key, message)

    def path_mac(self, public_key, data):
        # symmetric, as the X25519 pair key is: both ends compute the same tag
        if not public_key:
            return None
        pair = "/".join(sorted((self.public_key, public_key)))
        return _fake_sig(pair, data)[:16]

    def nonce(self):
        self._n = getattr(self, "_n", 0) + 1
        return self._n.to_bytes(8, "big")


def real_keys(names):
    """{name: (public key, AdvertKeys)} with real WireGuard keys (XEdDSA-signed adverts)."""
    from lanmesh.advert_keys import AdvertKeys
    from lanmesh.keys import genkey, pubkey
    out = {}
    for n in names:
        k = genkey()
        out[n] = (pubkey(k), AdvertKeys(k))
    return out


def doc_node(i, name, relay=True):
    return {"name": name, "public_key": "k%d" % i, "relay": relay,
            "address": ["100.64.0.%d/32" % (i + 1), "fd00:6c6d::%x/128" % (i + 1)],
            "lan": ["198.19.%d.0/24" % (i + 1)], "endpoints": []}


def path_msg(encode, sender, seq, digest, sender_key, peer_key, nonce=bytes(8)):
    """A PROBE/ACK from `sender` (FakeKeys `sender_key`) to the peer with `peer_key`."""
    return encode(sender, seq, digest, nonce, lambda b: FakeKeys(sender_key).path_mac(peer_key, b))


def doc_nodes(names, non_relays=()):
    return [doc_node(i, n, n not in non_relays) for i, n in enumerate(names)]


class MeshSim:
    def __init__(self, names, delay=None, non_relays=(), settings=None, node_kw=None, links=None,
                 start=START, keys=None):
        """delay: {(a, b): one-way ms} (either order; default 5 ms). links: pairs that exist at
        all (default: full mesh). keys: real_keys(names) for real signatures (default fake)."""
        self.names = list(names)
        self.doc = doc_nodes(self.names, non_relays)
        self.keys = {}
        for n in self.doc:
            if keys is not None:
                n["public_key"] = keys[n["name"]][0]
                self.keys[n["name"]] = keys[n["name"]][1]
            else:
                self.keys[n["name"]] = FakeKeys(n["public_key"])
        self.settings = settings or {"probe_interval_ms": 250}
        self.node_kw = node_kw or {}
        self.t = 0                      # absolute ms since start (never wraps)
        self.start = start
        self.nodes = {n: self._node(n) for n in self.names}
        self.delay = {}
        for (a, b), d in (delay or {}).items():
            self.delay[(a, b)] = self.delay[(b, a)] = d
        self.cut = set()
        if links is not None:
            allowed = set()
            for a, b in links:
                allowed.add((a, b))
                allowed.add((b, a))
            for a in self.names:
                for b in self.names:
                    if a != b and (a, b) not in allowed:
                        self.cut.add((a, b))
        self.queue = []
        self.seq = 0
        self.tx_bytes = {n: 0 for n in self.names}
        self.tx_msgs = {n: 0 for n in self.names}
        self.plans = {}
        self.route_changes = []         # (t, node)
        self.drop_filter = None         # fn(src, dst, data) -> True to drop one message

    def now(self):
        return ticks_add(self.start, self.t)

    # ---- topology --------------------------------------------------------------------------
    def cut_link(self, a, b):
        self.cut.add((a, b))
        self.cut.add((b, a))

    def heal_link(self, a, b):
        self.cut.discard((a, b))
        self.cut.discard((b, a))

    def set_delay(self, a, b, ms):
        self.delay[(a, b)] = self.delay[(b, a)] = ms

    def _node(self, name):
        return MeshNode(name, self.doc, self.settings, keys=self.keys[name], **self.node_kw)

    def restart(self, name):
        self.nodes[name] = self._node(name)
        self.plans.pop(name, None)

    # ---- running ---------------------------------------------------------------------------
    def _apply(self, src, effects):
        for e in effects:
            if isinstance(e, SendMessage):
                self.tx_bytes[src] += len(e.data)
                self.tx_msgs[src] += 1
                if (src, e.peer) in self.cut or e.peer not in self.nodes:
                    continue
                if self.drop_filter is not None and self.drop_filter(src, e.peer, e.data):
                    continue
                d = self.delay.get((src, e.peer), 5)
                self.seq += 1
                heapq.heappush(self.queue, (self.t + d, self.seq, src, e.peer, e.data))
            elif isinstance(e, RoutesChanged):
                self.plans[src] = e.plan
                self.route_changes.append((self.t, src))

    def deliver(self, name, fact):
        self._apply(name, self.nodes[name].handle(fact, self.now()))

    def run(self, ms):
        end = self.t + ms
        now = self.now()
        for n in self.names:            # nodes not yet started need a first tick
            if self.nodes[n].next_deadline() is None:
                self._apply(n, self.nodes[n].tick(now))
        while True:
            nxt = self.queue[0][0] if self.queue else end + 1
            now = self.now()
            due = []
            for n in self.names:
                d = self.nodes[n].next_deadline()
                at = self.t + max(0, ticks_diff(d, now))
                if at < nxt:
                    nxt = at
                    due = [n]
                elif at == nxt:
                    due.append(n)
            if nxt > end:
                self.t = end
                return
            self.t = nxt
            now = self.now()
            while self.queue and self.queue[0][0] <= self.t:
                _, _, src, dst, data = heapq.heappop(self.queue)
                self._apply(dst, self.nodes[dst].handle(MessageReceived(src, data), now))
            for n in self.names:
                d = self.nodes[n].next_deadline()
                if ticks_diff(d, now) <= 0:
                    self._apply(n, self.nodes[n].tick(now))

    def run_until(self, cond, limit_ms, step=10):
        """Run in small steps until cond() holds; return the ms it took (or None)."""
        t0 = self.t
        while self.t - t0 < limit_ms:
            if cond():
                return self.t - t0
            self.run(step)
        return self.t - t0 if cond() else None

    # ---- checks ----------------------------------------------------------------------------
    def hop(self, a, dest):
        p = self.plans.get(a)
        return None if p is None else p.next_hops.get(dest)

    def walk(self, a, dest):
        """Follow next hops a -> dest; the node list, or None on a loop or dead end."""
        path = [a]
        while path[-1] != dest:
            h = self.hop(path[-1], dest)
            if h is None or h in path:
                return None
            path.append(h)
        return path

    def source_ok(self, path):
        """Each hop accepts the packet: its allowed IPs for the previous node carry the source's
        prefixes (what WireGuard checks), i.e. its next hop back to the source is that node."""
        src = path[0]
        for i in range(1, len(path)):
            if self.hop(path[i], src) != path[i - 1]:
                return False
        return True

    def converged(self):
        digests = set(self.nodes[n].lsdb.digest() for n in self.names)
        if len(digests) != 1:
            return False
        for a in self.names:
            for b in self.names:
                if a != b:
                    p = self.walk(a, b)
                    if p is None or not self.source_ok(p):
                        return False
        return True


# ---- tests -----------------------------------------------------------------------------------

def test_full_mesh_converges_direct_and_crosses_wrap():
    sim = MeshSim(["a", "b", "c", "d"])
    direct = lambda: sim.converged() and all(sim.hop(x, y) == y for x in sim.names for y in sim.names if x != y)
    took = sim.run_until(direct, 5000)
    assert took is not None and took < 2000, took
    assert sim.now() < START            # the clock wrapped during the run
    for x in sim.names:
        for y in sim.names:
            if x != y:
                assert sim.hop(x, y) == y
    plan = sim.plans["a"]
    assert plan.allowed["b"] == ("100.64.0.2/32", "198.19.2.0/24", "fd00:6c6d::2/128")


def test_failover_within_a_second_and_symmetric():
    sim = MeshSim(["a", "b", "c"], start=TICKS_PERIOD - 3000)
    assert sim.run_until(sim.converged, 2500) is not None
    sim.run(2700 - sim.t)               # cut just before the tick counter wraps
    sim.cut_link("a", "c")
    took = sim.run_until(lambda: sim.hop("a", "c") == "b" and sim.hop("c", "a") == "b", 3000, step=5)
    assert took is not None and took <= 1050, took
    assert sim.now() < 1000             # detection happened across the wrap
    assert sim.walk("a", "c") == ["a", "b", "c"] and sim.source_ok(["a", "b", "c"])
    assert sim.walk("c", "a") == ["c", "b", "a"]
    # Blind relay: allowed IPs stay put; a and c send to the ports b granted for {a, c},
    # and b forwards each direction (in its kernel) toward the other end.
    sim.run(200)
    assert "198.19.3.0/24" in sim.plans["a"].allowed["c"]
    assert "198.19.3.0/24" not in sim.plans["a"].allowed["b"]
    relay_a, port_a = sim.plans["a"].relayed["c"]
    relay_c, port_c = sim.plans["c"].relayed["a"]
    assert relay_a == relay_c == "b"
    s = sim.nodes["b"].relays.sessions[("a", "c")]
    assert s.ports == {"c": port_a, "a": port_c} and sorted(s.users) == ["a", "c"]
    maps, _ = sim.nodes["b"].relays.forwarding(sim.nodes["b"]._hops)
    assert sorted(maps) == sorted([(port_a, port_c, "node", "c", 0),
                                   (port_c, port_a, "node", "a", 0)])


def test_recovery_waits_for_hysteresis_then_returns_direct():
    sim = MeshSim(["a", "b", "c"])
    sim.run_until(sim.converged, 5000)
    sim.run(1000)
    sim.cut_link("a", "c")
    sim.run(2000)
    assert sim.hop("a", "c") == "b"
    sim.heal_link("a", "c")
    sim.run(500)                        # 2 good probes at most: not yet
    assert sim.hop("a", "c") == "b"
    took = sim.run_until(lambda: sim.hop("a", "c") == "c" and sim.hop("c", "a") == "a", 5000)
    assert took is not None
    assert sim.converged()


def test_slow_direct_link_rerouted_via_fast_relay_and_jitter_does_not_flap():
    sim = MeshSim(["a", "b", "c"], delay={("a", "c"): 40, ("a", "b"): 2, ("b", "c"): 2})
    assert sim.run_until(sim.converged, 6000) is not None
    sim.run(3000)
    assert sim.walk("a", "c") == ["a", "b", "c"]
    changes = len(sim.route_changes)
    # +-3 ms jitter on every link must not move any route
    k = [0]

    def jitter():
        k[0] += 1
        for (x, y), base in ((("a", "c"), 40), (("a", "b"), 2), (("b", "c"), 2)):
            sim.set_delay(x, y, base + (k[0] * 7 + len(x + y)) % 4 - 1)
    for _ in range(200):
        jitter()
        sim.run(50)
    assert len(sim.route_changes) == changes
    # direct gets fast, relay gets slow: route moves back to direct
    sim.set_delay("a", "c", 2)
    sim.set_delay("a", "b", 40)
    took = sim.run_until(lambda: sim.converged() and sim.walk("a", "c") == ["a", "c"], 10000)
    assert took is not None


def test_non_relay_is_never_transit():
    # b is the only way between a and c, but b is not a relay
    sim = MeshSim(["a", "b", "c"], non_relays=("b",), links=[("a", "b"), ("b", "c")])
    sim.run(4000)
    assert sim.hop("a", "b") == "b" and sim.hop("c", "b") == "b"
    assert sim.hop("a", "c") is None and sim.hop("c", "a") is None
    assert "198.19.3.0/24" not in sim.plans["a"].allowed["b"]
    assert sim.plans["a"].routes["198.19.3.0/24"] is None


def test_restarted_node_with_reset_seq_wins_back():
    sim = MeshSim(["a", "b", "c"])
    sim.run_until(sim.converged, 5000)
    sim.cut_link("a", "b")
    sim.run(2000)
    sim.heal_link("a", "b")
    sim.run(3000)                       # a's seq has grown past 1
    before = sim.nodes["b"].lsdb.get("a").seq
    assert before > 2
    sim.restart("a")
    took = sim.run_until(sim.converged, 5000)
    assert took is not None
    assert sim.nodes["b"].lsdb.get("a").seq > before
    assert sim.nodes["a"].seq > before


def test_lost_lsa_repaired_by_digest_sync():
    sim = MeshSim(["a", "b", "c", "d"])
    sim.run_until(sim.converged, 5000)
    sim.run(1000)
    # drop every LSA message for a while: then cut a-d; c never hears a's new LSA directly
    sim.drop_filter = lambda s, d, data: data[2] == wire.LSAS and d == "c"
    sim.cut_link("a", "d")
    sim.run(1500)
    sim.drop_filter = None
    assert sim.nodes["c"].lsdb.digest() != sim.nodes["a"].lsdb.digest()
    took = sim.run_until(sim.converged, 5000)
    assert took is not None and took < 3000, took
    assert sim.hop("a", "d") in ("b", "c")


def test_vanished_node_expires_after_max_age():
    sim = MeshSim(["a", "b", "c"], node_kw={"refresh_ms": 2000, "max_age_ms": 8000})
    sim.run_until(sim.converged, 5000)
    for x in ("a", "b"):
        sim.cut_link(x, "c")
    sim.run(1500)
    assert sim.hop("a", "c") is None    # unreachable at once: both-ends rule
    assert sim.nodes["a"].lsdb.get("c") is not None
    sim.run(9000)
    assert sim.nodes["a"].lsdb.get("c") is None
    assert sim.nodes["b"].lsdb.get("c") is None


def test_document_change_adds_and_removes_nodes():
    sim = MeshSim(["a", "b", "c"])
    sim.run_until(sim.converged, 5000)
    smaller = [n for n in sim.doc if n["name"] != "c"]
    for x in ("a", "b"):
        sim.deliver(x, DocumentChanged(smaller, sim.settings))
    sim.run(1000)
    for x in ("a", "b"):
        assert "c" not in sim.plans[x].allowed and sim.nodes[x].lsdb.get("c") is None
        assert "198.19.3.0/24" not in sim.plans[x].routes


def test_ring_of_eight_has_no_loops_and_is_symmetric():
    names = ["n%d" % i for i in range(8)]
    ring = [(names[i], names[(i + 1) % 8]) for i in range(8)]
    sim = MeshSim(names, links=ring)
    assert sim.run_until(sim.converged, 8000) is not None
    for a in names:
        for b in names:
            if a != b:
                p = sim.walk(a, b)
                assert p == list(reversed(sim.walk(b, a)))
    sim.cut_link("n0", "n1")
    long_way = ["n0", "n7", "n6", "n5", "n4", "n3", "n2", "n1"]
    assert sim.run_until(lambda: sim.converged() and sim.walk("n0", "n1") == long_way, 5000) is not None


def test_idle_node_sleeps_between_deadlines():
    sim = MeshSim(["a", "b"])
    sim.run_until(sim.converged, 5000)
    node = sim.nodes["a"]
    now = sim.now()
    node.tick(now)
    assert ticks_diff(node.next_deadline(), now) > 0


def test_probes_share_wake_ups_yet_keep_their_rate():
    # An idle node's CPU is its wake-ups: probes due soon ride along with whatever woke the
    # node (a deadline or a message), so five peers do not cost five timers — while every
    # link is still probed at its interval (never more than 20 % early, never late).
    names = ["a", "b", "c", "d", "e", "f"]
    sim = MeshSim(names, delay={("a", n): 3 + 4 * i for i, n in enumerate(names[1:])})
    sim.run_until(sim.converged, 5000)
    sent = []                           # (t, peer) of a's probes
    apply = sim._apply

    def spy(src, effects):
        if src == "a":
            for e in effects:
                if isinstance(e, SendMessage) and wire.decode(e.data).type == wire.PROBE:
                    sent.append((sim.t, e.peer))
        apply(src, effects)

    sim._apply = spy
    sim.run(20000)
    instants = {t for t, _ in sent}
    assert len(sent) / len(instants) >= 2.0, (len(sent), len(instants))
    for peer in names[1:]:
        ts = [t for t, p in sent if p == peer]
        gaps = [y - x for x, y in zip(ts, ts[1:])]
        assert 250 * 0.7 <= min(gaps) and max(gaps) <= 250 * 1.1, (peer, min(gaps), max(gaps))
        assert len(ts) >= 20000 / 250, (peer, len(ts))


def test_refreshes_that_change_nothing_cost_no_route_computation():
    # Idle wake-ups (issue 14): an LSA refresh, ours or a neighbour's, with the same links and
    # costs runs no SPF. With 16 sites the refreshes alone would be ~1 SPF every 2 s per node.
    sim = MeshSim(["a", "b", "c"], node_kw={"refresh_ms": 2000, "max_age_ms": 8000})
    sim.run_until(sim.converged, 5000)
    sim.run(3000)                       # costs settled
    spf0 = {n: sim.nodes[n].counters["spf_runs"] for n in sim.nodes}
    seq0 = {n: sim.nodes[n].seq for n in sim.nodes}
    sim.run(6500)                       # three refreshes by every node
    assert all(sim.nodes[n].seq >= seq0[n] + 3 for n in sim.nodes), (seq0, sim.nodes)
    assert {n: sim.nodes[n].counters["spf_runs"] for n in sim.nodes} == spf0
