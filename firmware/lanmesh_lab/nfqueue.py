# nfnetlink_queue spoken over a raw AF_NETLINK socket with struct: no library, no C helper.
# Pure encode/decode functions (unit-testable without root) plus a small socket class.
# Reference: include/uapi/linux/netfilter/nfnetlink_queue.h and linux/netlink.h.
import errno
import os
import socket
import struct

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK = 1, 4

# config attributes / commands / modes
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN, NFQA_CFG_MASK, NFQA_CFG_FLAGS = 1, 2, 3, 4, 5
CMD_BIND, CMD_UNBIND = 1, 2
COPY_NONE, COPY_META, COPY_PACKET = 0, 1, 2
CFG_F_FAIL_OPEN, CFG_F_CONNTRACK, CFG_F_GSO = 1, 2, 4

# packet / verdict attributes
NFQA_PACKET_HDR, NFQA_VERDICT_HDR, NFQA_PAYLOAD = 1, 2, 10
NF_DROP, NF_ACCEPT = 0, 1

_NLMSGHDR = struct.Struct("=IHHII")     # len, type, flags, seq, portid (host order)
_NFGENMSG = struct.Struct("!BBH")       # family, version, res_id (big endian)
_NLATTR = struct.Struct("=HH")
_PKT_HDR = struct.Struct("!IHB")        # packet_id, hw_protocol, hook
_NLA_TYPE_MASK = 0x3FFF                 # strip NLA_F_NESTED / NLA_F_NET_BYTEORDER


class Malformed(ValueError):
    """A netlink message that does not parse; the caller counts it and carries on."""


def _align(n):
    return (n + 3) & ~3


def attr(kind, data):
    a = _NLATTR.pack(_NLATTR.size + len(data), kind) + data
    return a + b"\0" * (_align(len(a)) - len(a))


def message(msg_type, payload, flags=NLM_F_REQUEST, seq=0, res_id=0, family=socket.AF_UNSPEC):
    """One nfnetlink message for the queue subsystem."""
    body = _NFGENMSG.pack(family, 0, res_id) + payload
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg_type,
                          flags, seq, 0) + body


def config_cmd(queue, cmd, seq=0, pf=socket.AF_INET):
    return message(NFQNL_MSG_CONFIG, attr(NFQA_CFG_CMD, struct.pack("!BxH", cmd, pf)),
                   NLM_F_REQUEST | NLM_F_ACK, seq, queue)


def config_params(queue, copy_mode, copy_range, maxlen=None, flags=None, seq=0):
    p = attr(NFQA_CFG_PARAMS, struct.pack("!IB", copy_range, copy_mode))
    if maxlen is not None:
        p += attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", maxlen))
    if flags is not None:
        # the mask names which flag bits this message sets, so others keep their value
        p += attr(NFQA_CFG_FLAGS, struct.pack("!I", flags)) + attr(NFQA_CFG_MASK, struct.pack("!I", flags | CFG_F_FAIL_OPEN | CFG_F_GSO))
    return message(NFQNL_MSG_CONFIG, p, NLM_F_REQUEST | NLM_F_ACK, seq, queue)


def verdict(queue, packet_id, v=NF_ACCEPT):
    # no ACK: verdicts are fire-and-forget, errors (e.g. unknown id) come back as NLMSG_ERROR
    return message(NFQNL_MSG_VERDICT, attr(NFQA_VERDICT_HDR, struct.pack("!II", v, packet_id)),
                   NLM_F_REQUEST, 0, queue)


def split_messages(buf):
    """Yield (type, flags, seq, body) for each netlink message in one datagram.
    Raises Malformed at the first message whose header lies about its length."""
    off = 0
    while off + _NLMSGHDR.size <= len(buf):
        ln, typ, flags, seq, _pid = _NLMSGHDR.unpack_from(buf, off)
        if ln < _NLMSGHDR.size or off + ln > len(buf):
            raise Malformed(f"nlmsg length {ln} at offset {off} of {len(buf)}")
        yield typ, flags, seq, bytes(buf[off + _NLMSGHDR.size:off + ln])
        off += _align(ln)
    if off < len(buf) and len(buf) - off >= 4:
        raise Malformed(f"{len(buf) - off} trailing bytes")


def parse_attrs(buf, off=0):
    out = {}
    while off + _NLATTR.size <= len(buf):
        ln, kind = _NLATTR.unpack_from(buf, off)
        if ln < _NLATTR.size or off + ln > len(buf):
            raise Malformed(f"nlattr length {ln} at offset {off} of {len(buf)}")
        out[kind & _NLA_TYPE_MASK] = bytes(buf[off + _NLATTR.size:off + ln])
        off += _align(ln)
    return out


def parse_error(body):
    """NLMSG_ERROR body → negative errno (0 is an ACK)."""
    if len(body) < 4:
        raise Malformed("short NLMSG_ERROR")
    return struct.unpack_from("=i", body)[0]


def parse_packet(body):
    """NFQNL_MSG_PACKET body → (queue, packet_id, hw_protocol, hook, payload head)."""
    if len(body) < _NFGENMSG.size:
        raise Malformed("short nfgenmsg")
    _fam, _ver, queue = _NFGENMSG.unpack_from(body)
    attrs = parse_attrs(body, _NFGENMSG.size)
    hdr = attrs.get(NFQA_PACKET_HDR)
    if hdr is None or len(hdr) < _PKT_HDR.size:
        raise Malformed("packet without NFQA_PACKET_HDR")
    pid, proto, hook = _PKT_HDR.unpack_from(hdr)
    return queue, pid, proto, hook, attrs.get(NFQA_PAYLOAD, b"")


def ip_pair(payload):
    """(src, dst) as packed bytes from an IPv4 or IPv6 header, or None."""
    if len(payload) >= 20 and payload[0] >> 4 == 4:
        return payload[12:16], payload[16:20]
    if len(payload) >= 40 and payload[0] >> 4 == 6:
        return payload[8:24], payload[24:40]
    return None


def proc_stats(text, queue):
    """Our queue's line of /proc/net/netfilter/nfnetlink_queue as kernel_* counters, or None.
    queue_dropped: queue full (maxlen); user_dropped: our receive buffer was full."""
    names = ("queue_num", "portid", "total", "copy_mode", "copy_range", "queue_dropped",
             "user_dropped", "id_sequence")
    for line in text.splitlines():
        f = line.split()
        if len(f) >= len(names) and f[0].isdigit() and int(f[0]) == queue:
            return {f"kernel_{k}": int(v) for k, v in zip(names, f)}
    return None


class QueueSocket:
    """One bound queue. recv() yields parsed packets and counts what it could not parse."""

    def __init__(self, queue, copy_range=40, maxlen=1024, fail_open=False, rcvbuf=8 << 20):
        self.queue = queue
        self.malformed = 0
        self.enobufs = 0          # the kernel dropped packets: our receive buffer was full
        self.verdict_errors = 0
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)     # SO_RCVBUFFORCE (root)
            except OSError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.bind((0, 0))
            self.sock.settimeout(5)
            self._seq = 0
            self._request(config_cmd(queue, CMD_BIND, self._next_seq()))
            flags = CFG_F_GSO | (CFG_F_FAIL_OPEN if fail_open else 0)
            self._request(config_params(queue, COPY_PACKET, copy_range, maxlen, flags, self._next_seq()))
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise

    def _next_seq(self):
        self._seq += 1
        return self._seq

    def _request(self, msg):
        """Send one config message and wait for its ACK (blocking; only at start-up)."""
        seq = _NLMSGHDR.unpack_from(msg)[3]
        self.sock.send(msg)
        while True:
            for typ, _f, s, body in split_messages(self.sock.recv(65536)):
                if typ == NLMSG_ERROR and s == seq:
                    err = parse_error(body)
                    if err:
                        raise OSError(-err, f"nfqueue config: {os.strerror(-err)}")
                    return

    def fileno(self):
        return self.sock.fileno()

    def recv(self, limit=256):
        """Drain up to `limit` datagrams; returns [(packet_id, payload head)]."""
        out = []
        for _ in range(limit):
            try:
                buf = self.sock.recv(65536)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    self.enobufs += 1
                    continue
                raise
            try:
                for typ, _f, _s, body in split_messages(buf):
                    if typ == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                        _q, pid, _proto, _hook, head = parse_packet(body)
                        out.append((pid, head))
                    elif typ == NLMSG_ERROR:
                        if parse_error(body):
                            self.verdict_errors += 1
                    elif typ != NLMSG_DONE:
                        self.malformed += 1
            except Malformed:
                self.malformed += 1
        return out

    def accept(self, packet_ids):
        """Accept verdicts for many packets, concatenated into as few sends as possible."""
        batch = []
        for pid in packet_ids:
            batch.append(verdict(self.queue, pid))
            if len(batch) >= 512:
                self._send(b"".join(batch))
                batch = []
        if batch:
            self._send(b"".join(batch))

    def _send(self, data):
        while True:
            try:
                self.sock.send(data)
                return
            except BlockingIOError:
                continue        # kernel-side netlink send does not really block; retry

    def close(self):
        try:
            self.sock.setblocking(True)
            self.sock.settimeout(1)
            self._request(config_cmd(self.queue, CMD_UNBIND, self._next_seq()))
        except OSError:
            pass
        finally:
            self.sock.close()
