# The mesh's UDP socket: bound to this node's pinned overlay IPv6 address *and* to the tunnel
# device, so it only ever receives what arrived through WireGuard, where the source address
# names the sending peer (WireGuard only accepts a pinned /128 from the peer that owns it).
# Linux would otherwise deliver a datagram for our address that came in on any interface
# (the weak host model): a LAN host could send from a peer's pinned address and pose as it.
# Each datagram's arrival interface is checked again (IPV6_PKTINFO), and the nft table drops
# the mesh port on every other interface (dataplane/nft.py): three locks, one door.
import errno
import socket
import struct
import time

IPV6_FREEBIND = 78          # bind before DAD/address set-up finishes (Linux)
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
MAX_DATAGRAM = 2048
_CMSG_SPACE = socket.CMSG_SPACE(20)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_STAMP_SPACE = socket.CMSG_SPACE(16)


def kernel_stamp(ancillary):
    """The kernel's receive time (wall clock, s) from SO_TIMESTAMPNS ancillary data."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            if len(data) >= 16:
                sec, nsec = struct.unpack_from("=qq", data)
            elif len(data) >= 8:            # 32-bit timespec (older 32-bit ABIs)
                sec, nsec = struct.unpack_from("=ii", data)
            else:
                return None
            return sec + nsec / 1e9
    return None


def host_of(prefix):
    """'fd00:6c6d::1/128' → canonical text form of the address."""
    addr = prefix.split("/", 1)[0]
    return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, addr))


def ifindex(ifname):
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        return None


class MeshSocket:
    """Raises OSError when it cannot bind (address, port) on `ifname`."""

    def __init__(self, address, port, ifname):
        self.address = host_of(address)
        self.port = port
        self.ifname = ifname
        self.send_errors = 0
        self.wrong_interface = 0    # datagrams that arrived on another interface (dropped)
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
            self.ifindex = ifindex(ifname)
            if self.ifindex is None:
                raise OSError(errno.ENODEV, f"no interface {ifname}")
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            s.bind((self.address, port))
        except OSError:
            s.close()
            raise
        s.setblocking(False)
        self.sock = s

    def stale(self):
        """True when the tunnel device was recreated (new ifindex): bind a new socket."""
        return ifindex(self.ifname) != self.ifindex

    def fileno(self):
        return self.sock.fileno()

    def send(self, address, data):
        _send(self, data, (address, self.port))

    def receive(self):
        """Every datagram waiting now that arrived on the tunnel: [(source address, data)]."""
        out = []
        while True:
            try:
                data, anc, flags, src = self.sock.recvmsg(MAX_DATAGRAM, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                return out
            except OSError:
                return out
            if _arrived_on(anc) != self.ifindex or flags & socket.MSG_TRUNC:
                self.wrong_interface += 1
                continue
            out.append((host_of(src[0]), data))

    def close(self):
        self.sock.close()


# No route, no key yet, buffer full, an ICMP error from an earlier send: a lost message,
# which is what probes measure; counted, never raised.
_LOST = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENOKEY, errno.EAGAIN, errno.ENOBUFS,
         errno.EADDRNOTAVAIL, errno.EINVAL, errno.EPERM, errno.ECONNREFUSED)


def _send(owner, data, addr):
    try:
        owner.sock.sendto(data, addr)
    except OSError as e:
        if e.errno not in _LOST:
            raise
        owner.send_errors += 1


def _arrived_on(ancillary):
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(data) >= 20:
            return struct.unpack_from("=I", data, 16)[0]
    return None


class PathSocket:
    """Link probes outside the tunnel (issue 14): UDP on the path port of every underlay
    address (IPv4). What arrives is believed only if its MAC verifies (the mesh core). Each
    datagram comes with its age: how long ago the kernel received it (SO_TIMESTAMPNS), so
    neither our wake-up latency nor the peer's counts as path RTT."""

    def __init__(self, port):
        self.port = port
        self.send_errors = 0
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            s.bind(("0.0.0.0", port))
        except OSError:
            s.close()
            raise
        s.setblocking(False)
        self.sock = s

    def fileno(self):
        return self.sock.fileno()

    def send(self, addr, data):
        _send(self, data, addr)

    def receive(self):
        """[((ip, port), data, age ms)] waiting now."""
        out = []
        while True:
            try:
                data, anc, _flags, src = self.sock.recvmsg(MAX_DATAGRAM, _STAMP_SPACE)
            except (BlockingIOError, InterruptedError):
                return out
            except OSError:
                return out          # e.g. ECONNREFUSED from an earlier send: nothing to read
            at = kernel_stamp(anc)
            age = 0 if at is None else int((time.time() - at) * 1000)
            out.append(((src[0], src[1]), data, min(max(0, age), 60000)))

    def close(self):
        self.sock.close()
