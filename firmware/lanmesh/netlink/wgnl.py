# Kernel WireGuard over generic netlink (include/uapi/linux/wireguard.h): read a device
# back, and set its key, port and one peer at a time.
import socket
import struct

from .. import inet
from ..keys import b64decode, b64encode
from . import codec
from .codec import MalformedReply, NetlinkError, get_bytes, get_u

NETLINK_GENERIC = 16
GENL_ID_CTRL, CTRL_CMD_GETFAMILY = 16, 3
CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 1, 2
GENL = struct.Struct("=BBxx")           # cmd, version
WG_CMD_GET_DEVICE, WG_CMD_SET_DEVICE, WG_VERSION = 0, 1, 1

DEV_IFNAME, DEV_PRIVATE_KEY, DEV_LISTEN_PORT, DEV_PEERS = 2, 3, 6, 8
PEER_PUBLIC_KEY, PEER_FLAGS, PEER_ENDPOINT, PEER_KEEPALIVE = 1, 3, 4, 5
PEER_LAST_HANDSHAKE, PEER_RX_BYTES, PEER_TX_BYTES, PEER_ALLOWEDIPS = 6, 7, 8, 9
AIP_FAMILY, AIP_IPADDR, AIP_CIDR = 1, 2, 3
PEER_F_REMOVE_ME, PEER_F_REPLACE_ALLOWEDIPS, PEER_F_UPDATE_ONLY = 1, 2, 4
ENOENT = 2
KEY_LEN = 32


def open_socket():
    return codec.Socket(NETLINK_GENERIC)


def family_id(sock):
    """The WireGuard generic-netlink family, or None when the module is not loaded."""
    body = GENL.pack(CTRL_CMD_GETFAMILY, 1) + codec.string(CTRL_ATTR_FAMILY_NAME, "wireguard")
    try:
        replies = sock.request(GENL_ID_CTRL, 0, body, "wireguard family")
    except NetlinkError as exc:
        if exc.code == ENOENT:
            return None
        raise
    for kind, rbody in replies:
        a = codec.attr_map(rbody[GENL.size:])
        if kind == GENL_ID_CTRL and CTRL_ATTR_FAMILY_ID in a:
            return get_u(a[CTRL_ATTR_FAMILY_ID], 2, "family id")
    raise MalformedReply("wireguard family: no id in the reply")


# --- reading -----------------------------------------------------------------------------

def _key(payload, what):
    return b64encode(get_bytes(payload, KEY_LEN, what))


def _sockaddr(payload):
    """(address text, port) from a sockaddr_in / sockaddr_in6."""
    if len(payload) < 2:
        raise MalformedReply("endpoint: truncated")
    family = struct.unpack_from("=H", payload)[0]
    if family == socket.AF_INET and len(payload) == 16:
        return str(inet.ip_address(bytes(payload[4:8]))), struct.unpack_from("!H", payload, 2)[0]
    if family == socket.AF_INET6 and len(payload) == 28:
        return str(inet.ip_address(bytes(payload[8:24]))), struct.unpack_from("!H", payload, 2)[0]
    if family == 0:
        return None, 0
    raise MalformedReply(f"endpoint: family {family}, {len(payload)} bytes")


def _allowed_ip(payload):
    a = codec.attr_map(payload, 3)
    family = get_u(a.get(AIP_FAMILY, b""), 2, "allowed IP family")
    size = {socket.AF_INET: 4, socket.AF_INET6: 16}.get(family)
    if size is None:
        raise MalformedReply(f"allowed IP: family {family}")
    ip = inet.ip_address(get_bytes(a.get(AIP_IPADDR, b""), size, "allowed IP"))
    cidr = get_u(a.get(AIP_CIDR, b""), 1, "allowed IP mask")
    if cidr > size * 8:
        raise MalformedReply(f"allowed IP: /{cidr}")
    return str(inet.ip_network(f"{ip}/{cidr}", strict=False))


def _peer(payload):
    a = codec.attr_map(payload, 2)
    if PEER_PUBLIC_KEY not in a:
        raise MalformedReply("peer without a public key")
    p = {"public_key": _key(a[PEER_PUBLIC_KEY], "peer key"), "allowed_ips": []}
    if PEER_ENDPOINT in a:
        p["endpoint"] = _sockaddr(a[PEER_ENDPOINT])
    if PEER_KEEPALIVE in a:
        p["keepalive"] = get_u(a[PEER_KEEPALIVE], 2, "keepalive")
    if PEER_LAST_HANDSHAKE in a:
        sec, nsec = struct.unpack("=qq", get_bytes(a[PEER_LAST_HANDSHAKE], 16, "handshake time"))
        p["last_handshake"] = sec + nsec / 1e9
    for attr, field in ((PEER_RX_BYTES, "rx_bytes"), (PEER_TX_BYTES, "tx_bytes")):
        if attr in a:
            p[field] = get_u(a[attr], 8, field)
    for _, ip in codec.parse_attrs(a.get(PEER_ALLOWEDIPS, b""), 3):
        p["allowed_ips"].append(_allowed_ip(ip))
    return p


def parse_device(bodies):
    """Dump parts → [{"private_key"?, "listen_port"?, "peers": [peer parts]}], one per part;
    a peer may continue in the next part (kernel.parse_info merges them)."""
    parts = []
    for body in bodies:
        a = codec.attr_map(body[GENL.size:])
        part = {"peers": [_peer(p) for _, p in codec.parse_attrs(a.get(DEV_PEERS, b""), 1)]}
        if DEV_PRIVATE_KEY in a:
            part["private_key"] = _key(a[DEV_PRIVATE_KEY], "private key")
        if DEV_LISTEN_PORT in a:
            part["listen_port"] = get_u(a[DEV_LISTEN_PORT], 2, "listen port")
        parts.append(part)
    return parts


def get_device(sock, family, ifname):
    body = GENL.pack(WG_CMD_GET_DEVICE, WG_VERSION) + codec.string(DEV_IFNAME, ifname)
    replies = sock.request(family, 0, body, f"{ifname}: read WireGuard device", dump=True)
    return parse_device(b for k, b in replies if k == family)


# --- writing -----------------------------------------------------------------------------

def _decode_key(text):
    raw = b64decode(text)
    if len(raw) != KEY_LEN:
        raise ValueError("a WireGuard key is 32 bytes")
    return raw


def _encode_endpoint(host, port):
    ip = inet.ip_address(host)
    if ip.version == 4:
        return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + ip.packed + b"\0" * 8
    return struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", port, 0) + ip.packed + b"\0" * 4


def _encode_allowed_ip(prefix):
    net = inet.ip_network(prefix, strict=False)
    family = socket.AF_INET if net.version == 4 else socket.AF_INET6
    return codec.nested(0, codec.u16(AIP_FAMILY, family),
                        codec.attr(AIP_IPADDR, net.network_address.packed),
                        codec.u8(AIP_CIDR, net.prefixlen))


def encode_peer(peer):
    """One peer of a SET request (peerdiff.to_netlink's dict)."""
    flags = ((PEER_F_REMOVE_ME if peer.get("remove") else 0)
             | (PEER_F_UPDATE_ONLY if peer.get("update_only") else 0)
             | (PEER_F_REPLACE_ALLOWEDIPS if peer.get("replace_allowed_ips") else 0))
    parts = [codec.attr(PEER_PUBLIC_KEY, _decode_key(peer["public_key"])), codec.u32(PEER_FLAGS, flags)]
    if "endpoint_addr" in peer:
        parts.append(codec.attr(PEER_ENDPOINT, _encode_endpoint(peer["endpoint_addr"],
                                                                peer["endpoint_port"])))
    if "persistent_keepalive" in peer:
        parts.append(codec.u16(PEER_KEEPALIVE, peer["persistent_keepalive"]))
    if "allowed_ips" in peer:
        parts.append(codec.nested(PEER_ALLOWEDIPS, *(_encode_allowed_ip(p) for p in peer["allowed_ips"])))
    return codec.nested(0, *parts)


def encode_set(ifname, private_key=None, listen_port=None, peer=None):
    body = GENL.pack(WG_CMD_SET_DEVICE, WG_VERSION) + codec.string(DEV_IFNAME, ifname)
    if private_key is not None:
        body += codec.attr(DEV_PRIVATE_KEY, _decode_key(private_key))
    if listen_port is not None:
        body += codec.u16(DEV_LISTEN_PORT, listen_port)
    if peer is not None:
        body += codec.nested(DEV_PEERS, encode_peer(peer))
    return body


def set_device(sock, family, ifname, **kwargs):
    sock.request(family, 0, encode_set(ifname, **kwargs), f"{ifname}: set WireGuard device")
