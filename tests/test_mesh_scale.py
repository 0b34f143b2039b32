# Issue 14, must show 6: a 16-site mesh idles within the monitoring budget (per peer and
# direction ≤ 1 packet/s and ≤ 100 B/s, counted by nftables on the WAN; ≤ 2 daemon wake-ups/s
# per node, from the daemon's own counter), every site pair stays reachable, and a link that
# carries a 10 ms ping stream still fails over within 1 s when cut.
import time

import pytest

from lanmesh_lab.failover import PingWatch
from lanmesh_lab.wancount import WanCounters, window

pytestmark = pytest.mark.netns
N = 16


def test_sixteen_sites_idle_within_budget_all_pairs_reachable_and_fail_over(make_lab):
    lab = make_lab(N)
    lab.start_all(timeout=90)
    assert lab.wait_direct(timeout=90), [lab.routes(s) for s in lab.sites[:3]]
    counters = WanCounters(lab)
    bad = lab.unreachable_pairs()
    if bad:                                 # a first ping may race a handshake: ask again
        time.sleep(2)
        bad = lab.unreachable_pairs()
    assert not bad, bad
    time.sleep(3)                           # the pings' echo/handshake traffic is over
    # half an LSA refresh period (60 s): the origins' refreshes are spread over it, so the
    # window sees its share of them
    w = window(lab, 31, counters)
    peers = N - 1
    for name, m in sorted(w.items()):
        assert m["pkts_s"] / peers <= 1.0, (name, m)
        assert m["bytes_s"] / peers <= 100, (name, m)
        assert m["wakeups_s"] <= 2.0, (name, m)
    assert lab.wait_direct(timeout=5)       # nothing flapped while idle
    a, c = lab.sites[0], lab.sites[2]
    watch = PingWatch(lab, a, c)
    time.sleep(1.5)
    t_cut = time.time()
    lab.cut(a, c)
    time.sleep(3)
    watch.stop()
    gap = watch.gap_after(t_cut)
    assert lab.routes(a)[c.name] not in (None, c.name), lab.routes(a)
    assert gap is not None and gap < 1.0, f"outage {gap:.2f} s"
