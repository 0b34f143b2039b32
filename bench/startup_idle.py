"""Issue 2 figures: time from `lanmesh run` to the first LAN-to-LAN ping (3 sites, median
of N), and the idle daemon's RSS and CPU over a window, per node.

    .venv/bin/python bench/startup_idle.py [--runs 5] [--idle 60]
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "firmware"))
from lanmesh_lab.failover import PingWatch  # noqa: E402
from lanmesh_lab.netns import cpu_ticks  # noqa: E402  (the other benches take it from here)
from lanmesh_lab.sites import Lab  # noqa: E402

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


# The floor: a bare Python epoll loop that wakes `rate` times a second on a UDP datagram
# and does nothing else (rate: the mesh loop's own count of reader and timer callbacks).
# On the shared VMs a wake-up alone costs tens of µs, so the daemon's CPU only means
# something next to this, measured in the same run.
FLOOR = """
import select, socket, sys, time
rate, seconds = float(sys.argv[1]), float(sys.argv[2])
a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(("127.0.0.1", 0)); a.setblocking(False)
b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ep = select.epoll(); ep.register(a.fileno(), select.EPOLLIN)
t0, end = time.process_time(), time.monotonic() + seconds
nxt = time.monotonic()
while time.monotonic() < end:
    if time.monotonic() >= nxt:
        b.sendto(b"x" * 18, a.getsockname()); nxt += 1 / rate
    for _ in ep.poll(max(0.0, nxt - time.monotonic())):
        a.recv(64)
print((time.process_time() - t0) / seconds * 100)
"""


def floor_cpu(rate, seconds):
    out = subprocess.run([sys.executable, "-c", FLOOR, str(rate), str(seconds)],
                         capture_output=True, text=True, check=True).stdout
    return float(out)


def python_pid(lab_proc):
    # `ip netns exec` execs the command, so the Popen pid is the daemon itself
    return lab_proc.pid


def startup(runs):
    """[(run → first LAN-to-LAN reply, longest gap in the 3 s after that reply)]"""
    times = []
    for _ in range(runs):
        with Lab(3) as lab:
            lab.write_document(lab.document())
            a, c = lab.sites[0], lab.sites[2]
            watch = PingWatch(lab, a, c)        # a ping every 10 ms, timestamped by ping -D
            t0 = time.time()
            for s in lab.sites:
                lab.start(s, wait=False)
            if not lab.wait_ping(a, c, timeout=30):
                raise SystemExit("mesh did not come up in 30 s")
            time.sleep(3)
            replies = sorted(watch.stop())
            first = replies[0]
            after = [t for t in replies if t <= first + 3] + [first + 3]
            times.append((first - t0, max(b - a for a, b in zip(after, after[1:]))))
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
        k0 = {s.name: lab.status(s)["mesh"]["wakeups"] for s in lab.sites}
        w0 = time.monotonic()
        time.sleep(seconds)
        wall = time.monotonic() - w0
        rows = []
        for s in lab.sites:
            p = pids[s.name]
            cpu = (cpu_ticks(p) - t0[s.name]) / CLK / wall * 100
            rate = (lab.status(s)["mesh"]["wakeups"] - k0[s.name]) / wall
            wg = [k for k in proc_tree(p)]
            rows.append((s.name, rss_kb(p) / 1024, cpu, rate, sum(rss_kb(k) for k in wg) / 1024,
                         heavy_libs(p)))
        # the floor at the same wake-up rate, measured while the mesh still runs (same load)
        floor = floor_cpu(statistics.median(r[3] for r in rows), min(seconds, 20))
        return rows, floor


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--idle", type=int, default=60)
    args = ap.parse_args()
    runs = startup(args.runs)
    times, gaps = [r[0] for r in runs], [r[1] for r in runs]
    print(f"run → first LAN-to-LAN ping (3 sites, uapi): median {statistics.median(times):.2f} s "
          f"(min {min(times):.2f}, max {max(times):.2f}, n={len(times)}); longest gap in the "
          f"3 s after the first reply (10 ms pings): median {statistics.median(gaps) * 1000:.0f} ms, "
          f"max {max(gaps) * 1000:.0f} ms")
    rows, floor = idle(args.idle)
    for name, rss, cpu, rate, wg, heavy in rows:
        print(f"idle {args.idle} s  {name}: daemon RSS {rss:.1f} MB, CPU {cpu:.2f} % of a core, "
              f"{rate:.1f} wake-ups/s (wireguard-go child RSS {wg:.1f} MB, not counted)"
              + (f"; heavy libraries mapped: {', '.join(heavy)}" if heavy else ""))
    cpus = [r[2] for r in rows]
    print(f"floor: a bare Python epoll loop woken as often (by a datagram of its own) uses "
          f"{floor:.2f} % of a core; daemon / floor = {statistics.median(cpus) / floor:.2f}")


if __name__ == "__main__":
    main()
