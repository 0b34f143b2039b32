# Netlink messages and attributes, and a blocking request/reply socket: the small part of
# netlink the data plane needs (rtnetlink links, addresses, routes; WireGuard over generic
# netlink). Written here instead of importing pyroute2, whose package import alone costs
# ~24 MB RSS and 370 modules, and whose WireGuard flags changed between 0.7 and 0.9.
#
# Replies come from the kernel, but are still parsed strictly: every length is checked
# against what is left, a fixed-size attribute must have its exact size, nesting is
# bounded, and a message that does not answer our request (sequence, port) is dropped.
import os
import socket
import struct

NLMSG_ERROR, NLMSG_DONE = 2, 3
F_REQUEST, F_MULTI, F_ACK, F_DUMP = 0x1, 0x2, 0x4, 0x300
F_REPLACE, F_EXCL, F_CREATE = 0x100, 0x200, 0x400
F_ACK_TLVS = 0x200               # on NLMSG_ERROR: extended-ack attributes follow
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF
SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK = 270, 10, 11
NLMSGERR_ATTR_MSG = 1

HEADER = struct.Struct("=IHHII")
ATTR = struct.Struct("=HH")
MAX_DEPTH = 4                    # WireGuard: device → peers → peer → allowed IPs
MAX_REPLY = 1 << 22              # a dump bigger than this is refused, not buffered
RECV_SIZE = 65536
TIMEOUT_S = 5.0


class NetlinkError(OSError):
    """The kernel refused a request; `.code` is the errno (as pyroute2's was)."""

    def __init__(self, code, what="", detail=""):
        super().__init__(code, os.strerror(code) + (f" ({detail})" if detail else ""))
        self.code, self.what = code, what

    def __str__(self):
        return f"{self.what}: {self.strerror}" if self.what else self.strerror


class MalformedReply(ValueError):
    pass


def _align(n):
    return (n + 3) & ~3


# --- attributes --------------------------------------------------------------------------

def attr(kind, payload):
    """One attribute: header, payload, padding to 4 bytes."""
    n = ATTR.size + len(payload)
    return ATTR.pack(n, kind) + payload + b"\0" * (_align(n) - n)


def nested(kind, *parts):
    return attr(kind | NLA_F_NESTED, b"".join(parts))


def u8(kind, v):
    return attr(kind, struct.pack("=B", v))


def u16(kind, v):
    return attr(kind, struct.pack("=H", v))


def u32(kind, v):
    return attr(kind, struct.pack("=I", v))


def string(kind, text):
    return attr(kind, text.encode() + b"\0")


def parse_attrs(data, depth=0):
    """[(type, payload)] from a run of attributes; raises MalformedReply on any overrun."""
    if depth > MAX_DEPTH:
        raise MalformedReply("attributes nested too deeply")
    out, off = [], 0
    while off < len(data):
        if len(data) - off < ATTR.size:
            raise MalformedReply("truncated attribute header")
        n, kind = ATTR.unpack_from(data, off)
        if n < ATTR.size or off + n > len(data):
            raise MalformedReply(f"attribute length {n} overruns its message")
        out.append((kind & NLA_TYPE_MASK, data[off + ATTR.size:off + n]))
        off += _align(n)
    return out


def attr_map(data, depth=0):
    """{type: payload}; a repeated attribute keeps its last value (as the kernel's own
    parsers do)."""
    return dict(parse_attrs(data, depth))


def get_u(payload, size, what):
    fmt = {1: "=B", 2: "=H", 4: "=I", 8: "=Q"}[size]
    if len(payload) != size:
        raise MalformedReply(f"{what}: {len(payload)} bytes, expected {size}")
    return struct.unpack(fmt, payload)[0]


def get_string(payload, what):
    if not payload.endswith(b"\0"):
        raise MalformedReply(f"{what}: not NUL-terminated")
    try:
        return payload[:-1].decode()
    except UnicodeDecodeError:
        raise MalformedReply(f"{what}: not UTF-8") from None


def get_bytes(payload, size, what):
    if len(payload) != size:
        raise MalformedReply(f"{what}: {len(payload)} bytes, expected {size}")
    return bytes(payload)


# --- messages ----------------------------------------------------------------------------

def message(kind, flags, seq, body):
    return HEADER.pack(HEADER.size + len(body), kind, flags, seq, 0) + body


def split_messages(data):
    """[(type, flags, seq, pid, body)] from one datagram."""
    out, off = [], 0
    while off < len(data):
        if len(data) - off < HEADER.size:
            raise MalformedReply("truncated message header")
        n, kind, flags, seq, pid = HEADER.unpack_from(data, off)
        if n < HEADER.size or off + n > len(data):
            raise MalformedReply(f"message length {n} overruns the datagram")
        out.append((kind, flags, seq, pid, data[off + HEADER.size:off + n]))
        off += _align(n)
    return out


def _error(body, flags):
    if len(body) < 4 + HEADER.size:
        raise MalformedReply("truncated error message")
    code = -struct.unpack_from("=i", body)[0]
    detail = ""
    if flags & F_ACK_TLVS:      # capped ack: the original header, then the TLVs
        try:
            msg = attr_map(body[4 + HEADER.size:]).get(NLMSGERR_ATTR_MSG)
            detail = get_string(msg, "extended ack") if msg else ""
        except MalformedReply:
            detail = ""
    return code, detail


class Socket:
    """One netlink socket, used by one thread at a time: request() sends one message and
    returns the bodies of its replies (all parts of a dump), or raises NetlinkError."""

    def __init__(self, proto):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, proto)
        try:
            for opt in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
                try:
                    self.sock.setsockopt(SOL_NETLINK, opt, 1)
                except OSError:     # old kernel: plain errors
                    pass
            self.sock.settimeout(TIMEOUT_S)
            self.sock.bind((0, 0))
            self.port = self.sock.getsockname()[0]
        except BaseException:
            self.sock.close()
            raise
        self.seq = 0
        self._buf = bytearray(RECV_SIZE)    # one receive buffer: no 64 kB allocation per read

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def request(self, kind, flags, body, what="", dump=False):
        """Replies' (type, body) for a request: a dump's parts up to DONE, or a request's
        replies up to its ack; [] for a plain ack."""
        self.seq = (self.seq % 0xFFFFFFFF) + 1
        flags |= F_REQUEST | (F_DUMP if dump else F_ACK)
        self.sock.send(message(kind, flags, self.seq, body))
        replies, total = [], 0
        while True:
            try:
                data = bytes(memoryview(self._buf)[:self.sock.recv_into(self._buf)])
            except socket.timeout:
                raise NetlinkError(110, what, "no reply from the kernel") from None
            total += len(data)
            if total > MAX_REPLY:
                raise MalformedReply(f"reply larger than {MAX_REPLY} bytes")
            for rkind, rflags, seq, pid, rbody in split_messages(data):
                if seq != self.seq or pid not in (0, self.port):
                    continue        # a late answer to an earlier, timed-out request
                if rkind == NLMSG_ERROR:
                    code, detail = _error(rbody, rflags)
                    if code:
                        raise NetlinkError(code, what, detail)
                    return replies  # the ack ends a request
                if rkind == NLMSG_DONE:
                    if len(rbody) >= 4 and struct.unpack_from("=i", rbody)[0] < 0:
                        raise NetlinkError(-struct.unpack_from("=i", rbody)[0], what)
                    return replies  # DONE ends a dump (no ack follows it)
                replies.append((rkind, rbody))
