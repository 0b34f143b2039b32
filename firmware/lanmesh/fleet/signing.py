# Fleet signing (DESIGN §2.4, FORMATS "Signed envelope"): the fleet's Ed25519 key, the
# envelope {"doc": {...}, "sig": "<base64 Ed25519 over canonical(doc)>"}, and verification
# that says *why* a payload is refused. CPython side: the node's pure sync core only ever
# sees documents that passed through verify_envelope(). A router verifies with
# lanmesh.ed25519 (libsodium or pure Python), never python3-cryptography, which does not
# build for 32-bit MIPS; the controller signs with it.
import binascii
import os

from .. import boundjson, ed25519
from ..atomic import write_atomic
from ..errors import DocumentError, LanmeshError
from ..keys import b64decode, b64encode, read_protected
from .. import netdoc

# The envelope adds the signature and a few bytes of JSON to the document.
MAX_ENVELOPE_BYTES = netdoc.MAX_DOC_BYTES


class SignatureError(LanmeshError):
    """A signed payload is malformed, or its signature does not verify."""


def _b64_32(text, what):
    try:
        raw = b64decode(text.strip())
    except (binascii.Error, ValueError, AttributeError):
        raw = b""
    if len(raw) != 32:
        raise SignatureError(f"{what}: not an Ed25519 key (base64 of 32 bytes)")
    return raw


def generate_key():
    """A new Ed25519 private key as base64 of its 32-byte seed."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives import serialization as s
    seed = Ed25519PrivateKey.generate().private_bytes(s.Encoding.Raw, s.PrivateFormat.Raw,
                                                      s.NoEncryption())
    return b64encode(seed)


def _private(key_b64):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    return Ed25519PrivateKey.from_private_bytes(_b64_32(key_b64, "signing key"))


def public_key(key_b64):
    """Private seed (base64) → public key (base64 of the 32 raw bytes), as node configs hold it."""
    from cryptography.hazmat.primitives import serialization as s
    raw = _private(key_b64).public_key().public_bytes(s.Encoding.Raw, s.PublicFormat.Raw)
    return b64encode(raw)


def write_key(path, key_b64):
    write_atomic(path, key_b64 + "\n", mode=0o600)


def read_key(path):
    """Read a private signing key; refused when others can read it (like ssh)."""
    text = read_protected(path, "signing key", error=SignatureError)
    _b64_32(text, path)
    return text


def read_public_key(text_or_path):
    """A public key given inline (base64) or as a file holding it."""
    text = text_or_path
    if not _looks_like_key(text) and os.path.exists(text_or_path):
        with open(text_or_path) as f:
            text = f.read().strip()
    _b64_32(text, "public key")
    return text.strip()


def _looks_like_key(text):
    try:
        return len(b64decode(text.strip())) == 32
    except (binascii.Error, ValueError):
        return False


def sign(doc, key_b64):
    """doc dict → envelope dict. The doc is signed as netdoc.canonical() gives it."""
    sig = _private(key_b64).sign(netdoc.canonical(doc))
    return {"doc": doc, "sig": b64encode(sig)}


def envelope_bytes(envelope):
    """The bytes published on `net` and stored as last-good: canonical JSON too."""
    return netdoc.canonical(envelope)


def open_envelope(data, pubkey_b64, limit=MAX_ENVELOPE_BYTES):
    """bytes → doc dict whose signature verifies; SignatureError with the reason otherwise.
    The doc is not validated here (see verify_document)."""
    if len(data) > limit:
        raise SignatureError(f"payload of {len(data)} bytes is over the {limit}-byte limit")
    try:
        env = boundjson.loads(data, limit, "payload")
    except boundjson.JsonError as e:
        raise SignatureError(str(e)) from None
    if not isinstance(env, dict) or set(env) != {"doc", "sig"}:
        raise SignatureError('payload is not a signed envelope {"doc": ..., "sig": ...}')
    if not isinstance(env["doc"], dict):
        raise SignatureError("envelope: doc must be a JSON object")
    try:
        sig = b64decode(env["sig"])
    except (binascii.Error, ValueError, TypeError):
        sig = b""
    if len(sig) != 64:
        raise SignatureError("envelope: sig is not a base64 Ed25519 signature (64 bytes)")
    pub = _b64_32(pubkey_b64, "fleet public key")
    if not ed25519.verify(pub, netdoc.canonical(env["doc"]), sig):
        raise SignatureError("signature does not verify with the fleet key "
                             "(tampered, or signed by another key)")
    return env["doc"]


def stored_document(data, limit=MAX_ENVELOPE_BYTES):
    """bytes of an envelope this node verified and stored itself (last-good) → its
    NetworkDocument, validated but not verified again: for when the configured fleet key
    or name changed, so that a mistake there never takes the site off the mesh."""
    try:
        env = boundjson.loads(data, limit, "last good document")
    except boundjson.JsonError as e:
        raise DocumentError([str(e)]) from None
    doc = env.get("doc") if isinstance(env, dict) else None
    problems = netdoc.validate(doc) if isinstance(doc, dict) else ["not a signed envelope"]
    if problems:
        raise DocumentError(problems)
    return netdoc.NetworkDocument(doc)


def verify_document(data, pubkey_b64, limit=MAX_ENVELOPE_BYTES):
    """bytes → NetworkDocument: signature first, then validation.
    Raises SignatureError or DocumentError; the message is the reason to report."""
    doc = open_envelope(data, pubkey_b64, limit)
    problems = netdoc.validate(doc)
    if problems:
        raise DocumentError(problems)
    return netdoc.NetworkDocument(doc)
