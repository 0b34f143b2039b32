"""Issue 4 figures: how exactly the WAN emulator delays, jitters and drops, and what its
userspace stage costs (CPU per packet, lateness) under UDP load.

    .venv/bin/python bench/wanem_accuracy.py [--pings 50] [--loss-pings 1000] [--seconds 3]
"""
import argparse
import json
import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "firmware"))
from lanmesh_lab.sites import Lab  # noqa: E402
from lanmesh_lab.wanem import WanEmulator  # noqa: E402


def ping(lab, a, b, count, interval):
    r = lab.ns.exec(a.router, "ping", "-n", "-c", str(count), "-i", str(interval), "-W", "1",
                    b.wan_ip, check=False, timeout=count * interval + 20)
    rtts = [float(x) for x in re.findall(r"time=([\d.]+) ms", r.stdout)]
    return rtts, 1 - len(rtts) / count


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def udp_load(lab, a, b, rate, seconds):
    srv = lab.ns.popen(b.router, ["iperf3", "-s", "-1", "-B", b.wan_ip],
                       stdout=open(os.devnull, "wb"), stderr=open(os.devnull, "wb"))
    try:
        for _ in range(50):
            r = lab.ns.exec(a.router, "iperf3", "-c", b.wan_ip, "-u", "-b", rate, "-l", "1200",
                            "-t", str(seconds), "--json", check=False, timeout=seconds + 30)
            out = json.loads(r.stdout or "{}")
            if r.returncode == 0 and "sum" in out.get("end", {}):
                return out["end"]["sum"]
            time.sleep(0.1)             # server not listening yet (or busy): try again
        raise RuntimeError(r.stdout[-1000:])
    finally:
        if srv.poll() is None:
            srv.terminate()
        srv.wait(5)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pings", type=int, default=50)
    ap.add_argument("--loss-pings", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=3)
    args = ap.parse_args()
    with Lab(2) as lab:
        a, b = lab.sites
        t0 = time.monotonic()
        w = WanEmulator(lab.ns, lab.wan, seed=7)
        print(f"stage start-up: {time.monotonic() - t0:.2f} s ({w.ipt})")
        try:
            print("\n-- delay: ping RTT vs 2 × per-direction delay, 20 ms interval")
            print(f"{'delay':>6} {'want':>6} {'min':>7} {'median':>7} {'p95':>7} {'err med':>8}")
            for d in (0, 1, 10, 40, 100):
                if d:
                    w.set_link(a, b, delay_ms=d)
                rtts, _ = ping(lab, a, b, args.pings, 0.02)
                med = statistics.median(rtts)
                print(f"{d:>6} {2 * d:>6} {min(rtts):>7.2f} {med:>7.2f} {pct(rtts, 95):>7.2f} "
                      f"{med - 2 * d:>+8.2f}")
            print("\n-- jitter: delay 30 ± J each way; RTT stdev vs theory J·√(2/3)")
            for j, reorder in ((5, False), (10, False), (20, False), (20, True)):
                w.set_link(a, b, delay_ms=30, jitter_ms=j, reorder=reorder)
                rtts, _ = ping(lab, a, b, args.pings * 2, 0.01)
                print(f"J={j:>2} reorder={reorder!s:5}: min {min(rtts):6.2f} max {max(rtts):6.2f} "
                      f"mean {statistics.mean(rtts):6.2f} stdev {statistics.stdev(rtts):5.2f} "
                      f"(theory {j * (2 / 3) ** 0.5:5.2f})")
            w.clear_link(a, b)
            print(f"\n-- loss: {args.loss_pings} pings at 2 ms")
            for p, both in ((10, False), (30, False), (30, True)):
                w.set_link(a, b, loss_pct=p, both_ways=both)
                _, loss = ping(lab, a, b, args.loss_pings, 0.002)
                want = 1 - (1 - p / 100) ** (2 if both else 1)
                print(f"loss {p}% {'each way' if both else 'one way '}: ping loss {loss:6.1%} "
                      f"(expected {want:.1%})")
            w.clear_link(a, b)
            print(f"\n-- stage cost: UDP 1200-byte datagrams for {args.seconds} s, delay 5 ms each way")
            print(f"{'rate':>5} {'pps':>6} {'lost':>6} {'cpu %':>6} {'µs/pkt':>7} {'late mean':>10} "
                  f"{'late max':>9} {'held max':>8} {'q drop':>6}")
            for rate in ("0", "10M", "50M", "100M"):
                w.close()
                w = WanEmulator(lab.ns, lab.wan, seed=7)        # fresh counters per rate
                if rate == "0":
                    # no impairment: the same load does not touch the stage at all
                    u = udp_load(lab, a, b, "50M", args.seconds)
                    print(f"{'50M*':>5} {u['packets'] / args.seconds:>6.0f} {u['lost_percent']:>5.1f}% "
                          f"{'-':>6}  (* no delay configured: bypasses the stage)")
                    continue
                w.set_link(a, b, delay_ms=5)
                cpu0 = w.stats()["cpu_s"]
                u = udp_load(lab, a, b, rate, args.seconds)
                time.sleep(0.1)
                s = w.stats()
                cpu = s["cpu_s"] - cpu0
                n = max(1, s["received"])
                print(f"{rate:>5} {u['packets'] / args.seconds:>6.0f} {u['lost_percent']:>5.1f}% "
                      f"{100 * cpu / args.seconds:>6.1f} {1e6 * cpu / n:>7.1f} {s['late_ms_mean']:>8.2f}ms "
                      f"{s['late_ms_max']:>7.2f}ms {s['held_max']:>8} "
                      f"{s['kernel_queue_dropped'] + s['kernel_user_dropped']:>6}")
        finally:
            w.close()
        print(f"\nload average while measuring: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
