# A link's advertised cost must settle at its true value even when its first samples were
# bad (probes lost while the first WireGuard handshake completes): a cost stuck high would
# route a healthy direct link through a relay forever.
from lanmesh.mesh.links import Link
from lanmesh.ticks import TICKS_PERIOD, ticks_add, ticks_diff


def test_cost_recovers_from_lossy_start():
    now = TICKS_PERIOD - 3000
    link = Link("b", now, 250)
    sent = {}
    for step in range(4000):                       # 4000 × 5 ms = 20 s
        now = ticks_add(now, 5)
        seq = link.tick(now)
        if seq is not None:
            sent[seq] = now
        for s, t in list(sent.items()):
            # first 2 s: a third of the probes are lost, the rest take 40 ms; then 1 ms RTT
            if step < 400 and s % 3 == 0:
                del sent[s]
            elif ticks_diff(now, t) >= (40 if step < 400 else 1):
                link.acked(s, now)
                del sent[s]
        link.take_change()
    assert link.up
    assert link.cost <= 15, link.cost  # true cost 11 (RTT ~6 + hop 5); a stale start must not stick
