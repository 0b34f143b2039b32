# IP addresses and prefixes: the part of the stdlib's ipaddress the daemon uses. ipaddress
# costs ~0.75 MB RSS on import (a dozen classes, functools caches, 2,300 lines); this
# parses with the C library's inet_pton (strict dotted quads: no leading zeros, no
# shorthand, no scope ids) and prints as ipaddress does (RFC 5952, IPv4-mapped in hex).
import socket

_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
_BITS = {4: 32, 6: 128}


class Address:
    """An IPv4 or IPv6 address: .version, int(a), .packed, str(a); equal by value."""
    __slots__ = ("version", "_int")

    def __init__(self, version, value):
        self.version, self._int = version, value

    @property
    def packed(self):
        return self._int.to_bytes(_BITS[self.version] // 8, "big")

    def __int__(self):
        return self._int

    def __str__(self):
        if self.version == 4:
            return socket.inet_ntop(socket.AF_INET, self.packed)
        groups = ["%x" % (self._int >> s & 0xFFFF) for s in range(112, -16, -16)]
        start, length, run = -1, 0, 0
        for i, g in enumerate(groups):          # the longest run of zeros, leftmost on ties
            run = run + 1 if g == "0" else 0
            if run > length:
                start, length = i - run + 1, run
        if length > 1:
            head, tail = groups[:start], groups[start + length:]
            return ":".join(head) + "::" + ":".join(tail)
        return ":".join(groups)

    def __repr__(self):
        return f"Address({str(self)!r})"

    def __eq__(self, other):
        return isinstance(other, Address) and (self.version, self._int) == (other.version,
                                                                             other._int)

    def __hash__(self):
        return hash((self.version, self._int))


def ip_address(value):
    """'198.18.0.1' / 'fd00::1' / 4 or 16 packed bytes → Address; ValueError otherwise."""
    if isinstance(value, Address):
        return value
    if isinstance(value, (bytes, bytearray)):
        version = {4: 4, 16: 6}.get(len(value))
        if version is None:
            raise ValueError(f"{len(value)} bytes are not an IP address")
        return Address(version, int.from_bytes(value, "big"))
    if isinstance(value, str) and value.isascii():
        try:
            return ip_address(socket.inet_pton(_FAMILY[6 if ":" in value else 4], value))
        except OSError:
            pass
    raise ValueError(f"{value!r} does not appear to be an IPv4 or IPv6 address")


class Network:
    """A prefix: .network_address, .broadcast_address, .prefixlen, .max_prefixlen,
    .version; `addr in net`, overlaps(), subnet_of(); str() is 'address/len'."""
    __slots__ = ("network_address", "prefixlen")

    def __init__(self, address, prefixlen):
        self.network_address, self.prefixlen = address, prefixlen

    @property
    def version(self):
        return self.network_address.version

    @property
    def max_prefixlen(self):
        return _BITS[self.version]

    def _range(self):
        first = int(self.network_address)
        return first, first | ((1 << (self.max_prefixlen - self.prefixlen)) - 1)

    @property
    def broadcast_address(self):
        return Address(self.version, self._range()[1])

    def __contains__(self, addr):
        first, last = self._range()
        return addr.version == self.version and first <= int(addr) <= last

    def overlaps(self, other):
        (a, b), (c, d) = self._range(), other._range()
        return self.version == other.version and a <= d and c <= b

    def subnet_of(self, other):
        (a, b), (c, d) = self._range(), other._range()
        return self.version == other.version and c <= a and b <= d

    def __str__(self):
        return f"{self.network_address}/{self.prefixlen}"

    def __repr__(self):
        return f"Network({str(self)!r})"

    def __eq__(self, other):
        return isinstance(other, Network) and (self.network_address, self.prefixlen) == (
            other.network_address, other.prefixlen)

    def __hash__(self):
        return hash((self.network_address, self.prefixlen))


def _split(text):
    addr_text, sep, length = text.partition("/")
    addr = ip_address(addr_text)
    bits = _BITS[addr.version]
    if not sep:
        return addr, bits
    if not (length.isascii() and length.isdigit()) or len(length) > 3 or int(length) > bits:
        raise ValueError(f"{text!r}: {length!r} is not a valid prefix length")
    return addr, int(length)


def ip_network(text, strict=True):
    """'198.18.1.0/24' → Network; strict: host bits set is a ValueError, else masked."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} does not appear to be an IPv4 or IPv6 network")
    addr, length = _split(text)
    host = (1 << (_BITS[addr.version] - length)) - 1
    if int(addr) & host:
        if strict:
            raise ValueError(f"{text} has host bits set")
        addr = Address(addr.version, int(addr) & ~host)
    return Network(addr, length)


def ip_interface(text):
    """'198.18.1.1/24' → the same, normalised ('address/len' with the host bits kept)."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} does not appear to be an IPv4 or IPv6 interface")
    addr, length = _split(text)
    return f"{addr}/{length}"
