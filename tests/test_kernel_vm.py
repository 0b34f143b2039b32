# Issue 3 acceptance on a real kernel WireGuard: ONE qemu boot runs pytest inside the guest
# on the three-site full mesh and reconcile tests (tests/test_site_mesh.py) with every
# router on `backend: kernel`, plus the kernel+uapi mixed mesh (tests/test_mixed_backends.py).
# The guest sees the host's root read-only; the lab writes only to the guest's tmpfs /tmp.
import os
import re
import sys
import time

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
GUEST_TESTS = [
    "tests/test_site_mesh.py::test_three_sites_full_mesh_v4_v6_and_tcp",
    "tests/test_site_mesh.py::test_reconcile_add_remove_same_twice",
    "tests/test_mixed_backends.py",
    "tests/test_roaming.py",
    "tests/test_rss.py::test_production_configuration_fits_verifies_and_reroutes",
]
# TCG emulation is ~10x slower than the host: the lab tests scale their timeouts by this
SLOW = os.environ.get("LANMESH_LAB_SLOW", "8")
VM_TIMEOUT = float(os.environ.get("LANMESH_KERNEL_VM_TIMEOUT", "540"))
_SUMMARY = re.compile(r"^=*\s*(.*\b(?:passed|failed|error|errors|skipped|no tests ran)\b.*?)\s*=*$")


def _skip_reason():
    if os.geteuid() != 0:
        return "needs root (the VM image cache and qemu's 9p export of /)"
    from lanmesh_lab.vm import vm_unavailable_reason
    return vm_unavailable_reason()


def _summary(output):
    """{"passed": n, "failed": n, …} from the guest pytest's last summary line."""
    line = None
    for text in output.splitlines():
        m = _SUMMARY.match(text.strip())
        if m and re.search(r"\d+ \w+", m.group(1)) or (m and "no tests ran" in m.group(1)):
            line = m.group(1)
    if line is None:
        return None, None
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)", line)}
    return line, counts


@pytest.mark.vm
def test_kernel_backend_sites_in_vm():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from lanmesh_lab.vm import run_in_vm
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs", "--color=no",
           "--durations=8",
           "-o", "addopts=", *GUEST_TESTS]
    t0 = time.monotonic()
    res = run_in_vm(cmd, timeout=VM_TIMEOUT, cwd=ROOT,
                    env={"LANMESH_LAB_BACKEND": "kernel", "LANMESH_LAB_SLOW": SLOW,
                         "PYTHONPATH": os.path.join(ROOT, "firmware")},   # this checkout
                    stream=sys.stdout if os.environ.get("LANMESH_VM_VERBOSE") else None)
    wall = time.monotonic() - t0
    line, counts = _summary(res.output)
    print(f"\nkernel-backend VM test: {res}; wall {wall:.1f} s, boot "
          f"{res.boot_seconds or 0:.1f} s; guest pytest: {line}")
    slowest = res.output.find("slowest")
    if slowest >= 0:
        print("guest " + res.output[slowest:].split("\n\n")[0])
    tail = res.output[-6000:] if res.output else res.console[-4000:]
    assert not res.timed_out, f"VM timed out after {VM_TIMEOUT:.0f} s:\n{tail}"
    assert counts is not None, f"no pytest summary in the guest output (rc={res.returncode}):\n{tail}"
    assert counts.get("failed", 0) == 0 and counts.get("error", 0) + counts.get("errors", 0) == 0, tail
    assert counts.get("skipped", 0) == 0, f"guest skipped tests (kernel WireGuard missing?):\n{tail}"
    assert counts.get("passed", 0) == len(GUEST_TESTS), tail
    assert res.returncode == 0, tail
