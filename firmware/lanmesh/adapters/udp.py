# The mesh's UDP socket: bound to this node's pinned overlay IPv6 address on the tunnel,
# so every datagram travels inside WireGuard and its source address names the sending peer
# (WireGuard only accepts a pinned /128 from the peer that owns it).
import errno
import socket

IPV6_FREEBIND = 78          # bind before DAD/address set-up finishes (Linux)
MAX_DATAGRAM = 2048


def host_of(prefix):
    """'fd00:6c6d::1/128' → canonical text form of the address."""
    addr = prefix.split("/", 1)[0]
    return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, addr))


class MeshSocket:
    def __init__(self, address, port):
        self.address = host_of(address)
        self.port = port
        self.send_errors = 0
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
            s.bind((self.address, port))
        except OSError:
            s.close()
            raise
        s.setblocking(False)
        self.sock = s

    def fileno(self):
        return self.sock.fileno()

    def send(self, address, data):
        try:
            self.sock.sendto(data, (address, self.port))
        except OSError as e:
            # no route / no key yet / buffer full: a lost probe, which is what probes measure
            if e.errno not in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENOKEY, errno.EAGAIN,
                               errno.ENOBUFS, errno.EADDRNOTAVAIL, errno.EINVAL, errno.EPERM):
                raise
            self.send_errors += 1

    def receive(self):
        """Every datagram waiting now: [(source address, data)]."""
        out = []
        while True:
            try:
                data, src = self.sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return out
            except OSError:
                return out
            out.append((host_of(src[0]), data))

    def close(self):
        self.sock.close()
