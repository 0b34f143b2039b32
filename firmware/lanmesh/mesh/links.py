# One peer's link monitor: when to probe, which acks match, smoothed RTT and loss, whether the
# link is up, and the cost it advertises. Pure: the node feeds it `now` and acks; it answers
# with probe sequence numbers to send and records its own state changes.
from ..ticks import ticks_add, ticks_diff

DEFAULT_INTERVAL_MS = 250
DOWN_AFTER = 3          # consecutive missed probes: link down (3 x 250 ms -> failover < 1 s)
UP_AFTER = 3            # consecutive answered probes before a link counts as up again
UP_AFTER_MAX = 24       # flap damping: doubled per quick flap, capped (~6 s at 250 ms)
FLAP_WINDOW_MS = 10000  # going down sooner than this after coming up counts as a flap
STABLE_MS = 30000       # up this long clears the flap penalty
LOSS_WINDOW = 20        # probes
RTT_MEDIAN_OF = 3       # the smoothed RTT takes the median of this many samples
LOW_OF = 3              # the cost's RTT: the lowest of this many samples taken while idle
HOP_COST = 5            # every hop costs this much on top of RTT: direct wins near-ties
COST_SWITCH_MS = 3      # advertised cost moves only if the new value differs by more
COST_SWITCH_PCT = 25    # ... than both this many ms and this percentage
MAX_COST = 0xFFFF
TIMEOUT_MAX_MS = 3000
LATE_KEEP = 8           # timed-out probes remembered for late acks


class Link:
    __slots__ = ("peer", "interval", "seq", "next_probe_at", "outstanding", "srtt8", "up",
                 "good_run", "miss_run", "up_needed", "history", "probes", "cost", "changed",
                 "up_since", "_rand", "late_acks", "flaps", "expired", "recent", "lows", "low")

    def __init__(self, peer, now, interval_ms=DEFAULT_INTERVAL_MS, salt=1):
        self.peer = peer
        self.interval = interval_ms
        self.seq = 0
        self._rand = (salt & 0x7FFFFFFF) or 1
        # first probe soon but spread out, so a fresh node does not burst all peers at once
        self.next_probe_at = ticks_add(now, self._jitter() % max(1, interval_ms // 2 + 1)
                                       if interval_ms > 1 else 0)
        self.outstanding = {}   # seq -> sent tick
        self.expired = {}       # recently timed-out seq -> sent tick: late acks still teach RTT
        self.srtt8 = None       # smoothed RTT x 8 (ms), integer EWMA with alpha 1/8
        self.recent = []        # the last RTT_MEDIAN_OF raw samples (ms)
        self.lows = []          # the last LOW_OF samples taken while the link was idle (ms)
        self.low = None         # the RTT the cost is made of: see sample()
        self.up = False
        self.good_run = 0
        self.miss_run = 0
        self.up_needed = UP_AFTER
        self.history = 0        # bit per probe outcome, 1 = lost, newest in bit 0
        self.probes = 0         # outcomes recorded in history (≤ LOSS_WINDOW)
        self.cost = None        # advertised cost while up, else None
        self.changed = False    # up/down or advertised cost moved since take_change()
        self.up_since = None
        self.late_acks = 0
        self.flaps = 0

    # ---- what the node reads ----------------------------------------------------------------
    def rtt_ms(self):
        return None if self.srtt8 is None else (self.srtt8 + 4) // 8

    def loss_pct(self):
        return self._lost() * 100 // self.probes if self.probes else 0

    def _lost(self):
        lost = 0
        h = self.history
        for _ in range(self.probes):
            lost += h & 1
            h >>= 1
        return lost

    def forgive_loss(self):
        """The far end saw this link go down and come back: what this end lost meanwhile was
        the outage, not the link that is up now (as on going up). Without this, a standby
        that rode out a cut (probed every 2 s, too few misses to go down) kept the loss in
        its cost for a whole window (40 s) and traffic stayed on a relay after the heal."""
        if self.up and self.history:
            self.history = 0
            self.probes = min(LOSS_WINDOW, self.good_run)
            self._update_cost()

    def take_change(self):
        c = self.changed
        self.changed = False
        return c

    def timeout_ms(self):
        # a probe is missed if unanswered within 60 % of the interval (3 x RTT on long links):
        # three misses then take < 1 s from the cut at 250 ms
        rtt = self.rtt_ms()
        if rtt is None:
            return TIMEOUT_MAX_MS   # no sample yet: wait long enough to learn a slow link's RTT
        return min(TIMEOUT_MAX_MS, max(self.interval * 3 // 5, 3 * rtt + 50))

    def next_deadline(self):
        d = self.next_probe_at
        t = self.timeout_ms()
        for sent in self.outstanding.values():
            due = ticks_add(sent, t)
            if ticks_diff(due, d) < 0:
                d = due
        return d

    # ---- what the node feeds ----------------------------------------------------------------
    def tick(self, now, slack=0):
        """Expire unanswered probes; return a sequence number to probe with, or None. A
        probe due within `slack` ms goes now: the node is awake anyway (see MeshNode)."""
        t = self.timeout_ms()
        for seq in sorted(self.outstanding):
            if ticks_diff(now, self.outstanding[seq]) >= t:
                self.expired[seq] = self.outstanding.pop(seq)
                self._outcome(True, now)
        while len(self.expired) > LATE_KEEP:
            del self.expired[min(self.expired)]
        if ticks_diff(self.next_probe_at, now) > slack:
            return None
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        self.outstanding[self.seq] = now
        j = self._jitter() % (self.interval // 5 + 1) - self.interval // 10  # +-10 %
        self.next_probe_at = ticks_add(now, max(1, self.interval + j))
        return self.seq

    def acked(self, seq, now, held=0):
        """An ack for `seq` arrived. Unknown or already-expired sequence numbers are ignored.
        held: ms of the round trip spent in hosts, not on the path (the ack's hold, and how
        long ago our kernel received the ack)."""
        sent = self.outstanding.pop(seq, None)
        if sent is None:
            self.late_acks += 1
            sent = self.expired.pop(seq, None)
            if sent is not None:        # already counted lost, but the RTT is real
                self._sample(ticks_diff(now, sent) - held)
            return
        self._sample(ticks_diff(now, sent) - held)
        self._outcome(False, now)

    def sample(self, ms, loaded=False):
        """An RTT measured another way (an echo inside the tunnel, see liveness.py).
        loaded: the link carried traffic meanwhile, so queueing of our own flows may be in it."""
        self._sample(ms, loaded)
        if self.up:
            self._update_cost()

    def lost(self, now):
        """The link's traffic monitor saw it go silent (liveness.py): down now."""
        if self.up:
            self._go_down(now)

    def quiet(self):
        """Stop probing (the traffic monitor watches the link): forget probes in flight,
        which would otherwise expire as misses."""
        self.outstanding.clear()
        self.expired.clear()
        self.history = 0
        self.probes = 0

    def _sample(self, ms, loaded=False):
        # The cost's RTT is the lower envelope of idle samples: a link's own traffic queues
        # and delays them (a saturating flow would move itself onto a relay, then back), so
        # a sample taken under load may lower the cost but never raise it.
        ms = max(0, ms)
        if not loaded:
            self.lows.append(ms)
            if len(self.lows) > LOW_OF:
                del self.lows[0]
            self.low = min(self.lows)
        elif self.low is None or ms < self.low:
            self.low = ms
        # A median of 3 before the EWMA: one probe made late by a stall (a busy host, a
        # scheduler hiccup) never reaches the smoothed RTT, two in a row do.
        self.recent.append(ms)
        if len(self.recent) > RTT_MEDIAN_OF:
            del self.recent[0]
        ms = sorted(self.recent)[len(self.recent) // 2]
        if self.srtt8 is None:
            self.srtt8 = ms * 8
        else:
            self.srtt8 += ms - (self.srtt8 >> 3)

    def set_interval(self, interval_ms):
        self.interval = max(1, int(interval_ms))

    # ---- internals --------------------------------------------------------------------------
    def _jitter(self):
        # tiny LCG seeded per link: deterministic, yet nodes do not probe in lockstep
        self._rand = (self._rand * 1103515245 + 12345) & 0x7FFFFFFF
        return self._rand >> 8

    def _outcome(self, lost, now):
        self.history = ((self.history << 1) | (1 if lost else 0)) & ((1 << LOSS_WINDOW) - 1)
        self.probes = min(LOSS_WINDOW, self.probes + 1)
        if lost:
            self.good_run = 0
            self.miss_run += 1
            if self.up and self.miss_run >= DOWN_AFTER:
                self._go_down(now)
        else:
            self.miss_run = 0
            self.good_run += 1
            if not self.up and self.good_run >= self.up_needed:
                self._go_up(now)
            elif self.up:
                if self.up_since is not None and ticks_diff(now, self.up_since) >= STABLE_MS:
                    self.up_needed = UP_AFTER
                self._update_cost()

    def _go_up(self, now):
        self.up = True
        self.up_since = now
        # what was lost while down is not loss of the link that is now up: the window
        # restarts from the run of answers that brought it up
        self.history = 0
        self.probes = min(LOSS_WINDOW, self.good_run)
        self.cost = self.raw_cost()
        self.changed = True

    def _go_down(self, now):
        if self.up_since is not None and ticks_diff(now, self.up_since) < FLAP_WINDOW_MS:
            self.up_needed = min(UP_AFTER_MAX, self.up_needed * 2)
            self.flaps += 1
        self.up = False
        self.cost = None
        self.good_run = 0
        self.changed = True

    def raw_cost(self):
        """Current unsticky cost: RTT + per-hop cost + 1 per % loss. One lost probe in the
        loss window is forgiven (a stall must not move routes); a second counts both."""
        loss = max(0, self._lost() - 1) * 100 // self.probes if self.probes else 0
        return max(1, min(MAX_COST, (self.low or 0) + HOP_COST + loss))

    def _update_cost(self):
        new = self.raw_cost()
        delta = abs(new - self.cost)
        if delta > COST_SWITCH_MS and delta * 100 > self.cost * COST_SWITCH_PCT:
            self.cost = new
            self.changed = True
