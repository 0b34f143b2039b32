"""Run every benchmark in bench/ one after another and print their figures."""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
QUICK = {"startup_idle.py": ["--runs", "5", "--idle", "60"]}

for name in sorted(os.listdir(HERE)):
    if not name.endswith(".py") or name in ("run_all.py", "revisions.py"):
        continue
    print(f"== {name}", flush=True)
    subprocess.run([sys.executable, os.path.join(HERE, name), *QUICK.get(name, [])])
