# Issue 14: what a blind relay costs. Three sites (uapi backend, wireguard-go), iperf3 from
# LAN host a to LAN host c, alternated in one run: direct, then with the a↔c WAN path cut so
# the session rides the relay b (its kernel forwards the ciphertext: DNAT/SNAT). Per phase:
# throughput, ping RTT, and the CPU the relay's own processes burn per Gbit relayed
# (wireguard-go and the lanmesh daemon: ~0 when the relay is blind; a hop-by-hop relay would
# decrypt and re-encrypt every packet in its wireguard-go). Kernel forwarding shows up as
# softirq time on the shared kernel and is not attributed per namespace.
#   .venv/bin/python bench/relay_cost.py [--rounds 2] [--seconds 5]
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "firmware"))
sys.path.insert(0, HERE)

from lanmesh_lab.sites import Lab          # noqa: E402
from startup_idle import cpu_ticks         # noqa: E402


def pids_of(lab, site):
    out = {}
    for pid in lab.ns.pids(site.router):
        try:
            comm = open(f"/proc/{pid}/comm").read().strip()
        except OSError:
            continue
        out.setdefault("wireguard-go" if comm == "wireguard-go" else "daemon", []).append(pid)
    return out


def ticks(pids):
    total = 0
    for p in pids:
        try:
            total += cpu_ticks(p)
        except OSError:
            pass
    return total


def phase(lab, relay, seconds):
    a, c = lab.sites[0], lab.sites[2]
    procs = pids_of(lab, relay)
    before = {k: ticks(v) for k, v in procs.items()}
    r = lab.ns.exec(a.host, "iperf3", "-c", c.host4, "-t", str(seconds), "-J", check=False,
                    timeout=seconds + 30)
    used = {k: (ticks(v) - before[k]) / os.sysconf("SC_CLK_TCK") for k, v in procs.items()}
    got = json.loads(r.stdout)["end"]["sum_received"]
    gbit = got["bytes"] * 8 / 1e9
    ok, out = lab.ping(a, c, count=20, interval=0.05)
    rtt = [float(x) for x in re.findall(r"time=([\d.]+)", out)]
    return {"mbit_s": got["bits_per_second"] / 1e6, "rtt_ms": statistics.median(rtt) if rtt else None,
            "relay_cpu_s_per_gbit": {k: round(v / gbit, 3) for k, v in used.items()}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=5)
    args = ap.parse_args()
    rows = {"direct": [], "relayed": []}
    with Lab(3) as lab:
        lab.start_all()
        assert lab.wait_direct(timeout=20)
        a, b, c = lab.sites
        lab.ns.popen(c.host, ["iperf3", "-s"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        for _ in range(args.rounds):
            rows["direct"].append(phase(lab, b, args.seconds))
            lab.cut(a, c)
            assert lab.wait_routes(a, {c.name: b.name}, timeout=10)
            deadline = time.time() + 5
            while not (lab.status(b).get("relay") or {}).get("sessions") and time.time() < deadline:
                time.sleep(0.1)
            time.sleep(1)
            rows["relayed"].append(phase(lab, b, args.seconds))
            lab.restore(a, c)
            assert lab.wait_routes(a, {c.name: c.name}, timeout=20)
            time.sleep(1)
    med = {k: {"mbit_s": statistics.median(r["mbit_s"] for r in v),
               "rtt_ms": statistics.median(r["rtt_ms"] for r in v),
               "relay_cpu_s_per_gbit": {p: statistics.median(r["relay_cpu_s_per_gbit"].get(p, 0)
                                                             for r in v)
                                        for p in ("wireguard-go", "daemon")}}
           for k, v in rows.items()}
    print("configuration: x86-64, uapi backend (wireguard-go), 3 sites in namespaces")
    for k in ("direct", "relayed"):
        m = med[k]
        print(f"{k:>8}: {m['mbit_s']:7.0f} Mbit/s  rtt {m['rtt_ms']:.3f} ms  relay CPU/Gbit: "
              f"wireguard-go {m['relay_cpu_s_per_gbit']['wireguard-go']:.3f} s, "
              f"daemon {m['relay_cpu_s_per_gbit']['daemon']:.3f} s")
    print(f"relayed/direct throughput {med['relayed']['mbit_s'] / med['direct']['mbit_s']:.2f}; "
          f"added latency per relay hop {med['relayed']['rtt_ms'] - med['direct']['rtt_ms']:+.3f} ms")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
