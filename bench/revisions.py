# Benchmarks that compare revisions side by side in one run (these shared machines drift
# between runs): each revision's firmware/ comes from a temporary git worktree of it ("." is
# this tree); Lab.start_all(extra_env={"PYTHONPATH": …}) starts that revision's daemons.
import contextlib
import os
import subprocess
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


@contextlib.contextmanager
def firmware_trees(revs):
    """Yield [(rev, firmware directory)]; the worktrees are removed afterwards."""
    made, out = [], []
    try:
        for rev in revs:
            if rev == ".":
                out.append((rev, os.path.join(ROOT, "firmware")))
                continue
            d = tempfile.mkdtemp(prefix="lanmesh-ab-")
            subprocess.run(["git", "-C", ROOT, "worktree", "add", "-q", "--detach", d, rev], check=True)
            made.append(d)
            out.append((rev, os.path.join(d, "firmware")))
        yield out
    finally:
        for d in made:
            subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", d])

