# Demand-mode liveness of a link that carries its peer's traffic directly (issue 14). What
# WireGuard received from the peer is the proof of life (its rx counter, read for all peers in
# one dump per sample): a link in use costs no probe at all. An idle link is asked every
# IDLE_ECHO_MS (that is also how its RTT, the cost, is measured), and one that sent without
# hearing back is asked at once and every FAST_MS: with an ICMPv6 echo *inside the tunnel* to
# the peer's overlay address. WireGuard authenticates it both ways and the peer's
# kernel answers, so the far end pays no wake-up; the answer shows up as rx (and, read from
# the echo socket at the next sample, as an RTT with the kernel's receive timestamp).
# Pure: counters, echo replies and `now` in; echoes to send and a verdict out.
from ..ticks import ticks_add, ticks_diff

IDLE_MS = 1000          # sample cadence while every watched link is idle
BUSY_MS = 100           # ... while one carries traffic (a cut must be seen within ~0.2 s)
FAST_MS = 50            # ... while one is suspect (echoes go this often)
IDLE_ECHO_MS = 4000     # an idle link is asked this often (by each end: ~62 B/s each way)
SILENCE_MS = 100        # sent but heard nothing for this long: suspect
LOST_MS = 200           # suspect and still silent this long (or 3 x RTT + 50 ms): lost
BUSY_BYTES = 1024       # rx + tx growth per sample beyond this: the link carries traffic
BUSY_HOLD_MS = 1000     # ... and is sampled at BUSY_MS this long after the last such sample
COST_ECHO_MS = 10000    # a busy link still measures its RTT this often
ECHO_KEEP = 8


class Watch:
    __slots__ = ("peer", "rx", "tx", "heard", "sent_unheard", "suspect_since", "busy",
                 "busy_until", "last_echo", "seq", "outstanding", "_jitter")

    def __init__(self, peer, now, rx, tx, salt=0):
        self.peer = peer
        self.rx = rx
        self.tx = tx
        self.heard = now                # last sample that showed rx growth
        self.sent_unheard = False       # tx grew since we last heard from the peer
        self.suspect_since = None
        self.busy = False
        self.busy_until = None
        self.last_echo = now            # no echo on the first sample: a probe just answered
        self.seq = salt & 0xFFFF
        self.outstanding = {}           # echo seq -> sent tick
        self._jitter = salt % 1000 - 500    # idle echoes of different links spread out

    def counters(self, rx, tx, now, rtt_ms=None):
        """A new sample of WireGuard's counters for this peer. True: the link is lost.
        rtt_ms: the link's RTT, so that a long link is given 3 x RTT + 50 ms to answer."""
        if rx < self.rx or tx < self.tx:            # the device was recreated: no information
            self.rx, self.tx = rx, tx
            return False
        grew_rx, grew_tx = rx - self.rx, tx - self.tx
        self.rx, self.tx = rx, tx
        # Busy is held for a while: the sample that straddles a cut shows half the growth
        # (rx until the cut, tx after), which a 10 ms ping puts right at BUSY_BYTES; judged
        # idle, the cut was looked at again only 1 s later (1.3 s outages, 3 cuts in 8).
        if grew_rx + grew_tx > BUSY_BYTES:
            self.busy_until = ticks_add(now, BUSY_HOLD_MS)
        self.busy = self.busy_until is not None and ticks_diff(self.busy_until, now) > 0
        if grew_rx:
            self.heard = now
            self.sent_unheard = False
            self.suspect_since = None
            return False
        if grew_tx:
            self.sent_unheard = True
        if self.suspect_since is not None:
            return ticks_diff(now, self.suspect_since) >= max(LOST_MS, 3 * (rtt_ms or 0) + 50)
        if self.sent_unheard and ticks_diff(now, self.heard) >= SILENCE_MS:
            self.suspect_since = now
        return False

    def echo_due(self, now):
        """A sequence number to send an echo with now, or None."""
        since = ticks_diff(now, self.last_echo)
        if self.suspect_since is not None:
            due = since >= FAST_MS - 5
        elif self.busy:
            due = since >= COST_ECHO_MS
        else:
            due = since >= IDLE_ECHO_MS + self._jitter
        if not due:
            return None
        self.last_echo = now
        self.seq = (self.seq + 1) & 0xFFFF
        self.outstanding[self.seq] = now
        if len(self.outstanding) > ECHO_KEEP:
            del self.outstanding[min(self.outstanding, key=lambda s: ticks_diff(self.outstanding[s], now))]
        return self.seq

    def answered(self, seq):
        """An echo reply for `seq`: True if it answers one of ours (its RTT may be used)."""
        return self.outstanding.pop(seq, None) is not None

    def cadence_ms(self):
        if self.suspect_since is not None:
            return FAST_MS
        # sent without hearing back: look again soon. A cut halves a busy link's growth (only
        # tx grows), which can fall under BUSY_BYTES: at the idle cadence that cut took 1.3 s.
        return BUSY_MS if self.busy or self.sent_unheard else IDLE_MS
