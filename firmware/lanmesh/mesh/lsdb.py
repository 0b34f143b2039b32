# The link-state database: the newest LSA of every node, when each one expires, and the digest
# neighbours compare to notice they differ. Flooding decisions (store / ignore / answer with
# ours / fight back for our own origin) are made here; who to send to is the node's job.
#
# Sequence numbers are 32-bit, compared as plain integers and never wrap (they saturate:
# ≈136 years at one change per second), so no copy ever becomes "newer" by wrapping. A node
# that restarts begins again at 1; when it hears an older incarnation of its own LSA with a
# higher seq (neighbours send their copy back when they get an older one), it jumps past it
# and re-originates (OSPF's "fight back"). If nobody remembers it any more, 1 is accepted as
# new. The node verifies an LSA's origin signature before store() or a fight-back, so only
# the origin itself can move its sequence number.
from ..ticks import ticks_add, ticks_diff
from .wire import Lsa

REFRESH_MS = 60000      # re-originate our LSA this often even without change (each one
                        # wakes every other node: at 16 sites, 30 s cost 0.5 wake-ups/s)
MAX_AGE_MS = 180000     # an LSA not refreshed for this long is dropped (its node is gone)

NEWER = "newer"         # stored: flood it on
SAME = "same"           # duplicate: drop
OLDER = "older"         # we hold a newer copy: send ours back to whoever sent this
OWN = "own"             # our own LSA, newer than what we are advertising: re-originate past it
EXPIRED = "expired"     # arrived already at max age: drop


def _hash(data):
    h = 0x811C9DC5
    for c in data:                  # FNV-1a ...
        h = ((h ^ c) * 0x01000193) & 0xFFFFFFFF
    h ^= h >> 16                    # ... then a murmur3 finaliser, so that sums of entry
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF   # hashes do not cancel (raw FNV sums do when two
    h ^= h >> 13                    # seqs move by one together)
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


class Lsdb:
    __slots__ = ("me", "lsas", "expires", "max_age", "_digest", "version")

    def __init__(self, me, max_age_ms=MAX_AGE_MS):
        self.me = me
        self.lsas = {}          # origin -> Lsa
        self.expires = {}       # origin -> local tick
        self.max_age = max_age_ms
        self._digest = None
        self.version = 0        # bumped on every content change (routes must be recomputed)

    def get(self, origin):
        return self.lsas.get(origin)

    def install_own(self, lsa, now):
        self._store(lsa, now, 0)

    def classify(self, lsa):
        """NEWER/SAME/OLDER/OWN/EXPIRED for a received LSA; stores nothing (see store)."""
        if lsa.age_s * 1000 >= self.max_age:
            return EXPIRED
        have = self.lsas.get(lsa.origin)
        if lsa.origin == self.me:
            return OWN if have is None or lsa.seq > have.seq else (SAME if lsa.seq == have.seq else OLDER)
        if have is None or lsa.seq > have.seq:
            return NEWER
        return SAME if lsa.seq == have.seq else OLDER

    def store(self, lsa, now):
        """Keep a received LSA that classify() called NEWER (and whose signature verified)."""
        self._store(lsa, now, lsa.age_s * 1000)

    def _store(self, lsa, now, age_ms):
        self.lsas[lsa.origin] = Lsa(lsa.origin, lsa.seq, dict(lsa.links), 0, lsa.sig)
        self.expires[lsa.origin] = ticks_add(now, self.max_age - age_ms)
        self._changed()

    def remove(self, origin):
        if origin in self.lsas:
            del self.lsas[origin]
            del self.expires[origin]
            self._changed()

    def _changed(self):
        self._digest = None
        self.version += 1

    def expire(self, now):
        """Drop LSAs past max age (never our own: the node refreshes it). Returns the origins dropped."""
        gone = [o for o, t in self.expires.items() if o != self.me and ticks_diff(now, t) >= 0]
        for o in gone:
            self.remove(o)
        return gone

    def next_deadline(self):
        d = None
        for o, t in self.expires.items():
            if o != self.me and (d is None or ticks_diff(t, d) < 0):
                d = t
        return d

    def outgoing(self, origin, now):
        """A copy to send, with the age it has reached here (so expiry does not restart)."""
        lsa = self.lsas[origin]
        left = ticks_diff(self.expires[origin], now)
        age = 0 if origin == self.me else max(0, (self.max_age - left) // 1000)
        return Lsa(origin, lsa.seq, lsa.links, age, lsa.sig)

    def origins(self):
        return sorted(self.lsas)

    def summary(self):
        return [(o, self.lsas[o].seq) for o in sorted(self.lsas)]

    def digest(self):
        """32-bit fingerprint of {(origin, seq)}: equal on two nodes iff (almost surely) in sync."""
        if self._digest is None:
            d = 0
            for o, lsa in self.lsas.items():
                d = (d + _hash(o.encode() + lsa.seq.to_bytes(4, "big"))) & 0xFFFFFFFF
            self._digest = d
        return self._digest

    def link_table(self):
        """{origin: {neighbor: cost}} for path computation."""
        return {o: lsa.links for o, lsa in self.lsas.items()}
