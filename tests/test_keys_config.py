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
    # a static node (no fleet to wait for) with no document: a clear error, not a hang
    from lanmesh.keys import genkey, write_private_key
    write_private_key(str(tmp_path / "k"), genkey())
    (tmp_path / "n.json").write_text(json.dumps({"name": "hq", "private_key_file": "k",
                                                 "document": "missing.json"}))
    r = subprocess.run(LANMESH + ["run", "--config", str(tmp_path / "n.json")], capture_output=True,
                       timeout=30)
    assert r.returncode == 1 and b"missing.json" in r.stderr, r.stderr


def test_doc_check_prints_every_problem(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"fleet": "acme", "version": 0, "overlay": {}, "nodes": []}))
    r = subprocess.run(LANMESH + ["doc", "check", str(p)], capture_output=True, text=True)
    assert r.returncode == 1
    assert "version: 0 is not a positive integer" in r.stderr
    assert "overlay.ipv4: None" in r.stderr and "nodes: [] must be a non-empty list" in r.stderr


def test_x25519_rfc7748_vectors():
    from lanmesh.dataplane.x25519 import x25519, public_key
    h = bytes.fromhex
    # RFC 7748 §5.2, the two single-call vectors
    assert x25519(h("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4"),
                  h("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")) == \
        h("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")
    assert x25519(h("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d"),
                  h("e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493")) == \
        h("95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957")
    # §5.2 iterated vector, 1 and 1000 iterations (k, u ← X25519(k, u), k)
    k = u = h("0900000000000000000000000000000000000000000000000000000000000000")
    for i in range(1000):
        k, u = x25519(k, u), k
        if i == 0:
            assert k == h("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079")
    assert k == h("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51")
    # §6.1 Diffie-Hellman: public keys and the shared secret
    a = h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    b = h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    pa, pb = public_key(a), public_key(b)
    assert pa == h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    assert pb == h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    secret = h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
    assert x25519(a, pb) == secret == x25519(b, pa)


def test_pubkey_loads_no_cryptography():
    code = ("import sys; from lanmesh import keys; k = keys.genkey(); keys.pubkey(k); "
            "print(any(m.split('.')[0] == 'cryptography' for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_malformed_private_key_is_never_echoed(tmp_path):
    """The error names the file and what is wrong, never any of the key's characters."""
    key = tmp_path / "bad.key"
    key.write_text("SECRETSECRETSECRETxx+key/material==\n")
    os.chmod(key, 0o600)
    node = tmp_path / "node.json"
    node.write_text(json.dumps({"name": "x", "private_key_file": str(key),
                                "document": str(tmp_path / "none.json")}))
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), "..", "firmware"))
    for argv, stdin in ((["run", "--config", str(node)], ""),
                        (["pubkey"], key.read_text())):
        r = subprocess.run([sys.executable, "-m", "lanmesh.cli", *argv], input=stdin, env=env,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and "not a WireGuard key" in r.stderr, r.stderr
        assert "SECRET" not in r.stdout + r.stderr and "material" not in r.stdout + r.stderr
