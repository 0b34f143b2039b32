# What link monitoring costs a node, per revision side by side in one run (issue 14): for 4,
# 8 and 16 sites in namespaces (uapi backend), idle and with traffic, the packets and bytes each
# router sends over the WAN per peer (nftables counters in the WAN namespace), its daemon's
# wake-ups/s and CPU, and whether every site pair stays reachable.
#   .venv/bin/python bench/control_traffic.py be2a802 .     ("." = this tree; default ".")
#   --sites 4,8,16  --seconds 20
# "With traffic": every site's LAN host pings the next site's every 10 ms (a ring), so every
# node has two links that carry traffic; the WAN counts then include that data.
import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(ROOT, "firmware"))

from lanmesh_lab.sites import Lab                       # noqa: E402
from lanmesh_lab.wancount import WanCounters, window    # noqa: E402
from revisions import firmware_trees                    # noqa: E402


def run(firmware, n, seconds):
    with Lab(n) as lab:
        lab.start_all(timeout=90, extra_env={"PYTHONPATH": firmware})
        direct = lab.wait_direct(timeout=90)
        counters = WanCounters(lab)
        bad = lab.unreachable_pairs()
        time.sleep(4)
        idle = window(lab, seconds, counters)
        pings = [lab.ns.popen(s.host, ["ping", "-q", "-i", "0.01", lab.sites[(i + 1) % n].host4],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for i, s in enumerate(lab.sites)]
        time.sleep(2)
        busy = window(lab, seconds, counters)
        for p in pings:
            p.terminate()
        return direct, bad, idle, busy


def summary(w, peers):
    def med(k):
        return statistics.median(m[k] for m in w.values())
    return (f"{med('pkts_s') / peers:5.2f} pkt/s {med('bytes_s') / peers:6.0f} B/s per peer, "
            f"{med('path_pkts_s') / peers:4.2f} probe pkt/s per peer, "
            f"{med('wakeups_s'):5.1f} wake-ups/s, daemon CPU {med('cpu_pct'):5.2f} % "
            f"({med('cpu_pct') / peers:.3f} %/peer), max wake-ups {max(m['wakeups_s'] for m in w.values()):.1f}/s, "
            f"{med('sample_ms'):.2f} ms per counter sample")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("revs", nargs="*", default=["."])
    ap.add_argument("--sites", default="4,8,16")
    ap.add_argument("--seconds", type=float, default=20)
    args = ap.parse_args()
    with firmware_trees(args.revs) as trees:
        print("per node (median over nodes), each way; x86-64, uapi (wireguard-go), namespaces")
        for n in (int(x) for x in args.sites.split(",")):
            for rev, fw in trees:
                direct, bad, idle, busy = run(fw, n, args.seconds)
                print(f"{n:2d} sites {rev:>8}: all direct {direct}, unreachable pairs {len(bad)}", flush=True)
                print(f"   idle : {summary(idle, n - 1)}", flush=True)
                print(f"   ping : {summary(busy, n - 1)}", flush=True)


if __name__ == "__main__":
    main()
