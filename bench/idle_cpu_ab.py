# Idle daemon CPU of several revisions side by side, in one run (these shared machines drift
# by tens of percent between runs, so only a same-run comparison says whether a change cost
# CPU): each revision's daemons run a 3-site uapi mesh from a git worktree of it, 25 s idle.
#   .venv/bin/python bench/idle_cpu_ab.py 7d27f9c e7b479d .      ("." = this tree)
#   LANMESH_REAPPLY_S=2 …                                        (settings pass through)
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(ROOT, "firmware"))
sys.path.insert(0, HERE)

from lanmesh_lab.sites import Lab          # noqa: E402
from startup_idle import cpu_ticks         # noqa: E402
from revisions import firmware_trees       # noqa: E402


def idle_cpu(firmware, seconds=25):
    env = {"PYTHONPATH": firmware}
    if os.environ.get("LANMESH_REAPPLY_S"):
        env["LANMESH_REAPPLY_S"] = os.environ["LANMESH_REAPPLY_S"]
    with Lab(3) as lab:
        lab.write_document(lab.document())
        for s in lab.sites:
            lab.start(s, extra_env=env)
        lab.wait_direct(timeout=30)
        time.sleep(5)
        t0 = {s.name: cpu_ticks(s.proc.pid) for s in lab.sites}
        w0 = time.monotonic()
        time.sleep(seconds)
        dt = time.monotonic() - w0
        out = [(cpu_ticks(s.proc.pid) - t0[s.name]) / os.sysconf("SC_CLK_TCK") / dt * 100
               for s in lab.sites]
        for s in lab.sites:
            lab.stop(s)
        return out


def main():
    with firmware_trees(sys.argv[1:] or ["."]) as trees:
        for rev, firmware in trees:
            print(f"{rev:>10}: " + " ".join(f"{x:.2f} %" for x in idle_cpu(firmware)), flush=True)


if __name__ == "__main__":
    main()
