# The mesh core's keys (mesh/node.py `keys`): this node signs its own link-state adverts with
# its WireGuard private key (XEdDSA) and verifies every other origin's against the WireGuard
# public key the signed network document lists for it. CPython side of lanmesh.ed25519.
from . import ed25519
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
