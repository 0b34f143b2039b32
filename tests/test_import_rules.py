# The architecture as a test (DESIGN §2.2): the pure cores take facts and `now` and return
# effects. They never import an adapter, the data plane, the daemon or anything that reaches
# the OS (sockets, processes, threads, files, the clock), so they run the same under the
# integer clock of the tests and under MicroPython. This fails when one does.
import ast
import os

import pytest

PKG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "firmware", "lanmesh")
CORES = ["mesh/links.py", "mesh/lsdb.py", "mesh/node.py", "mesh/paths.py", "mesh/plan.py",
         "mesh/wire.py", "fleet/sync.py", "fleet/topics.py", "console/protocol.py",
         "console/session.py", "boundjson.py", "mesh/liveness.py", "release/fetch.py"]
FORBIDDEN_LANMESH = ("adapters", "dataplane", "daemon", "routing", "control", "cli", "lab",
                     "advert_keys", "atomic", "config", "keys")
FORBIDDEN_STDLIB = ("os", "socket", "subprocess", "threading", "select", "selectors", "asyncio",
                    "time", "signal", "ctypes", "logging", "ipaddress", "dataclasses", "typing")
FORBIDDEN_NAMES = ("ticks_ms", "open")      # the clock and files come in as facts


def imports(path, rel):
    tree = ast.parse(open(path).read(), path)
    pkg_parts = rel.split("/")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ["lanmesh"] + pkg_parts[:len(pkg_parts) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                if not node.module:
                    for a in node.names:
                        yield mod + "." + a.name, node.lineno
                    continue
            else:
                mod = node.module
            yield mod, node.lineno
            for a in node.names:
                yield mod + ":" + a.name, node.lineno


def violations(path, rel):
    bad = []
    for name, line in imports(path, rel):
        mod, _, item = name.partition(":")
        parts = mod.split(".")
        if parts[0] == "lanmesh" and len(parts) > 1 and parts[1] in FORBIDDEN_LANMESH:
            bad.append(f"line {line}: imports {mod}")
        elif parts[0] in FORBIDDEN_STDLIB:
            bad.append(f"line {line}: imports {mod}")
        elif item in FORBIDDEN_NAMES:
            bad.append(f"line {line}: imports {item} from {mod}")
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
            bad.append(f"line {node.lineno}: calls open()")
    return bad


@pytest.mark.parametrize("core", CORES)
def test_core_imports_no_adapter_dataplane_daemon_or_os(core):
    assert violations(os.path.join(PKG, core), core) == []


def test_the_rule_catches_an_offending_import(tmp_path):
    for text in ("from ..adapters.udp import MeshSocket\n", "import socket\n",
                 "from ..ticks import ticks_add, ticks_ms\n", "from lanmesh.daemon import Daemon\n",
                 "x = open('/etc/passwd')\n"):
        p = tmp_path / "probe.py"
        p.write_text(text)
        assert violations(str(p), "mesh/probe.py"), text
