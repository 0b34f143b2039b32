"""Issue 4 figures: failover and recovery times of the self-healing mesh.

Four sites on wireguard-go in namespaces; a LAN host pings a remote LAN host every 10 ms;
the direct a↔c WAN path is cut N times. Failover = the longest gap between ping replies
after the cut (what a user's traffic sees). Recovery = restore → a routes c directly again.

    .venv/bin/python bench/failover.py [--cuts 10] [REV ...]   (revisions side by side; . = this tree)
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "firmware"))
from lanmesh_lab.failover import PingWatch  # noqa: E402
from lanmesh_lab.sites import Lab  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from revisions import firmware_trees  # noqa: E402


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cuts", type=int, default=10)
    ap.add_argument("revs", nargs="*", default=["."], help="revisions side by side (. = this tree)")
    args = ap.parse_args()
    with firmware_trees(args.revs) as trees:
        for rev, firmware in trees:
            print(f"== {rev}", flush=True)
            run(firmware, args.cuts)


def run(firmware, cuts):
    gaps, recoveries = [], []
    with Lab(4) as lab:
        lab.start_all(timeout=30, extra_env={"PYTHONPATH": firmware})
        a, c = lab.sites[0], lab.sites[2]
        assert lab.wait_direct(timeout=30)
        for i in range(cuts):
            watch = PingWatch(lab, a, c)
            # the flow runs 2 s before the cut (a link idle until <1 s before is sampled at the
            # idle cadence: ~1.3 s); cuts land at different points of the sampling cycle
            time.sleep(2.0 + 0.037 * i)
            t_cut = time.time()
            lab.cut(a, c)
            time.sleep(3)
            t_restore = time.time()
            lab.restore(a, c)
            ok = lab.wait_routes(a, {c.name: c.name}, timeout=30)
            recoveries.append(time.time() - t_restore if ok else float("inf"))
            watch.stop()
            gap = watch.gap_after(t_cut, until=t_restore)
            gaps.append(gap if gap is not None else float("inf"))
            print(f"cut {i + 1}: outage {gaps[-1] * 1000:.0f} ms, back direct after {recoveries[-1]:.1f} s", flush=True)
            lab.wait_direct(timeout=30)
    print(f"failover (cut → traffic via relay), {len(gaps)} cuts: p50 {pct(gaps, 50) * 1000:.0f} ms, "
          f"p95 {pct(gaps, 95) * 1000:.0f} ms, max {max(gaps) * 1000:.0f} ms")
    print(f"recovery (restore → direct route): p50 {statistics.median(recoveries):.1f} s, "
          f"max {max(recoveries):.1f} s")


if __name__ == "__main__":
    main()
