# Ed25519 verification and XEdDSA signing, for what must be checked on a router that has no
# python3-cryptography (32-bit MIPS): link-state adverts and fleet documents.
#
# - A node signs its own link-state adverts with its WireGuard (X25519) private key, by
#   XEdDSA (Signal's spec): the signature is a plain Ed25519 signature under the Edwards form
#   of the node's WireGuard public key, which the signed network document already lists. So
#   every node can verify an advert it got second-hand, with no second key to provision.
# - verify() uses libsodium through ctypes when it is there (~0.1 ms here; OpenWrt's
#   `libsodium`, Debian's libsodium23), else the pure-Python code below (~2 ms here, ~30x
#   that on a 580 MHz MIPS). Signing is pure Python (rare: an advert per change or 30 s, and
#   libsodium's minimal build, OpenWrt's default, lacks the scalar primitives XEdDSA needs).
# Python big ints are not constant-time: signing leaks timing to someone who can time our
# own advert generation, which happens on our schedule, not an attacker's; verification
# handles only public data.
import os

try:                        # CPython's built-in SHA-512: hashlib would map OpenSSL's libcrypto
    from _sha512 import sha512      # (~3 MB RSS) into the idle daemon for one hash function
except ImportError:
    try:
        from _sha2 import sha512    # CPython ≥ 3.12
    except ImportError:
        from hashlib import sha512

P = 2 ** 255 - 19
L = 2 ** 252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, P - 2, P) % P
_SQRT_M1 = pow(2, (P - 1) // 4, P)
_IDENTITY = (0, 1, 1, 0)


def _add(p, q):
    # RFC 8032 §5.1.4, extended homogeneous coordinates (X, Y, Z, T)
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = 2 * t1 * t2 * _D % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _double(p):
    x1, y1, z1, _ = p
    a = x1 * x1 % P
    b = y1 * y1 % P
    c = 2 * z1 * z1 % P
    h = a + b
    e = h - (x1 + y1) * (x1 + y1)
    g = a - b
    f = c + g
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _mul(k, p):
    q = _IDENTITY
    for bit in bin(k)[2:]:
        q = _double(q)
        if bit == "1":
            q = _add(q, p)
    return q


_gy = 4 * pow(5, P - 2, P) % P
_WINDOW = None          # [j * B for j in 0..15]: a 4-bit window, 4 kB (a full fixed-base table
                        # would sign 2x faster for 250 kB of RSS; a router signs rarely)


def _mul_base(k):
    global _WINDOW
    if _WINDOW is None:
        b = _decode_point(_gy.to_bytes(32, "little"))
        w = [_IDENTITY]
        for _ in range(15):
            w.append(_add(w[-1], b))
        _WINDOW = w
    k %= L
    q = _IDENTITY
    for i in range(63, -1, -1):
        q = _double(_double(_double(_double(q))))
        q = _add(q, _WINDOW[(k >> (4 * i)) & 15])
    return q


def _encode(p):
    x, y, z, _ = p
    zi = pow(z, P - 2, P)
    x, y = x * zi % P, y * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _decode_point(s):
    """32 bytes → point, or None (RFC 8032 §5.1.3)."""
    if len(s) != 32:
        return None
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, P - 2, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * _SQRT_M1 % P
    if (x * x - x2) % P:
        return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = P - x
    return (x, y, 1, x * y % P)


def _h(*parts):
    return int.from_bytes(sha512(b"".join(parts)).digest(), "little") % L


def verify_pure(public, message, signature):
    """Cofactorless Ed25519 verification (what libsodium checks), in pure Python."""
    if len(signature) != 64 or len(public) != 32:
        return False
    a = _decode_point(public)
    r = _decode_point(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if a is None or r is None or s >= L:
        return False
    h = _h(signature[:32], public, message)
    neg_a = ((P - a[0]) % P, a[1], a[2], (P - a[3]) % P)
    return _encode(_add(_mul_base(s), _mul(h, neg_a))) == signature[:32]


# ---- libsodium, when the system has it ------------------------------------------------------
_SODIUM_NAMES = ("libsodium.so.26", "libsodium.so.23", "libsodium.so")
_sodium = False         # False: not looked for yet; None: absent


def _libsodium():
    global _sodium
    if _sodium is False:
        _sodium = None
        if os.environ.get("LANMESH_NO_LIBSODIUM"):
            return None
        try:
            import ctypes
        except ImportError:
            return None
        for name in _SODIUM_NAMES:
            try:
                lib = ctypes.CDLL(name)
            except OSError:
                continue
            if lib.sodium_init() < 0:
                continue
            f = lib.crypto_sign_ed25519_verify_detached
            f.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulonglong, ctypes.c_char_p)
            f.restype = ctypes.c_int
            _sodium = f
            break
    return _sodium


def engine():
    """'libsodium' or 'python': which code verify() runs."""
    return "libsodium" if _libsodium() else "python"


def verify(public, message, signature):
    """True iff `signature` (64 bytes) is a valid Ed25519 signature of `message` by `public`
    (32 bytes). Never raises on malformed input."""
    if not isinstance(public, bytes) or not isinstance(signature, bytes) or \
            len(public) != 32 or len(signature) != 64:
        return False
    message = bytes(message)
    f = _libsodium()
    if f is not None:
        return f(signature, message, len(message), public) == 0
    return verify_pure(public, message, signature)


# ---- Ed25519 from a seed (the controller's fleet key) and XEdDSA from an X25519 key ----------
def public_from_seed(seed):
    h = sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a = (a & ~7 & ((1 << 254) - 1)) | (1 << 254)
    return _encode(_mul_base(a))


def sign_seed(seed, message):
    """RFC 8032 Ed25519 signature with a 32-byte seed (deterministic)."""
    h = sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a = (a & ~7 & ((1 << 254) - 1)) | (1 << 254)
    public = _encode(_mul_base(a))
    r = _h(h[32:], message)
    big_r = _encode(_mul_base(r))
    s = (r + _h(big_r, public, message) * a) % L
    return big_r + s.to_bytes(32, "little")


def edwards_public(x25519_public):
    """A WireGuard public key (Montgomery u, 32 bytes) → the Ed25519 public key (sign bit 0)
    its owner's XEdDSA signatures verify under; None for a key that has no such form."""
    if len(x25519_public) != 32:
        return None
    u = int.from_bytes(x25519_public, "little") & ((1 << 255) - 1)
    if u >= P or (u + 1) % P == 0:
        return None
    y = (u - 1) * pow(u + 1, P - 2, P) % P
    return y.to_bytes(32, "little")


_HASH1_PREFIX = b"\xfe" + b"\xff" * 31


def xeddsa_sign(x25519_private, message, random=None):
    """XEdDSA signature of `message` with a WireGuard private key (32 raw bytes): verifies
    with verify(edwards_public(public key), message, signature)."""
    b = bytearray(x25519_private)
    b[0] &= 248
    b[31] = (b[31] & 127) | 64
    k = int.from_bytes(bytes(b), "little")
    e = _mul_base(k)
    public = _encode(e)
    a = k % L
    if public[31] & 0x80:                  # the key pair's Edwards point must have sign 0
        a = (L - a) % L
        public = public[:31] + bytes((public[31] & 0x7F,))
    z = random if random is not None else os.urandom(64)
    r = _h(_HASH1_PREFIX, a.to_bytes(32, "little"), message, z)
    big_r = _encode(_mul_base(r))
    s = (r + _h(big_r, public, message) * a) % L
    return big_r + s.to_bytes(32, "little")
