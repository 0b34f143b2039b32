# ICMPv6 echoes inside the tunnel, for link liveness (mesh/liveness.py): from our overlay
# address to a peer's, answered by the peer's *kernel* (no lanmesh wake-up there), carried and
# authenticated by WireGuard both ways. Replies are never waited for: they queue on this raw
# socket and are read at the next sample, their RTT taken from the kernel's receive timestamp,
# so a node's wake-ups do not grow with its peer count.
import os
import socket
import struct
import time

from .udp import SO_BINDTODEVICE, IPV6_FREEBIND, SO_TIMESTAMPNS, host_of, kernel_stamp

ICMP6_FILTER = 1
ECHO_REQUEST, ECHO_REPLY = 128, 129
_CMSG = socket.CMSG_SPACE(16)
_KEEP = 64                      # echoes in flight remembered (then the oldest is forgotten)


def _filter_only(kind):
    """ICMP6_FILTER bitmap: a set bit blocks a type; pass only `kind`."""
    words = [0xFFFFFFFF] * 8
    words[kind >> 5] &= ~(1 << (kind & 31))
    return struct.pack("=8I", *words)


class EchoSocket:
    """Raises OSError when it cannot open (no CAP_NET_RAW, no IPv6)."""

    def __init__(self, address, ifname):
        self.address = host_of(address)
        self.ident = int.from_bytes(os.urandom(2), "big")
        self.sent = {}              # (peer address, seq) -> (wall time sent, nonce)
        self.sent_total = self.replies = self.send_errors = 0
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
            s.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, _filter_only(ECHO_REPLY))
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            s.bind((self.address, 0))
        except OSError:
            s.close()
            raise
        s.setblocking(False)
        self.sock = s

    def send(self, address, seq):
        nonce = os.urandom(8)
        # type, code, checksum (the kernel fills it in for ICMPv6 raw sockets), id, seq
        packet = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, self.ident, seq) + nonce
        self.sent[(address, seq)] = (time.time(), nonce)
        self.sent_total += 1
        if len(self.sent) > _KEEP:
            del self.sent[next(iter(self.sent))]
        try:
            self.sock.sendto(packet, (address, 0))
        except OSError:
            self.send_errors += 1       # no route/key yet: a lost echo, which is the point

    def drain(self):
        """[(peer address, seq, rtt ms)] for the replies to our echoes waiting now."""
        out = []
        while True:
            try:
                data, anc, _flags, src = self.sock.recvmsg(64, _CMSG)
            except (BlockingIOError, InterruptedError):
                return out
            except OSError:
                return out
            if len(data) < 16 or data[0] != ECHO_REPLY:
                continue
            ident, seq = struct.unpack_from("!HH", data, 4)
            if ident != self.ident:
                continue                # someone else's ping
            key = (host_of(src[0]), seq)
            sent = self.sent.get(key)
            if sent is None or sent[1] != data[8:16]:
                continue
            del self.sent[key]
            self.replies += 1
            at = kernel_stamp(anc) or time.time()
            out.append((key[0], seq, max(0, int(round((at - sent[0]) * 1000)))))

    def counts(self):
        return {"sent": self.sent_total, "replies": self.replies, "send_errors": self.send_errors}

    def close(self):
        self.sock.close()
