# Kernel-style netlink replies built from lanmesh.netlink.codec's encoders, for the tests:
# what the kernel would send, so parsers are tested without a kernel (and fuzzed).
import base64
import ipaddress
import socket
import struct

from lanmesh.netlink import codec, wgnl


def wg_allowed(prefix):
    net = ipaddress.ip_network(prefix)
    fam = socket.AF_INET if net.version == 4 else socket.AF_INET6
    return codec.nested(0, codec.u16(wgnl.AIP_FAMILY, fam),
                        codec.attr(wgnl.AIP_IPADDR, net.network_address.packed),
                        codec.u8(wgnl.AIP_CIDR, net.prefixlen))


def sockaddr(host, port):
    return wgnl._encode_endpoint(host, port)


def wg_peer(key, endpoint=None, keepalive=None, handshake=None, rx=None, tx=None, allowed=()):
    parts = [codec.attr(wgnl.PEER_PUBLIC_KEY, base64.b64decode(key))]
    if endpoint:
        parts.append(codec.attr(wgnl.PEER_ENDPOINT, sockaddr(*endpoint)))
    if keepalive is not None:
        parts.append(codec.u16(wgnl.PEER_KEEPALIVE, keepalive))
    if handshake is not None:
        parts.append(codec.attr(wgnl.PEER_LAST_HANDSHAKE, struct.pack("=qq", *handshake)))
    for kind, v in ((wgnl.PEER_RX_BYTES, rx), (wgnl.PEER_TX_BYTES, tx)):
        if v is not None:
            parts.append(codec.attr(kind, struct.pack("=Q", v)))
    if allowed:
        parts.append(codec.nested(wgnl.PEER_ALLOWEDIPS, *(wg_allowed(a) for a in allowed)))
    return codec.nested(0, *parts)


def wg_dump_part(private, port, peers):
    """One GET_DEVICE reply body (genl header + attributes)."""
    body = wgnl.GENL.pack(wgnl.WG_CMD_GET_DEVICE, 1)
    if private:
        body += codec.attr(wgnl.DEV_PRIVATE_KEY, base64.b64decode(private))
    if port is not None:
        body += codec.u16(wgnl.DEV_LISTEN_PORT, port)
    return body + codec.nested(wgnl.DEV_PEERS, *peers)


class FakeKernel:
    """Stands in for the AF_NETLINK socket inside codec.Socket: answers each send() with
    the datagrams `answer(kind, flags, seq, body)` returns."""

    def __init__(self, answer):
        self.answer, self.out = answer, []

    def send(self, data):
        _, kind, flags, seq, _ = struct.unpack_from("=IHHII", data)
        self.out.extend(self.answer(kind, flags, seq, data[16:]))
        return len(data)

    def recv_into(self, buf):
        if not self.out:
            raise socket.timeout()
        data = self.out.pop(0)
        buf[:len(data)] = data
        return len(data)

    def close(self):
        pass


def fake_socket(answer):
    s = codec.Socket.__new__(codec.Socket)
    s.sock, s.port, s.seq, s._buf = FakeKernel(answer), 4242, 0, bytearray(codec.RECV_SIZE)
    return s


def reply(kind, flags, seq, body, pid=4242):
    pad = b"\0" * (-len(body) % 4)          # the kernel aligns each message to 4 bytes
    return codec.HEADER.pack(codec.HEADER.size + len(body), kind, flags, seq, pid) + body + pad


def ack(seq, code=0, pid=4242):
    return reply(codec.NLMSG_ERROR, 0, seq, struct.pack("=i", -code) + b"\0" * 16, pid)
