# WireGuard keys: X25519 in WireGuard's base64 form. `lanmesh genkey | lanmesh pubkey`
# is byte-for-byte `wg genkey | wg pubkey`. Private key files are 0600 and refused
# when group/world readable, like `wg` warns and ssh refuses.
import binascii
import os
import stat

from .atomic import write_atomic
from .errors import KeyError_

# base64 by binascii: the base64 module (it imports re and struct for what we do not use)
# costs the daemon ~0.2 MB RSS
_B64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def b64encode(raw):
    return binascii.b2a_base64(raw, newline=False).decode()


def b64decode(text):
    """Strict base64, as the base64 module's validate=True: ValueError on anything else."""
    data = text.encode("ascii") if isinstance(text, str) else bytes(text)
    if not _B64.issuperset(data) or b"=" in data.rstrip(b"="):
        raise ValueError("not base64")
    return binascii.a2b_base64(data)


def _decode(text, what="key"):
    text = text.strip()
    try:
        raw = b64decode(text)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32 or len(text) != 44:
        raise KeyError_(f"{what}: not a WireGuard key (44 base64 characters)")   # never echo key material
    return raw


def decode_key(text, what="key"):
    """WireGuard base64 → 32 raw bytes; KeyError_ with a readable message otherwise."""
    return _decode(text, what)


def encode_key(raw):
    return b64encode(raw)


def is_key(text):
    try:
        _decode(text)
        return True
    except KeyError_:
        return False


def genkey():
    """A new private key, clamped as `wg genkey` prints it."""
    raw = bytearray(os.urandom(32))
    raw[0] &= 248
    raw[31] = (raw[31] & 127) | 64
    return encode_key(bytes(raw))


def pubkey(private_b64):
    # Pure-Python X25519: `cryptography` would cost ~8 MB RSS for one derivation at start.
    from .dataplane.x25519 import public_key

    return encode_key(public_key(_decode(private_b64, "private key")))


def to_hex(b64):
    """UAPI wants keys in hex."""
    return _decode(b64).hex()


def from_hex(h):
    return encode_key(bytes.fromhex(h))


def write_private_key(path, key_b64):
    """Atomically create a 0600 key file (never briefly readable by others)."""
    write_atomic(path, key_b64 + "\n", mode=0o600)


def read_protected(path, what, error=KeyError_, hint=""):
    """Text of a secret file; `error` when it is missing or others can read it (like ssh)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: {what} not found{hint}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise error(f"{path}: {what} is readable by others "
                    f"(mode {stat.S_IMODE(st.st_mode):04o}); run `chmod 600 {path}`")
    with open(path) as f:
        return f.read().strip()


def read_private_key(path):
    text = read_protected(path, "private key file", hint=" (create it with `lanmesh genkey`)")
    _decode(text, f"{path}: private key")
    return text
