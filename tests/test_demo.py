# `make demo` is the main job: it must come up from nothing, show the table and pass.
import subprocess
import sys

import pytest

pytestmark = pytest.mark.netns


def test_demo_runs_and_passes():
    r = subprocess.run([sys.executable, "-m", "lanmesh_lab.demo"], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "site    LAN" in out and "demo PASSED" in out
    for site in ("site-a", "site-b", "site-c"):
        assert site in out
    assert "FAIL" not in out.replace("demo PASSED", "")
    # the fleet act: the controller's document is applied and confirmed on every site
    assert "applied and confirmed by every site" in out
    assert sum(1 for l in out.splitlines() if l.startswith("site-") and " online  v2" in l) == 3
    # the failover act: rerouted through the relay, then back on the direct path
    assert "traffic resumed through a relay after a" in out and "back on the direct path" in out
    assert "198.19.3.0/24    → site-c via site-b" in out
