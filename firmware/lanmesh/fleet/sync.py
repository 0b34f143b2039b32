# Node-side fleet sync: which network document this node runs, and commit-confirmed apply
# (DESIGN §2.4, §5). A pure core: it takes facts and `now` (wrapping ms ticks) and returns
# effects; the agent does the I/O. Documents reach it already verified (signature, schema);
# it decides fleet, ordering, confirm and rollback. The payload is opaque to it.
# MicroPython-compatible: no dataclasses, typing or ipaddress.
from ..ticks import ticks_add, ticks_diff

MAX_REJECTED = 5


# ---- facts (past tense) -------------------------------------------------------------
class DocumentArrived:
    """A document whose signature and schema verified. digest identifies its exact bytes."""
    def __init__(self, fleet, version, payload, digest, window_ms):
        self.fleet = fleet
        self.version = version
        self.payload = payload
        self.digest = digest
        self.window_ms = window_ms


class DocumentRefused:
    """A payload on `net` that failed before the core could judge it (size, JSON, signature,
    schema). version is None when it could not be read."""
    def __init__(self, reason, version=None):
        self.reason = reason
        self.version = version


class ApplySucceeded:
    def __init__(self, version):
        self.version = version


class ApplyFailed:
    def __init__(self, version, reason):
        self.version = version
        self.reason = reason


class RollbackFailed:
    def __init__(self, reason):
        self.reason = reason


class BrokerConnected:
    pass


class BrokerLost:
    pass


class BrokerAcked:
    """The broker acknowledged a publish sent after the apply: it is reachable."""
    pass


class LinksCounted:
    def __init__(self, up, total):
        self.up = up
        self.total = total


# ---- effects (imperative) -----------------------------------------------------------
class Apply:
    def __init__(self, version, payload):
        self.version = version
        self.payload = payload


class RollBack:
    def __init__(self, version, payload, reason):
        self.version = version      # the version going back into service
        self.payload = payload
        self.reason = reason


class SaveLastGood:
    def __init__(self, version, payload):
        self.version = version
        self.payload = payload


class SaveFloor:
    """Persist: versions up to this one are never taken again (the highest ever verified)."""
    def __init__(self, version):
        self.version = version


class Report:
    """Publish the `reported` document now."""
    pass


class _Pending:
    def __init__(self, fact, links_before):
        self.version = fact.version
        self.payload = fact.payload
        self.digest = fact.digest
        self.window_ms = fact.window_ms
        self.links_before = links_before
        self.applied_at = None      # tick when the data plane took it
        self.broker_ok = False
        self.links_fresh = False    # links counted since the apply (older counts prove nothing)


class NodeSync:
    """One node's document state. settle_ms: links get this long after an apply to show
    they survived it before the change is confirmed."""

    def __init__(self, fleet, applied=None, settle_ms=2000, floor=0):
        # applied: (version, payload, digest) the node runs now (last good or local), or None
        # floor: the highest version this node ever verified (persisted; see SaveFloor).
        # Versions only move forward: after a rollback from v11 to v6, a genuine v8 is a
        # downgrade too, and is refused; the fleet heals with a v12.
        self.fleet = fleet
        self.floor = max(floor, applied[0] if applied else 0)
        self.settle_ms = settle_ms
        self.applied = applied
        self.pending = None
        self.rollback = None        # (version, reason) of the last rollback
        self.failed = None          # (version, digest) last refused at apply: not retried
        self.rejected = []          # [(version, reason)], newest last
        self.connected = False
        self.links = (0, 0)

    @property
    def applied_version(self):
        return self.applied[0] if self.applied else None

    def handle(self, fact, now):
        t = type(fact)
        if t is DocumentArrived:
            return self._arrived(fact, now)
        if t is DocumentRefused:
            return self._reject(fact.version, fact.reason)
        if t is LinksCounted:
            self.links = (fact.up, fact.total)
            if self.pending is not None and self.pending.applied_at is not None:
                self.pending.links_fresh = True
            return self._check(now)
        if t is BrokerConnected:
            self.connected = True
            if self.pending is not None and self.pending.applied_at is not None:
                self.pending.broker_ok = True
            return [Report()] + self._check(now)
        if t is BrokerAcked:
            if self.pending is not None and self.pending.applied_at is not None:
                self.pending.broker_ok = True
            return self._check(now)
        if t is BrokerLost:
            self.connected = False
            return []
        if t is ApplySucceeded:
            p = self.pending
            if p is None or p.version != fact.version:
                return []
            p.applied_at = now
            return [Report()]
        if t is ApplyFailed:
            p = self.pending
            if p is None or p.version != fact.version:
                return []
            self.pending = None
            self.failed = (p.version, p.digest)
            return self._reject(p.version, "apply failed: " + fact.reason)
        if t is RollbackFailed:
            v = self.rollback[0] if self.rollback else None
            self.rollback = (v, (self.rollback[1] if self.rollback else "") +
                             "; rollback failed: " + fact.reason)
            return [Report()]
        raise ValueError("NodeSync: unknown fact " + repr(fact))

    def tick(self, now):
        return self._check(now)

    def next_deadline(self):
        p = self.pending
        if p is None or p.applied_at is None:
            return None
        end = ticks_add(p.applied_at, p.window_ms)
        settle = ticks_add(p.applied_at, self.settle_ms)
        if p.broker_ok and p.links_fresh and ticks_diff(settle, end) < 0:
            return settle
        return end

    def reported(self):
        """The core's part of `node/<name>/reported`."""
        rb = None
        if self.rollback is not None:
            rb = {"version": self.rollback[0], "reason": self.rollback[1]}
        return {
            "applied_version": self.applied_version,
            "pending_version": self.pending.version if self.pending else None,
            "rollback": rb,
            "rejected": [{"version": v, "reason": r} for v, r in self.rejected],
        }

    # ---- internals ------------------------------------------------------------------
    def _arrived(self, f, now):
        if f.fleet != self.fleet:
            return self._reject(f.version, "document is for fleet %r, this node is in fleet %r"
                                % (f.fleet, self.fleet))
        # The retained document comes again on every reconnect: the same bytes are no news.
        for known in (self.applied, self.pending and (self.pending.version, None, self.pending.digest),
                      self.failed and (self.failed[0], None, self.failed[1])):
            if known and known[2] == f.digest:
                return []
        if self.applied is not None and f.version <= self.applied[0]:
            return self._reject(f.version, "version %d is not newer than the applied version %d"
                                % (f.version, self.applied[0]))
        if f.version <= self.floor:
            return self._reject(f.version, "version %d is not newer than v%d, the highest this "
                                "node has verified (versions only move forward)"
                                % (f.version, self.floor))
        if self.pending is not None and f.version <= self.pending.version:
            return self._reject(f.version, "version %d is not newer than the pending version %d"
                                % (f.version, self.pending.version))
        # A newer document supersedes a pending one; rollback still goes to `applied`.
        self.pending = _Pending(f, self.links[0])
        self.floor = f.version
        return [SaveFloor(f.version), Report(), Apply(f.version, f.payload)]

    def _reject(self, version, reason):
        entry = (version, reason)
        if self.rejected and self.rejected[-1] == entry:
            return []
        self.rejected.append(entry)
        del self.rejected[:-MAX_REJECTED]
        return [Report()]

    def _links_lost(self, p):
        up, total = self.links
        return p.links_before > 0 and total > 0 and up == 0

    def _check(self, now):
        p = self.pending
        if p is None or p.applied_at is None:
            return []
        since = ticks_diff(now, p.applied_at)
        if (p.broker_ok and p.links_fresh and since >= self.settle_ms
                and not self._links_lost(p)):
            self.applied = (p.version, p.payload, p.digest)
            self.pending = None
            self.rollback = None
            # What was refused before a newer version took effect is history, not news.
            self.rejected = [e for e in self.rejected if e[0] is not None and e[0] > p.version]
            return [SaveLastGood(p.version, p.payload), Report()]
        if since < p.window_ms:
            return []
        secs = p.window_ms // 1000
        if not p.broker_ok:
            reason = "broker not reachable within the %ds confirm window" % secs
        else:
            reason = "all %d mesh links lost after the apply (were %d up)" % (
                self.links[1], p.links_before)
        self.pending = None
        self.failed = (p.version, p.digest)
        if self.applied is None:
            # Nothing to go back to: keep running it, unconfirmed, and say so.
            self.applied = (p.version, p.payload, p.digest)
            self.rollback = (p.version, reason + "; no previous document, kept it")
            return [Report()]
        self.rollback = (p.version, reason)
        return [RollBack(self.applied[0], self.applied[1], reason), Report()]
