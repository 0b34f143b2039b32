# Signed envelopes (fleet.signing) and `lanmesh doc sign` / `lanmesh doc verify` as a user
# runs them: a real subprocess, exit codes and messages.
import json
import os
import subprocess
import sys

import pytest

from lanmesh import keys, netdoc
from lanmesh.errors import DocumentError
from lanmesh.fleet import signing

FIRMWARE = os.path.join(os.path.dirname(__file__), "..", "firmware")


def make_doc(version=1, fleet="acme", n=2):
    return {"fleet": fleet, "version": version,
            "overlay": {"ipv4": "100.64.0.0/10", "ipv6": "fd00:6c6d::/64"},
            "settings": {"confirm_window": 5},
            "nodes": [{"name": f"n{i}", "public_key": keys.pubkey(keys.genkey()),
                       "address": [f"100.64.0.{i + 1}/32", f"fd00:6c6d::{i + 1}/128"],
                       "lan": [f"198.19.{i + 1}.0/24"], "endpoints": [f"198.18.0.{i + 1}:51820"],
                       "relay": True} for i in range(n)]}


def lanmesh(*args):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(FIRMWARE))
    return subprocess.run([sys.executable, "-m", "lanmesh.cli", *args], capture_output=True,
                          text=True, env=env, timeout=60)


@pytest.fixture
def key():
    return signing.generate_key()


def test_sign_verify_roundtrip(key):
    doc = make_doc(3)
    data = signing.envelope_bytes(signing.sign(doc, key))
    got = signing.verify_document(data, signing.public_key(key))
    assert got.version == 3 and got.raw == doc
    assert json.loads(data)["doc"] == doc


@pytest.mark.parametrize("mutate, reason", [
    (lambda e, k: e["doc"].update(version=99), "signature does not verify"),
    (lambda e, k: e.update(signing.sign(e["doc"], signing.generate_key())), "signed by another key"),
    (lambda e, k: e.update(sig="AAAA"), "not a base64 Ed25519 signature"),
    (lambda e, k: e.pop("sig"), "not a signed envelope"),
    (lambda e, k: e.update(extra=1), "not a signed envelope"),
    (lambda e, k: e.update(doc=[1]), "doc must be a JSON object"),
])
def test_tampering_is_refused_with_reason(key, mutate, reason):
    env = signing.sign(make_doc(), key)
    mutate(env, key)
    with pytest.raises(signing.SignatureError, match=reason):
        signing.verify_document(json.dumps(env).encode(), signing.public_key(key))


def test_malformed_and_oversize(key):
    pub = signing.public_key(key)
    with pytest.raises(signing.SignatureError, match="not valid JSON"):
        signing.verify_document(b'{"doc": {', pub)
    with pytest.raises(signing.SignatureError, match="not UTF-8"):
        signing.verify_document(b"\xff\xfe", pub)
    with pytest.raises(signing.SignatureError, match="over the 1048576-byte limit"):
        signing.verify_document(b" " * (netdoc.MAX_DOC_BYTES + 1), pub)


def test_signed_but_invalid_document_is_a_document_error(key):
    doc = make_doc()
    doc["nodes"][1]["lan"] = ["198.19.300.0/24"]
    data = signing.envelope_bytes(signing.sign(doc, key))
    with pytest.raises(DocumentError, match=r"nodes\[1\]\.lan\[0\]: '198.19.300.0/24' is not an IP prefix"):
        signing.verify_document(data, signing.public_key(key))


def test_key_file_permissions(tmp_path, key):
    p = tmp_path / "signing.key"
    signing.write_key(str(p), key)
    assert oct(p.stat().st_mode & 0o777) == "0o600"
    assert signing.read_key(str(p)) == key
    p.chmod(0o644)
    with pytest.raises(signing.SignatureError, match="readable by others"):
        signing.read_key(str(p))


def test_cli_sign_and_verify(tmp_path, key):
    keyfile = tmp_path / "signing.key"
    signing.write_key(str(keyfile), key)
    pubfile = tmp_path / "signing.pub"
    pubfile.write_text(signing.public_key(key) + "\n")
    docfile = tmp_path / "doc.json"
    docfile.write_text(json.dumps(make_doc(7)))
    r = lanmesh("doc", "sign", "--key", str(keyfile), str(docfile))
    assert r.returncode == 0, r.stderr
    signed = tmp_path / "signed.json"
    signed.write_text(r.stdout)
    assert set(json.loads(r.stdout)) == {"doc", "sig"}

    r = lanmesh("doc", "verify", "--pubkey", str(pubfile), str(signed))
    assert r.returncode == 0 and "good signature: fleet acme v7" in r.stdout
    r = lanmesh("doc", "verify", "--pubkey", signing.public_key(key), "--fleet", "other", str(signed))
    assert r.returncode == 1 and "for fleet 'acme', not 'other'" in r.stderr

    other = signing.public_key(signing.generate_key())
    r = lanmesh("doc", "verify", "--pubkey", other, str(signed))
    assert r.returncode == 1 and "signature does not verify" in r.stderr

    env = json.loads(r_text := signed.read_text())
    env["doc"]["version"] = 8
    signed.write_text(json.dumps(env))
    r = lanmesh("doc", "verify", "--pubkey", str(pubfile), str(signed))
    assert r.returncode == 1 and "rejected: signature does not verify" in r.stderr
    assert r_text

    bad = tmp_path / "bad.json"
    doc = make_doc()
    doc["version"] = 0
    bad.write_text(json.dumps(doc))
    r = lanmesh("doc", "sign", "--key", str(keyfile), str(bad))
    assert r.returncode != 0 and "version: 0 is not a positive integer" in r.stderr
