# The mesh control messages on the wire: path probe and ack, LSAs, DB summary, LSA request,
# and relay requests. Binary, big-endian, strictly bounds-checked: any malformed datagram
# raises WireError, which the node counts and drops.
# PROBE and ACK measure the *direct* path between two routers, so they travel outside the
# tunnel (UDP between underlay addresses, on the path port): each carries a random nonce and
# a 16-byte MAC under the pair's key (from X25519 of the two WireGuard keys: only the two
# ends have it), and an ACK must echo the nonce of a probe we sent. Everything else travels
# inside WireGuard between pinned probe addresses (the socket takes only what arrived through
# the tunnel), so the tunnel authenticates the neighbour that sent it; the sender name inside
# is checked against it. An LSA is also signed by its origin (XEdDSA with the origin's
# WireGuard key, see lanmesh.ed25519), so a neighbour can forward it but not forge or alter it.
#
# Every message:  magic 0xA7 | version 4 | type u8 | sender name (u8 len + [a-z0-9-])
#   PROBE   1:  seq u32 | digest u32 | nonce 8 | hold u16 | mac 16  (digest = sender's LSDB
#                 digest; hold 0)
#   ACK     2:  seq u32 | digest u32 | nonce 8 | hold u16 | mac 16  (seq and nonce echoed; hold:
#                 ms from the kernel receiving the probe to this answer, which the prober takes
#                 off its RTT: a slow router's Python must not make its links look long)
#   LSAS    3:  count u8 | count x LSA
#                 LSA = origin name | seq u32 | age_s u16 | nlinks u16 | nlinks x (name | cost u16)
#                       | signature 64 bytes over signed_bytes(LSA) (everything but the age)
#   SUMMARY 4:  count u16 | count x (origin name | seq u32) | zero padding
#   REQUEST 5:  count u16 | count x origin name | zero padding
#   RELAY   8:  a name | b name | want u8        (forward session {a, b} for me; 0: release)
#   RELAYED 9:  a name | b name | status u8 | port_a u16 | port_b u16
#               (send toward a to my port_a, toward b to port_b; status 0 = granted)
# SUMMARY and REQUEST are padded to MAX_DATAGRAM: what they make the receiver send back is
# bounded by twice their size (no amplification), so they must carry the size they ask for.
# Names follow the document's rule [a-z0-9][a-z0-9-]{0,30}; costs are 1..65535; names in a
# SUMMARY or REQUEST are de-duplicated on decoding.

MAGIC = 0xA7
VERSION = 4
PROBE = 1
ACK = 2
LSAS = 3
SUMMARY = 4
REQUEST = 5
RELAY = 8
RELAYED = 9
NONCE_BYTES = 8
MAC_BYTES = 16
GRANTED, NOT_RELAY, FULL, NO_PATH = 0, 1, 2, 3
MAX_DATAGRAM = 1200  # LSA batches are split to stay under this; one oversized LSA goes alone
U32 = 0xFFFFFFFF
SIG_BYTES = 64
SIGNED_PREFIX = b"lanmesh-lsa-2\x00"   # domain separation: an LSA signature signs nothing else

_NAME_FIRST = b"abcdefghijklmnopqrstuvwxyz0123456789"
_NAME_REST = _NAME_FIRST + b"-"


class WireError(ValueError):
    """A datagram that is not a well-formed mesh message (count it, drop it)."""


class Lsa:
    """One node's advertisement: its up links and their costs, signed by the origin. `age_s`
    is only meaningful on the wire (and not signed); the database keeps a local expiry."""
    __slots__ = ("origin", "seq", "links", "age_s", "sig")

    def __init__(self, origin, seq, links, age_s=0, sig=b""):
        self.origin = origin
        self.seq = seq
        self.links = links      # {neighbor name: cost}
        self.age_s = age_s
        self.sig = sig          # 64-byte signature over signed_bytes(self)

    def __eq__(self, other):
        return (isinstance(other, Lsa) and self.origin == other.origin and self.seq == other.seq
                and self.links == other.links and self.age_s == other.age_s
                and self.sig == other.sig)

    def __repr__(self):
        return "Lsa(%s#%d %r age=%d)" % (self.origin, self.seq, sorted(self.links.items()), self.age_s)


class Message:
    """A decoded message. Fields by type: PROBE/ACK seq+digest+nonce+mac (and `maced`, the
    bytes the mac covers), LSAS lsas, SUMMARY entries [(origin, seq)], REQUEST origins,
    RELAY a+b+want, RELAYED a+b+status+ports (port_a, port_b)."""
    __slots__ = ("type", "sender", "seq", "digest", "lsas", "entries", "origins", "nonce",
                 "mac", "maced", "a", "b", "want", "status", "ports", "hold")

    def __init__(self, type, sender, seq=0, digest=0, lsas=(), entries=(), origins=()):
        self.type = type
        self.sender = sender
        self.seq = seq
        self.digest = digest
        self.lsas = lsas
        self.entries = entries
        self.origins = origins
        self.nonce = self.mac = self.maced = b""
        self.hold = 0
        self.a = self.b = None
        self.want = self.status = 0
        self.ports = (0, 0)


def valid_name(name):
    if not isinstance(name, str) or not 1 <= len(name) <= 31:
        return False
    b = name.encode()
    if len(b) != len(name) or b[0] not in _NAME_FIRST:
        return False
    for c in b:
        if c not in _NAME_REST:
            return False
    return True


# ---- encoding -------------------------------------------------------------------------------

def _name(out, name):
    if not valid_name(name):
        raise WireError("bad name %r" % (name,))
    out.append(len(name))
    out.extend(name.encode())


def _u16(out, v):
    if not 0 <= v <= 0xFFFF:
        raise WireError("u16 out of range: %r" % (v,))
    out.extend(v.to_bytes(2, "big"))


def _u32(out, v):
    if not 0 <= v <= U32:
        raise WireError("u32 out of range: %r" % (v,))
    out.extend(v.to_bytes(4, "big"))


def _head(type, sender):
    out = bytearray((MAGIC, VERSION, type))
    _name(out, sender)
    return out


def _path(type, sender, seq, digest, nonce, mac, hold=0):
    """mac(bytes) -> MAC_BYTES: the pair's MAC over everything before it."""
    if len(nonce) != NONCE_BYTES:
        raise WireError("nonce must be %d bytes" % NONCE_BYTES)
    out = _head(type, sender)
    _u32(out, seq)
    _u32(out, digest)
    out.extend(nonce)
    _u16(out, min(0xFFFF, max(0, hold)))
    tag = mac(bytes(out))
    if len(tag) != MAC_BYTES:
        raise WireError("mac must be %d bytes" % MAC_BYTES)
    out.extend(tag)
    return bytes(out)


def encode_probe(sender, seq, digest, nonce, mac):
    return _path(PROBE, sender, seq, digest, nonce, mac)


def encode_ack(sender, seq, digest, nonce, mac, hold=0):
    return _path(ACK, sender, seq, digest, nonce, mac, hold)


def encode_relay(sender, a, b, want):
    out = _head(RELAY, sender)
    _name(out, a)
    _name(out, b)
    out.append(1 if want else 0)
    return bytes(out)


def encode_relayed(sender, a, b, status, port_a=0, port_b=0):
    out = _head(RELAYED, sender)
    _name(out, a)
    _name(out, b)
    out.append(status & 0xFF)
    _u16(out, port_a)
    _u16(out, port_b)
    return bytes(out)


def peek(data):
    """(type, sender) from a datagram's header, or None: who a path datagram claims to be
    from, so that its MAC can be checked with that pair's key."""
    try:
        r = _Reader(bytes(data[:36]))
        if r.u8() != MAGIC or r.u8() != VERSION:
            return None
        return r.u8(), r.name()
    except WireError:
        return None


def _links_bytes(out, links):
    _u16(out, len(links))
    for n in sorted(links):
        _name(out, n)
        c = links[n]
        if not 1 <= c <= 0xFFFF:
            raise WireError("cost out of range: %r" % (c,))
        _u16(out, c)


def signed_bytes(lsa):
    """What the origin signs: prefix | origin | seq | links (not the age, which changes on
    the way, nor the signature)."""
    out = bytearray(SIGNED_PREFIX)
    _name(out, lsa.origin)
    _u32(out, lsa.seq)
    _links_bytes(out, lsa.links)
    return bytes(out)


def _lsa_bytes(lsa):
    if len(lsa.sig) != SIG_BYTES:
        raise WireError("LSA of %s is not signed" % lsa.origin)
    out = bytearray()
    _name(out, lsa.origin)
    _u32(out, lsa.seq)
    _u16(out, min(lsa.age_s, 0xFFFF))
    _links_bytes(out, lsa.links)
    out.extend(lsa.sig)
    return out


def encode_lsas(sender, lsas):
    """A list of datagrams carrying all `lsas`, each ≤ MAX_DATAGRAM where possible."""
    msgs = []
    head = _head(LSAS, sender)
    cur, n = bytearray(), 0
    for lsa in lsas:
        b = _lsa_bytes(lsa)
        if n and (n == 255 or len(head) + 1 + len(cur) + len(b) > MAX_DATAGRAM):
            msgs.append(bytes(head) + bytes((n,)) + bytes(cur))
            cur, n = bytearray(), 0
        cur.extend(b)
        n += 1
    if n:
        msgs.append(bytes(head) + bytes((n,)) + bytes(cur))
    return msgs


def encode_summary(sender, entries):
    """Padded datagrams listing (origin, seq) for every LSA the sender holds."""
    return _chunks(SUMMARY, sender, entries, lambda out, e: (_name(out, e[0]), _u32(out, e[1])))


def encode_request(sender, origins, per_datagram=255):
    """Padded datagrams asking for `origins`, at most `per_datagram` each: the answer to one
    is bounded by twice its size, so the asker splits what it expects to be large."""
    return _chunks(REQUEST, sender, origins, _name, per_datagram)


def _chunks(type, sender, items, put, per_datagram=0xFFFF):
    head = _head(type, sender)
    msgs, cur, n = [], bytearray(), 0
    for item in items:
        b = bytearray()
        put(b, item)
        if n and (n >= per_datagram or len(head) + 2 + len(cur) + len(b) > MAX_DATAGRAM):
            msgs.append(_padded(head, n, cur))
            cur, n = bytearray(), 0
        cur.extend(b)
        n += 1
    if n:
        msgs.append(_padded(head, n, cur))
    return msgs


def _padded(head, n, body):
    data = bytes(head) + n.to_bytes(2, "big") + bytes(body)
    return data + bytes(max(0, MAX_DATAGRAM - len(data)))


# ---- decoding -------------------------------------------------------------------------------

class _Reader:
    __slots__ = ("b", "i")

    def __init__(self, data):
        self.b = data
        self.i = 0

    def take(self, n):
        j = self.i + n
        if j > len(self.b):
            raise WireError("truncated at byte %d" % self.i)
        v = self.b[self.i:j]
        self.i = j
        return v

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return int.from_bytes(self.take(2), "big")

    def u32(self):
        return int.from_bytes(self.take(4), "big")

    def name(self):
        n = self.u8()
        raw = self.take(n)
        if not 1 <= n <= 31 or raw[0] not in _NAME_FIRST:
            raise WireError("bad name at byte %d" % (self.i - n))
        for c in raw:
            if c not in _NAME_REST:
                raise WireError("bad name at byte %d" % (self.i - n))
        return bytes(raw).decode()


def decode(data):
    """bytes -> Message, or WireError. Trailing bytes are an error too."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError("not bytes")
    r = _Reader(bytes(data))
    if r.u8() != MAGIC:
        raise WireError("bad magic")
    if r.u8() != VERSION:
        raise WireError("unsupported version")
    t = r.u8()
    sender = r.name()
    if t == PROBE or t == ACK:
        m = Message(t, sender, seq=r.u32(), digest=r.u32())
        m.nonce = bytes(r.take(NONCE_BYTES))
        m.hold = r.u16()
        m.maced = r.b[:r.i]
        m.mac = bytes(r.take(MAC_BYTES))
    elif t == RELAY or t == RELAYED:
        m = Message(t, sender)
        m.a, m.b = r.name(), r.name()
        if m.a == m.b:
            raise WireError("a session needs two ends")
        if t == RELAY:
            m.want = r.u8()
            if m.want > 1:
                raise WireError("bad want %d" % m.want)
        else:
            m.status = r.u8()
            m.ports = (r.u16(), r.u16())
    elif t == LSAS:
        count = r.u8()
        if count == 0:
            raise WireError("empty LSA batch")
        m = Message(t, sender, lsas=[_lsa(r) for _ in range(count)])
    elif t == SUMMARY:
        entries, seen = [], set()
        for _ in range(r.u16()):
            origin, seq = r.name(), r.u32()
            if origin not in seen:
                seen.add(origin)
                entries.append((origin, seq))
        m = Message(t, sender, entries=entries)
    elif t == REQUEST:
        origins, seen = [], set()
        for _ in range(r.u16()):
            origin = r.name()
            if origin not in seen:
                seen.add(origin)
                origins.append(origin)
        m = Message(t, sender, origins=origins)
    else:
        raise WireError("unknown message type %d" % t)
    if t == SUMMARY or t == REQUEST:
        if r.b[r.i:].strip(b"\0"):
            raise WireError("non-zero padding")
    elif r.i != len(r.b):
        raise WireError("%d trailing bytes" % (len(r.b) - r.i))
    return m


def _lsa(r):
    origin = r.name()
    seq = r.u32()
    age = r.u16()
    links = {}
    for _ in range(r.u16()):
        n = r.name()
        c = r.u16()
        if c == 0:
            raise WireError("zero cost")
        if n in links or n == origin:
            raise WireError("duplicate or self link %r" % n)
        links[n] = c
    sig = bytes(r.take(SIG_BYTES))
    return Lsa(origin, seq, links, age, sig)
