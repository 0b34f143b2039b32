# A rollout to 3 real routers (issue 15): sites in network namespaces, lanmesh installed
# in each by the real opkg (offline roots), each daemon run from its root, fleet over TLS to
# a real mosquitto, the real guard installing with opkg (tests/test_update_install.py's set-up).
# Measures the time from `lanmesh fleet rollout start` to the canary confirmed and to the
# rollout done, and the router's peak RSS during download and install: the daemon's own
# high-water mark (VmHWM) before the switch, and the sum over every process of that router
# (daemon, guard, opkg) sampled every 20 ms. Configuration: x86-64, uapi backend
# (wireguard-go), CPython 3.11, byte code as packaged.
import os
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "firmware"), os.path.join(HERE, "..", "tests"),
                os.path.join(HERE, "..", "packaging")]

import build_ipk  # noqa: E402
from lanmesh_lab.fleetlab import FleetLab  # noqa: E402
from lanmesh_lab.sites import Lab  # noqa: E402
from test_update_install import Router, _rollout_status  # noqa: E402


def _kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sampler(threading.Thread):
    """Peak RSS of everything one router runs (processes whose command line names its
    directory), and the daemon's own peak."""

    def __init__(self, router):
        super().__init__(daemon=True)
        self.router, self.peak_total, self.peak_daemon, self.stop = router, 0, 0, False

    def run(self):
        marker = self.router.site.dir.encode()
        while not self.stop:
            total = 0
            for p in os.listdir("/proc"):
                if not p.isdigit():
                    continue
                try:
                    with open(f"/proc/{p}/cmdline", "rb") as f:
                        if marker not in f.read():
                            continue
                except OSError:
                    continue
                total += _kb(p, "VmRSS")
            self.peak_total = max(self.peak_total, total)
            pid = self.router.pid()
            if pid:
                self.peak_daemon = max(self.peak_daemon, _kb(pid, "VmHWM"))
            time.sleep(0.02)


def main():
    tmp = tempfile.mkdtemp(prefix="lanmesh-bench-")
    pk = {"0.1.0": build_ipk.build(os.path.join(tmp, "v1")),
          "0.2.0": build_ipk.build(os.path.join(tmp, "v2"), version="0.2.0")}
    with Lab(3) as lab:
        fl = FleetLab(lab, os.path.join(tmp, "fleet"))
        routers = []
        try:
            fl.start_broker()
            routers = [Router(lab, fl, s, pk["0.1.0"]) for s in lab.sites]
            for r in routers:
                r.restart()
            fl.wait_applied(1, timeout=30, sites=lab.sites)
            time.sleep(3)
            idle = {r.site.name: _kb(r.pid(), "VmRSS") for r in routers}
            fl.cli("release", "add", pk["0.1.0"])
            fl.cli("release", "add", pk["0.2.0"])
            hq = routers[0]
            sampler = Sampler(hq)
            sampler.start()
            t0 = time.monotonic()
            fl.cli("rollout", "start", "0.2.0", "--waves", f"canary={hq.site.name}", "100%")
            canary_at = None
            while True:
                st = _rollout_status(fl)
                if canary_at is None and st["waves"][0]["nodes"][0]["progress"] == "confirmed":
                    canary_at = time.monotonic() - t0
                if st["state"] != "running" or time.monotonic() - t0 > 300:
                    break
                time.sleep(0.2)
            done_at = time.monotonic() - t0
            sampler.stop = True
            sampler.join()
            after = _kb(hq.pid(), "VmRSS")
            assert st["state"] == "done", st
            print(f"3 routers, rollout of 0.2.0 ({os.path.getsize(pk['0.2.0'])} B ipk; the way "
                  f"back {os.path.getsize(pk['0.1.0'])} B fetched first): canary confirmed "
                  f"{canary_at:.1f}s after `rollout start`, rollout done {done_at:.1f}s")
            print(f"canary {hq.site.name} RSS: idle before {idle[hq.site.name] / 1024:.1f} MB; daemon "
                  f"peak during download and hand-over (VmHWM) {sampler.peak_daemon / 1024:.1f} MB; "
                  f"all its processes at once (daemon, guard, opkg) peak "
                  f"{sampler.peak_total / 1024:.1f} MB; new daemon after confirm {after / 1024:.1f} MB")
        finally:
            for r in routers:
                r.stop()
            fl.close()


if __name__ == "__main__":
    main()
