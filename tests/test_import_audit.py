# The router package imports exactly the python3 sub-packages its feed Makefile declares
# (issue 12). The router's code paths run from the installed package (packaging/router.py's
# tree, byte code for 3.11, through /usr/bin/lanmesh) under an interpreter that refuses
# every stdlib module of an undeclared OpenWrt sub-package and every module from outside
# the package (tests/import_audit/sitecustomize.py): the daemon joining a fleet over TLS
# (uapi), taking a signed document, `status`, the daemon without a fleet, the kernel
# backend's start-up on a kernel without WireGuard, and the console agent. The 24.10
# feed's python3-paho-mqtt 1.6.1 and pyroute2 0.7.9 are importable meanwhile: a daemon that
# picked them up would be refused and fail (lanmesh has its own MQTT client and netlink).
import json
import os
import subprocess
import sys
import time

import pytest

from lanmesh_lab.fleetlab import FleetLab

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "packaging"))
from feed import read_feed  # noqa: E402
from openwrt_python import REQUIRES, SUBPACKAGES, module_owner  # noqa: E402
from router import LIB, install  # noqa: E402

AUDIT_SITE = os.path.join(HERE, "import_audit")
RELEASE = "24.10"
# Refusals the code is written to survive: (module, importer) pairs of optional imports.
OPTIONAL = {("lzma", "shutil")}     # shutil's optional archive formats: a try/except import


def declared():
    deps = read_feed(os.path.join(REPO, "openwrt", "lanmesh", "Makefile"))["depends"]
    return {d for d in deps if d in SUBPACKAGES[RELEASE]}


def _old_feed_libraries(directory):
    """What the 24.10 feed installs into site-packages: paho-mqtt 1.6.1 (no
    CallbackAPIVersion) and pyroute2 0.7.9, as importable stand-ins."""
    for rel, text in (("paho/__init__.py", ""), ("paho/mqtt/__init__.py", '__version__ = "1.6.1"\n'),
                      ("paho/mqtt/client.py", "class Client:\n    pass\n"),
                      ("pyroute2/__init__.py", '__version__ = "0.7.9"\n')):
        path = os.path.join(directory, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    return directory


def audit_env(tmp_path, root, allow):
    return {"PYTHONPATH": os.pathsep.join([AUDIT_SITE, _old_feed_libraries(str(tmp_path / "old"))]),
            "LANMESH_AUDIT_ROOT": os.path.join(root, LIB),
            "LANMESH_AUDIT_ALLOW": ",".join(sorted(allow)),
            "LANMESH_AUDIT_OWNER": json.dumps(module_owner(RELEASE)),
            "LANMESH_AUDIT_LOG": str(tmp_path / "audit.log")}


def audit_log(tmp_path):
    path = tmp_path / "audit.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("router"))
    install(root, "3.11")
    return root


def test_the_audit_refuses_undeclared_and_outside_modules(installed, tmp_path):
    env = dict(os.environ, **audit_env(tmp_path, installed, declared() - {"python3-ctypes"}))
    code = ("import sys\n"
            "for m in ('ctypes', 'pyroute2', 'cryptography', 'json'):\n"
            "    try:\n        __import__(m); print(m, 'ok')\n"
            "    except ImportError as e:\n        print(m, 'refused')\n")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.stdout.split("\n")[:4] == ["ctypes refused", "pyroute2 refused",
                                        "cryptography refused", "json ok"], r.stdout + r.stderr
    refused = {e["module"] for e in audit_log(tmp_path) if e["kind"] == "refused"}
    assert refused == {"ctypes", "pyroute2", "cryptography"}


def _launcher(root):
    # without -S: the venv's site-packages stays visible, so the audit sees (and refuses)
    # anything the daemon would take from outside the package
    return [sys.executable, os.path.join(root, "usr/bin/lanmesh")]


def _wait(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.netns
def test_router_code_paths_need_exactly_the_declared_subpackages(make_lab, installed, tmp_path):
    allow = declared()
    env = audit_env(tmp_path, installed, allow)
    lab = make_lab(2)
    a, b = lab.sites
    fl = FleetLab(lab, tmp_path / "fleet")
    try:
        fl.start_broker()
        for s in (a, b):
            lab.start(s, wait=False, extra_env=env, command=_launcher(installed))
        for s in (a, b):
            lab.wait_ready(s)
        _wait(lambda: all((lab.status(s).get("fleet_state") or {}).get("connected") for s in (a, b)),
              30, "both routers on the broker\n" + lab.daemon_log(a))
        v = fl.publish(settings={"keepalive": 25})          # a signed document, verified
        fl.wait_applied(v, timeout=60)
        assert lab.wait_ping(a, b)
        full = dict(os.environ, **env)
        for args in (["status"], ["status", "--json"]):
            r = subprocess.run(["ip", "netns", "exec", a.router, *_launcher(installed), *args,
                                "--config", a.config_path], env=full, capture_output=True,
                               text=True, timeout=30)
            assert r.returncode == 0, r.stdout + r.stderr
        # the same router without a fleet: a local document only
        lab.stop(b)
        lab.write_config(b)
        lab.start(b, extra_env=env, command=_launcher(installed))
        assert lab.wait_ping(a, b)
        # the kernel backend on a kernel without WireGuard: a clear error, after its imports
        cfg = os.path.join(b.dir, "kernel.json")
        with open(cfg, "w") as f:
            json.dump({"name": b.name, "interface": "lmkaudit0", "backend": "kernel",
                       "private_key_file": "private.key", "document": "network.json",
                       "state_dir": "state-k", "run_dir": "run-k"}, f)
        r = subprocess.run(["ip", "netns", "exec", b.router, *_launcher(installed), "run",
                            "--config", cfg], env=full, capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "WireGuard" in r.stderr, r.stderr
    finally:
        for s in (a, b):
            lab.stop(s)
        fl.close()
    # the console agent, as a freshly flashed router runs it on its serial console
    cdir = tmp_path / "console"
    cdir.mkdir()
    r = subprocess.run(_launcher(installed) + ["console", "--config-dir", str(cdir)],
                       input="hello\nkeygen\nset name audit1\ncommit\n", env=full,
                       capture_output=True, text=True, timeout=60)
    assert "OK" in r.stdout and (cdir / "node.json").exists(), r.stdout + r.stderr
    log = audit_log(tmp_path)
    refused = [e for e in log if e["kind"] == "refused" and (e["module"], e["by"]) not in OPTIONAL]
    assert refused == [], refused
    used = {e["what"] for e in log if e["kind"] == "used"}
    closure = set(used) | {r for u in used for r in REQUIRES.get(u, ())}
    assert used <= allow, f"imported but not declared: {used - allow}"
    assert allow <= closure, f"declared but never imported: {allow - closure}"
