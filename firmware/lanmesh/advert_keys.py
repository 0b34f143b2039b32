# The mesh core's keys (mesh/node.py `keys`): this node signs its own link-state adverts with
# its WireGuard private key (XEdDSA) and verifies every other origin's against the WireGuard
# public key the signed network document lists for it. CPython side of lanmesh.ed25519.
# Path probes (outside the tunnel) carry a MAC under a key only the two ends can compute:
# BLAKE2s keyed with BLAKE2s("lanmesh-path-3" | X25519(our private key, their public key)).
# _blake2 is in OpenWrt's python3-light: no hashlib, no OpenSSL.
import os

from _blake2 import blake2s

from . import ed25519
from .dataplane.x25519 import x25519
from .errors import KeyError_
from .keys import decode_key


class AdvertKeys:
    def __init__(self, private_key_b64):
        self.use(private_key_b64)
        self._edwards = {}          # WireGuard public key text -> Ed25519 form (b"" if none)
        self.signed = 0
        self.verified = 0

    def use(self, private_key_b64):
        """A rekeyed node signs with its new key from the document that names it on."""
        self._private = decode_key(private_key_b64, "private key")
        self._pair = {}             # peer public key text -> path MAC key (b"" if unusable)

    def path_mac(self, public_key, data):
        """The 16-byte MAC of `data` between us and the peer with `public_key`; None when
        that key cannot make one (malformed, low order): nothing is sent, nothing verifies."""
        k = self._pair.get(public_key)
        if k is None:
            try:
                shared = x25519(self._private, decode_key(public_key))
                k = blake2s(b"lanmesh-path-3" + shared).digest()
            except (KeyError_, ValueError):
                k = b""
            if k and not any(shared):
                k = b""                 # a low-order public key: no secret, no MAC
            self._pair[public_key] = k
        if not k:
            return None
        return blake2s(data, key=k, digest_size=16).digest()

    @staticmethod
    def nonce():
        return os.urandom(8)

    def sign(self, message):
        self.signed += 1
        return ed25519.xeddsa_sign(self._private, message)

    def verify(self, public_key, message, sig):
        ed = self._edwards.get(public_key)
        if ed is None:
            try:
                ed = ed25519.edwards_public(decode_key(public_key)) or b""
            except KeyError_:
                ed = b""
            self._edwards[public_key] = ed
        self.verified += 1
        return bool(ed) and ed25519.verify(ed, message, sig)
