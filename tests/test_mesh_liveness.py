# Demand-mode link monitoring (issue 14, mesh/liveness.py): links that carry traffic are
# proven alive by WireGuard's rx counters and cost no probe; idle links are asked with an
# in-tunnel echo every 3 s; a link that sent without hearing back is asked at once and is
# down within ~0.3 s; samples taken under load never raise a link's cost.
from lanmesh.mesh import wire
from lanmesh.mesh.links import Link
from lanmesh.mesh.liveness import Watch, BUSY_MS, FAST_MS, IDLE_MS, LOST_MS
from lanmesh.mesh.node import Sample, SendEcho, SendMessage
from test_mesh_sim import MeshSim

T0 = 1000


def test_traffic_is_proof_of_life_and_silence_after_sending_is_not():
    w = Watch("b", T0, 0, 0)
    rx = tx = 0
    now = T0
    for _ in range(50):                         # 5 s of a flow both ways: no echo at all
        now, rx, tx = now + BUSY_MS, rx + 5000, tx + 5000
        assert not w.counters(rx, tx, now)
        assert w.echo_due(now) is None and w.cadence_ms() == BUSY_MS
    # cut: we keep sending, nothing comes back
    lost_at = None
    for i in range(10):
        now, tx = now + (FAST_MS if w.suspect_since is not None else BUSY_MS), tx + 5000
        if w.counters(rx, tx, now):
            lost_at = now
            break
        if w.suspect_since is not None:
            assert w.echo_due(now) is not None and w.cadence_ms() == FAST_MS
    assert lost_at is not None and lost_at - (T0 + 50 * BUSY_MS) <= 400


def _flowing(w, per_sample, samples=20):
    """A flow both ways at per_sample bytes per BUSY_MS sample. → (now, rx, tx)."""
    rx = tx = 0
    now = T0
    for _ in range(samples):
        now, rx, tx = now + BUSY_MS, rx + per_sample, tx + per_sample
        w.counters(rx, tx, now)
    return now, rx, tx


def _lost_after(w, now, rx, tx, per_sample, limit_ms=2000):
    """Only tx grows from now on, sampled at the watch's own cadence: when it says lost."""
    start = now
    while now - start < limit_ms:
        now, tx = now + w.cadence_ms(), tx + per_sample
        if w.counters(rx, tx, now):
            return now
    return None


def test_a_cut_that_halves_the_growth_is_still_looked_at_soon():
    # A 10 ms ping both ways is ~550 B per 100 ms sample each way: busy. Cut just after a
    # sample that came a little early: the next one shows only our own tx (under
    # BUSY_BYTES), too soon after the last rx to be suspect. It must not fall back to the
    # idle cadence (the cut was then seen 1.3 s late, 1 in 4 cuts in bench/failover.py).
    w = Watch("b", T0, 0, 0)
    now, rx, tx = _flowing(w, 550)
    assert w.cadence_ms() == BUSY_MS
    now, tx = now + BUSY_MS - 10, tx + 550      # a sample 10 ms early, nothing heard
    assert not w.counters(rx, tx, now) and w.suspect_since is None
    assert w.cadence_ms() == BUSY_MS
    t_cut = now - BUSY_MS + 10
    lost_at = _lost_after(w, now, rx, tx, 550)
    assert lost_at is not None and lost_at - t_cut <= 500, lost_at
    # an idle link that sent without hearing back is looked at again soon, busy or not
    quiet = Watch("c", T0, 0, 0)
    assert not quiet.counters(0, 300, T0 + 50) and not quiet.busy
    assert quiet.cadence_ms() == BUSY_MS


def test_the_sample_that_straddles_a_cut_keeps_the_busy_cadence():
    # Seen in bench/failover.py: ~768 B per 100 ms each way, the cut lands mid-sample, that
    # sample shows rx until the cut and tx all along: 1,024 B, not "busy" by the bytes. It
    # must keep the busy cadence (it was sampled 1 s later: 1.3 s outages).
    w = Watch("b", T0, 0, 0)
    now, rx, tx = _flowing(w, 768)
    now, rx, tx = now + BUSY_MS, rx + 256, tx + 768      # the straddling sample
    assert not w.counters(rx, tx, now) and w.cadence_ms() == BUSY_MS
    t_cut = now - 70
    lost_at = _lost_after(w, now, rx, tx, 768)
    assert lost_at is not None and lost_at - t_cut <= 500, lost_at
    # once the flow is over, the idle cadence comes back within a second
    w2 = Watch("c", T0, 0, 0)
    w2.counters(5000, 5000, T0 + BUSY_MS)
    assert w2.cadence_ms() == BUSY_MS
    w2.counters(5000, 5000, T0 + 1200)
    assert w2.cadence_ms() == IDLE_MS


def test_one_way_flow_is_cleared_by_the_echo_answer():
    w = Watch("b", T0, 0, 0)
    now, tx, rx = T0, 0, 0
    for _ in range(30):
        now, tx = now + BUSY_MS, tx + 50000     # a UDP stream out, nothing back
        w.counters(rx, tx, now)
        seq = w.echo_due(now)
        if seq is not None:                     # the peer's kernel answers: rx grows
            rx += 96
            assert w.answered(seq)
        assert w.suspect_since is None or now - w.suspect_since < LOST_MS


def test_idle_link_is_asked_every_few_seconds_and_a_reset_counter_is_no_news():
    w = Watch("b", T0, 100, 100)
    sent = []
    now = T0
    for _ in range(30):                         # 30 s idle, sampled every second
        now += IDLE_MS
        assert not w.counters(100, 100, now)
        if w.echo_due(now) is not None:
            sent.append(now)
    assert 6 <= len(sent) <= 9, sent            # every 4 s, ± jitter
    # we sent, then wireguard-go restarted (counters went back): that is not the peer's voice
    heard = w.heard
    w.counters(100, 200, now + 10)
    assert not w.counters(5, 5, now + 20) and w.heard == heard
    w.counters(5, 300, now + 200)               # sending again, still nothing heard
    assert w.suspect_since is not None


def test_loaded_samples_lower_the_cost_but_never_raise_it():
    link = Link("b", T0, 250)
    link.up, link.cost = True, 15
    for _ in range(3):
        link.sample(10)
    for _ in range(20):
        link.sample(300, loaded=True)           # queueing behind our own flow
    assert link.cost == 15
    link.sample(2, loaded=True)
    assert link.low == 2
    for _ in range(3):
        link.sample(80)                         # idle, the path really got slower
    assert link.cost == 85


class CountedSim(MeshSim):
    """MeshSim plus WireGuard counters and kernel-answered echoes, sampled like the daemon."""

    def __init__(self, names, **kw):
        super().__init__(names, **kw)
        self.rx = {(a, b): 0 for a in names for b in names if a != b}   # at a, from b
        self.tx = dict(self.rx)
        self.flows = set()
        self.echoes = {n: [] for n in names}
        self.next_sample = {n: 0 for n in names}
        self.sent_echoes = {n: 0 for n in names}

    def _apply(self, src, effects):
        rest = []
        for e in effects:
            if isinstance(e, SendEcho):
                self.sent_echoes[src] += 1
                self.tx[(src, e.peer)] += 96
                if (src, e.peer) not in self.cut:
                    self.rx[(e.peer, src)] += 96
                    self.tx[(e.peer, src)] += 96
                    self.rx[(src, e.peer)] += 96
                    self.echoes[src].append((e.peer, e.seq, 2 * self.delay.get((src, e.peer), 5)))
            else:
                if isinstance(e, SendMessage) and e.data[2] not in (wire.PROBE, wire.ACK):
                    self.tx[(src, e.peer)] += len(e.data)
                    if (src, e.peer) not in self.cut:
                        self.rx[(e.peer, src)] += len(e.data)
                rest.append(e)
        super()._apply(src, rest)

    def run(self, ms):
        end = self.t + ms
        while self.t < end:
            step = min(end - self.t, 10)
            super().run(step)
            for a, b in self.flows:
                for x, y in ((a, b), (b, a)):
                    self.tx[(x, y)] += 1500
                    if (x, y) not in self.cut:
                        self.rx[(y, x)] += 1500
            for n in self.names:
                if self.t >= self.next_sample[n]:
                    c = {p: (self.rx[(n, p)], self.tx[(n, p)]) for p in self.names if p != n}
                    echoes, self.echoes[n] = self.echoes[n], []
                    self.deliver(n, Sample(c, echoes))
                    self.next_sample[n] = self.t + self.nodes[n].sample_ms()


def test_watched_links_send_no_probes_and_a_busy_cut_fails_over_fast():
    sim = CountedSim(["a", "b", "c"])
    assert sim.run_until(sim.converged, 5000) is not None
    sim.run(3000)
    assert set(sim.nodes["a"].watches) == {"b", "c"}
    probes0 = sim.tx_msgs["a"]
    sim.run(10000)                              # 10 s idle: echoes, no path probes
    assert sim.tx_msgs["a"] - probes0 <= 3      # (an LSA refresh at most)
    assert 4 <= sim.sent_echoes["a"] <= 16, sim.sent_echoes
    sim.flows.add(("a", "c"))
    sim.run(1000)
    assert sim.nodes["a"].sample_ms() == BUSY_MS
    t_cut = sim.t
    sim.cut_link("a", "c")
    took = sim.run_until(lambda: sim.hop("a", "c") == "b", 2000)
    assert took is not None and took <= 500, took
    # the cut link is probed again (a standby now), and comes back when healed
    assert "c" not in sim.nodes["a"].watches
    sim.heal_link("a", "c")
    assert sim.run_until(lambda: sim.hop("a", "c") == "c", 15000) is not None
    assert sim.t - t_cut < 20000


def test_ack_hold_and_kernel_age_are_taken_off_the_rtt():
    # a slow router answering in Python must not make its links look long (issue 14): the
    # answer says how long it was held, our kernel says how long the ack waited for us
    link = Link("b", T0, 250)
    now, seq = T0, None
    while seq is None:
        now += 10
        seq = link.tick(now)
    link.acked(seq, now + 90, held=80)
    assert link.rtt_ms() == 10 and link.low == 10
