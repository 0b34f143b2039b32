"""Issue 2 figures: time from `lanmesh run` to the first LAN-to-LAN ping (3 sites, median
of N), and the idle daemon's RSS and CPU over a window, per node.

    .venv/bin/python bench/startup_idle.py [--runs 5] [--idle 60]
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "firmware"))
from lanmesh.lab.sites import Lab  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")


def proc_tree(pid):
    """pid and its children (the daemon's wireguard-go is reported separately)."""
    kids = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    kids.append(int(p))
            except OSError:
                pass
    return kids


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


HEAVY = ("libcrypto", "libssl", "_ssl.", "_rust.abi3.so")   # OpenSSL, cryptography


def heavy_libs(pid):
    """Which of the libraries issue 2 removed from the daemon are mapped again."""
    with open(f"/proc/{pid}/maps") as f:
        maps = f.read()
    return [lib for lib in HEAVY if lib in maps]


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def python_pid(lab_proc):
    # `ip netns exec` execs the command, so the Popen pid is the daemon itself
    return lab_proc.pid


def startup(runs):
    times = []
    for _ in range(runs):
        with Lab(3) as lab:
            lab.write_document(lab.document())
            t0 = time.monotonic()
            for s in lab.sites:
                lab.start(s, wait=False)
            a, c = lab.sites[0], lab.sites[2]
            while True:
                ok, _ = lab.ping(a, c, wait_s=1)
                if ok:
                    break
                if time.monotonic() - t0 > 30:
                    raise SystemExit("mesh did not come up in 30 s")
            times.append(time.monotonic() - t0)
    return times


def idle(seconds):
    with Lab(3) as lab:
        lab.write_document(lab.document())
        for s in lab.sites:
            lab.start(s)
        assert lab.wait_ping(lab.sites[0], lab.sites[2])
        time.sleep(2)
        pids = {s.name: python_pid(s.proc) for s in lab.sites}
        t0 = {n: cpu_ticks(p) for n, p in pids.items()}
        w0 = time.monotonic()
        time.sleep(seconds)
        wall = time.monotonic() - w0
        rows = []
        for s in lab.sites:
            p = pids[s.name]
            cpu = (cpu_ticks(p) - t0[s.name]) / CLK / wall * 100
            wg = [k for k in proc_tree(p)]
            rows.append((s.name, rss_kb(p) / 1024, cpu, sum(rss_kb(k) for k in wg) / 1024,
                         heavy_libs(p)))
        return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--idle", type=int, default=60)
    args = ap.parse_args()
    times = startup(args.runs)
    print(f"run → first LAN-to-LAN ping (3 sites, uapi): median {statistics.median(times):.2f} s "
          f"(min {min(times):.2f}, max {max(times):.2f}, n={len(times)})")
    for name, rss, cpu, wg, heavy in idle(args.idle):
        print(f"idle {args.idle} s  {name}: daemon RSS {rss:.1f} MB, CPU {cpu:.2f} % of a core "
              f"(wireguard-go child RSS {wg:.1f} MB, not counted)"
              + (f"; heavy libraries mapped: {', '.join(heavy)}" if heavy else ""))


if __name__ == "__main__":
    main()
