"""Issue 12: the idle daemon per configuration — uapi, uapi + fleet, kernel, kernel +
fleet (TLS) — with 4 peers (5 sites), run from the installed router package (byte code,
/usr/bin/lanmesh, as packaging/router.py stages it): RSS, modules imported, start-up time
(`lanmesh run` to the first status reply, and to the first LAN-to-LAN ping).

    .venv/bin/python bench/rss_configs.py            # uapi rows here, kernel rows in the VM
    .venv/bin/python bench/rss_configs.py --here     # only this kernel's backends

The kernel rows need kernel WireGuard: without it here, the script boots the test VM
(lanmesh_lab.vm) and runs itself there (uapi rows are measured there too, for a fair
side-by-side in one environment).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "firmware"))
sys.path.insert(0, os.path.join(ROOT, "packaging"))
from lanmesh.dataplane.kernel import kernel_available  # noqa: E402
from lanmesh_lab.sites import Lab  # noqa: E402


EXTRA_ENV = {}


def stage(directory):
    from router import install
    return install(directory)


SLOW = float(os.environ.get("LANMESH_LAB_SLOW", "1"))   # the VM's TCG: ~10x slower
# Five sites in the document (4 peers each); in the emulated VM only three run (five
# routers' probes do not keep up under TCG), the other two are offline sites.
RUNNING = 3 if SLOW > 1 else 5


def measure(backend, fleet, launcher, idle_s, tmp):
    from lanmesh_lab.fleetlab import FleetLab
    lab = Lab(5, backend=backend).__enter__()      # the topology is built on entry
    running = lab.sites[:RUNNING]
    fl = None
    try:
        if fleet:
            fl = FleetLab(lab, os.path.join(tmp, f"fleet-{backend}"))
            fl.start_broker()
        else:
            lab.write_document(lab.document())
        t0 = time.monotonic()
        for s in running:
            lab.start(s, wait=False, command=launcher, extra_env=EXTRA_ENV)
        for s in running:
            lab.wait_ready(s, timeout=15 * SLOW)
        ready = time.monotonic() - t0
        a, b = lab.sites[0], lab.sites[1]
        lab.wait_ping(a, b, timeout=15 * SLOW)
        ping = time.monotonic() - t0
        if fleet:
            end = time.monotonic() + 15 * SLOW
            while not all((lab.status(s).get("fleet_state") or {}).get("connected")
                          for s in running):
                if time.monotonic() > end:
                    raise TimeoutError("routers did not reach the broker")
                time.sleep(0.2)
        time.sleep(idle_s)
        procs = [lab.status(s)["process"] for s in running]
        return {"backend": backend, "fleet": fleet,
                "rss_mb": [round(p["rss_kb"] / 1024, 1) for p in procs],
                "modules": statistics.median(p["modules"] for p in procs),
                "heavy": sorted({m for p in procs for m in p.get("heavy", [])}),
                "threads": [p.get("threads") for p in procs],
                "ready_s": round(ready, 2), "first_ping_s": round(ping, 2)}
    finally:
        for s in running:
            lab.stop(s)
        if fl is not None:
            fl.close()
        lab.close()


def run_here(idle_s, backends):
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        launcher = stage(os.path.join(tmp, "root"))
        for backend in backends:
            for fleet in (False, True):
                rows.append(measure(backend, fleet, launcher, idle_s, tmp))
    return rows


def print_rows(rows, where):
    print(f"\nidle daemon, 4 peers, installed package ({where}); RSS per running router:")
    print(f"{'backend':8} {'fleet':6} {'RSS MB':32} {'max':>5} {'modules':>8} "
          f"{'ready s':>8} {'1st ping s':>10}  heavy modules")
    for r in rows:
        print(f"{r['backend']:8} {'TLS' if r['fleet'] else '-':6} {str(r['rss_mb']):32} "
              f"{max(r['rss_mb']):5.1f} {r['modules']:8.0f} {r['ready_s']:8.2f} {r['first_ping_s']:10.2f}  {','.join(r['heavy']) or '-'}  threads {r.get('threads')}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=float, default=10.0, help="seconds idle before reading RSS")
    ap.add_argument("--here", action="store_true", help="do not boot the VM")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--backends", default=None, help="comma list (default: uapi,kernel)")
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for the daemons")
    a = ap.parse_args()
    EXTRA_ENV.update(e.split("=", 1) for e in a.env)
    if a.here or kernel_available():
        backends = ["uapi", "kernel"] if kernel_available() else ["uapi"]
        if a.backends:
            backends = [b for b in a.backends.split(",") if b in backends]
        rows = run_here(a.idle, backends)
        print(json.dumps(rows) if a.json else "", flush=True)
        if not a.json:
            print_rows(rows, "this machine")
        return
    from lanmesh_lab.vm import run_in_vm
    res = run_in_vm([sys.executable, os.path.abspath(__file__), "--here", "--json",
                     "--idle", str(a.idle)] + (["--backends", a.backends] if a.backends else []),
                    timeout=900, cwd=ROOT,
                    env={"LANMESH_LAB_SLOW": "8", "PYTHONPATH": os.path.join(ROOT, "firmware")})
    line = [x for x in res.output.splitlines() if x.startswith("[{")]
    if not line:
        kept = [x for x in res.output.splitlines() if not x[:4].isdigit()]   # not daemon logs
        raise SystemExit(f"no result from the VM ({res}):\n" + "\n".join(kept[-60:]))
    print_rows(json.loads(line[-1]), "x86-64 kernel VM, TCG-emulated: start-up times are ~10x slow")


if __name__ == "__main__":
    main()
