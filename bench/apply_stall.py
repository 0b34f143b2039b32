# Issue 11: does data-plane work stall the daemon's loop? Three sites whose endpoints are DNS
# names served by the lab's DNS server with a 2 s delay, so every apply spends ~4 s resolving;
# a new document (keepalive flips) every 3 s makes every site apply again and again. Measured
# from outside, the same way for any version: how long `lanmesh status` takes to answer (the
# loop serves it: its worst case is the loop's longest stall), how many links flapped, and the
# probe-to-apply latency where the daemon reports it. Runs this tree and an older revision
# (default: the last commit before the applier) side by side, in one run.
#   .venv/bin/python bench/apply_stall.py [--rev e7b479d] [--seconds 20]
import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, os.path.join(ROOT, "firmware"))

from lanmesh.adapters import control             # noqa: E402
from lanmesh_lab.dns import LabDns              # noqa: E402
from lanmesh_lab.sites import Lab               # noqa: E402


def scenario(firmware, seconds, delay_ms):
    with Lab(3) as lab:
        table = {}
        for s in lab.sites:
            table[f"{s.name}.lab.test"] = s.wan_ip
            s.endpoints = [f"{s.name}.lab.test:51820"]
        dns = LabDns(lab, lab.wan, table, delay_ms=delay_ms)
        for s in lab.sites:
            dns.use(s, f"198.18.{s.i}.1")
        lab.write_document(lab.document())
        for s in lab.sites:
            lab.start(s, wait=False, extra_env={"PYTHONPATH": firmware})
        for s in lab.sites:
            lab.wait_ready(s, timeout=60)
        if not lab.wait_direct(timeout=60):
            return None
        flaps0 = {s.name: sum(l["flaps"] for l in lab.status(s)["links"]) for s in lab.sites}
        downs0 = {s.name: lab.daemon_log_full(s).count(" DOWN ") for s in lab.sites}
        worst, answers, end, next_doc, ka = 0.0, 0, time.monotonic() + seconds, 0, 20
        while time.monotonic() < end:
            if time.monotonic() >= next_doc:
                ka = 41 - ka                        # 20 <-> 21: every site applies again
                lab.write_document(lab.document(keepalive=ka))
                for s in lab.sites:
                    lab.reload(s)
                next_doc = time.monotonic() + 3
            for s in lab.sites:
                t = time.monotonic()
                try:
                    control.request(s.control_socket, {"cmd": "status"}, timeout=10)
                except OSError:
                    pass
                worst = max(worst, time.monotonic() - t)
                answers += 1
            time.sleep(0.1)
        st = [lab.status(s, retry_s=10) for s in lab.sites]
        flaps = sum(sum(l["flaps"] for l in x["links"]) for x in st) - sum(flaps0.values())
        downs = sum(lab.daemon_log_full(s).count(" DOWN ") for s in lab.sites) - sum(downs0.values())
        late = [x["mesh"].get("loop_late_max_ms") for x in st]
        lat = [(x.get("dataplane") or {}).get("last_submit_to_applied_ms") for x in st]
        for s in lab.sites:
            lab.stop(s)
        return {"status_worst_ms": worst * 1000, "answers": answers, "flaps": flaps,
                "downs": downs, "loop_late_max_ms": late, "submit_to_applied_ms": lat}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rev", default="e7b479d", help="the older revision to compare with")
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--delay-ms", type=int, default=2000)
    a = ap.parse_args()
    old = tempfile.mkdtemp(prefix="lanmesh-bench-rev-")
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "-q", "--detach", old, a.rev], check=True)
    try:
        rows = [(f"before ({a.rev})", scenario(os.path.join(old, "firmware"), a.seconds, a.delay_ms)),
                ("after (this tree)", scenario(os.path.abspath(os.path.join(ROOT, "firmware")),
                                               a.seconds, a.delay_ms))]
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", old])
    print(f"3 sites, uapi, endpoints by DNS name with a {a.delay_ms} ms resolver, a new document "
          f"every 3 s, {a.seconds} s:")
    for name, r in rows:
        if r is None:
            print(f"  {name}: the mesh never converged")
            continue
        print(f"  {name}: longest `lanmesh status` answer {r['status_worst_ms']:.0f} ms "
              f"({r['answers']} asked); links down {r['downs']}, flaps {r['flaps']}; "
              f"loop lateness max {r['loop_late_max_ms']} ms; submit→applied {r['submit_to_applied_ms']} ms")


if __name__ == "__main__":
    main()
