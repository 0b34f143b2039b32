# X25519 (RFC 7748 §5) in pure Python: the Montgomery ladder over Curve25519.
# The daemon derives its public key once at start; pulling in `cryptography` for that
# costs ~8 MB RSS (OpenSSL + its Rust extension), this costs nothing and ~1 ms.
# Not constant-time (Python big ints never are): fine for deriving our own public key
# from a private key that is on disk anyway; never use it for DH against peer input.
P = 2 ** 255 - 19
A24 = 121665


def _decode_scalar(k):
    b = bytearray(k)
    b[0] &= 248
    b[31] &= 127
    b[31] |= 64
    return int.from_bytes(bytes(b), "little")


def _decode_u(u):
    b = bytearray(u)
    b[31] &= 127                # RFC 7748: mask the most significant bit
    return int.from_bytes(bytes(b), "little") % P


def x25519(k, u):
    """RFC 7748 X25519(k, u): 32-byte scalar and u-coordinate → 32-byte u-coordinate."""
    if len(k) != 32 or len(u) != 32:
        raise ValueError("x25519: scalar and u-coordinate must be 32 bytes")
    k = _decode_scalar(k)
    x1 = _decode_u(u)
    x2, z2, x3, z3 = 1, 0, x1, 1
    swap = 0
    for t in range(254, -1, -1):
        kt = (k >> t) & 1
        swap ^= kt
        if swap:
            x2, x3 = x3, x2
            z2, z3 = z3, z2
        swap = kt
        a = (x2 + z2) % P
        aa = a * a % P
        b = (x2 - z2) % P
        bb = b * b % P
        e = (aa - bb) % P
        c = (x3 + z3) % P
        d = (x3 - z3) % P
        da = d * a % P
        cb = c * b % P
        x3 = (da + cb) % P
        x3 = x3 * x3 % P
        z3 = (da - cb) % P
        z3 = x1 * (z3 * z3 % P) % P
        x2 = aa * bb % P
        z2 = e * ((aa + A24 * e) % P) % P
    if swap:
        x2, x3 = x3, x2
        z2, z3 = z3, z2
    return (x2 * pow(z2, P - 2, P) % P).to_bytes(32, "little")


BASE = b"\x09" + b"\x00" * 31


def public_key(private):
    """32 raw private bytes → 32 raw public bytes (what `wg pubkey` computes)."""
    return x25519(private, BASE)
