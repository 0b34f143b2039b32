import json
import os
import shutil
import subprocess
import sys

import pytest

from lanmesh import keys
from lanmesh.config import load_config
from lanmesh.errors import ConfigError, KeyError_

LANMESH = [sys.executable, "-m", "lanmesh.cli"]


@pytest.mark.skipif(not shutil.which("wg"), reason="wireguard-tools not installed")
def test_genkey_pubkey_match_wg():
    priv = subprocess.run(LANMESH + ["genkey"], capture_output=True, check=True).stdout
    ours = subprocess.run(LANMESH + ["pubkey"], input=priv, capture_output=True, check=True).stdout
    theirs = subprocess.run(["wg", "pubkey"], input=priv, capture_output=True, check=True).stdout
    assert ours == theirs and len(ours) == 45
    # and the other way round: a key from `wg genkey` works with ours
    wpriv = subprocess.run(["wg", "genkey"], capture_output=True, check=True).stdout
    assert keys.pubkey(wpriv.decode()) + "\n" == subprocess.run(
        ["wg", "pubkey"], input=wpriv, capture_output=True, check=True).stdout.decode()


def test_pubkey_rejects_garbage_with_message():
    r = subprocess.run(LANMESH + ["pubkey"], input=b"not a key\n", capture_output=True)
    assert r.returncode == 1 and b"not a WireGuard key" in r.stderr


def test_private_key_file_mode(tmp_path):
    p = tmp_path / "k"
    keys.write_private_key(str(p), keys.genkey())
    assert os.stat(p).st_mode & 0o777 == 0o600
    keys.read_private_key(str(p))
    os.chmod(p, 0o644)
    with pytest.raises(KeyError_, match="readable by others"):
        keys.read_private_key(str(p))


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="node config not found"):
        load_config(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "a", ')
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(str(bad))
    bad.write_text(json.dumps({"name": "A B", "backend": "magic", "listen_port": 70000}))
    with pytest.raises(ConfigError) as e:
        load_config(str(bad))
    for want in ("name:", "backend: 'magic'", "listen_port: 70000"):
        assert want in str(e.value)


def test_config_paths_relative_to_file(tmp_path):
    p = tmp_path / "node.json"
    p.write_text(json.dumps({"name": "hq", "document": "net.json", "run_dir": "run"}))
    c = load_config(str(p))
    assert c.document == str(tmp_path / "net.json")
    assert c.control_socket == str(tmp_path / "run" / "lanmesh0.sock")
    assert c.backend == "auto" and c.fleet is None


def test_run_with_bad_config_exits_nonzero(tmp_path):
    r = subprocess.run(LANMESH + ["run", "--config", str(tmp_path / "nope.json")], capture_output=True)
    assert r.returncode == 1 and b"node config not found" in r.stderr
    (tmp_path / "c.json").write_text("{corrupt")
    r = subprocess.run(LANMESH + ["run", "--config", str(tmp_path / "c.json")], capture_output=True)
    assert r.returncode == 1 and b"not valid JSON" in r.stderr


def test_doc_check_prints_every_problem(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"fleet": "acme", "version": 0, "overlay": {}, "nodes": []}))
    r = subprocess.run(LANMESH + ["doc", "check", str(p)], capture_output=True, text=True)
    assert r.returncode == 1
    assert "version: 0 is not a positive integer" in r.stderr
    assert "overlay.ipv4: None" in r.stderr and "nodes: [] must be a non-empty list" in r.stderr
