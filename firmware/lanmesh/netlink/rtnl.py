# rtnetlink: the links, addresses and routes HostNet and the kernel backend manage.
# Each function takes an open codec.Socket(NETLINK_ROUTE) and blocks for a few ms.
import socket
import struct

from .. import inet
from . import codec
from .codec import MalformedReply, NetlinkError, get_string, get_u

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO, IFLA_INFO_KIND = 3, 4, 18, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_TABLE = 1, 4, 15
RTN_UNICAST = 1
IFF_UP = 0x1
ENODEV = 19

IFINFO = struct.Struct("=BxHiII")       # family, type, index, flags, change
IFADDR = struct.Struct("=BBBBI")        # family, prefixlen, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")     # family, dst_len, src_len, tos, table, proto, scope, type, flags
ADDR_LEN = {socket.AF_INET: 4, socket.AF_INET6: 16}


def open_socket():
    return codec.Socket(NETLINK_ROUTE)


def _body(s, data, what):
    if len(data) < s.size:
        raise MalformedReply(f"{what}: truncated header")
    return s.unpack_from(data), data[s.size:]


def _ip(family, payload, what):
    if family not in ADDR_LEN or len(payload) != ADDR_LEN[family]:
        raise MalformedReply(f"{what}: {len(payload)}-byte address for family {family}")
    return str(inet.ip_address(bytes(payload)))


def _pack_ip(text):
    ip = inet.ip_address(text)
    return (socket.AF_INET if ip.version == 4 else socket.AF_INET6), ip.packed


# --- links -------------------------------------------------------------------------------

def _parse_link(body):
    (_, _, index, flags, _), rest = _body(IFINFO, body, "link")
    a = codec.attr_map(rest)
    kind = None
    if IFLA_LINKINFO in a:
        info = codec.attr_map(a[IFLA_LINKINFO], 1)
        if IFLA_INFO_KIND in info:
            kind = get_string(info[IFLA_INFO_KIND], "link kind")
    return {"index": index, "flags": flags, "kind": kind,
            "name": get_string(a[IFLA_IFNAME], "link name") if IFLA_IFNAME in a else None,
            "mtu": get_u(a[IFLA_MTU], 4, "mtu") if IFLA_MTU in a else None}


def link(sock, index=None, name=None):
    """{index, name, mtu, flags, kind} of one link, or None if there is no such link."""
    body = IFINFO.pack(0, 0, index or 0, 0, 0) + (codec.string(IFLA_IFNAME, name) if name else b"")
    try:
        replies = sock.request(RTM_GETLINK, 0, body, f"link {name or index}")
    except NetlinkError as exc:
        if exc.code == ENODEV:
            return None
        raise
    links = [_parse_link(b) for k, b in replies if k == RTM_NEWLINK]
    if len(links) != 1:
        raise MalformedReply(f"link {name or index}: {len(links)} answers")
    return links[0]


def link_add(sock, name, kind):
    body = (IFINFO.pack(0, 0, 0, 0, 0) + codec.string(IFLA_IFNAME, name)
            + codec.nested(IFLA_LINKINFO, codec.string(IFLA_INFO_KIND, kind)))
    sock.request(RTM_NEWLINK, codec.F_CREATE | codec.F_EXCL, body, f"add link {name}")


def link_set(sock, index, mtu=None, up=None):
    flags = IFF_UP if up else 0
    body = IFINFO.pack(0, 0, index, flags, IFF_UP if up is not None else 0)
    if mtu is not None:
        body += codec.u32(IFLA_MTU, mtu)
    sock.request(RTM_NEWLINK, 0, body, f"set link {index}")


def link_del(sock, index):
    sock.request(RTM_DELLINK, 0, IFINFO.pack(0, 0, index, 0, 0), f"delete link {index}")


# --- addresses ---------------------------------------------------------------------------

def addrs(sock, index):
    """["ip/len"] on one link."""
    out = []
    for kind, body in sock.request(RTM_GETADDR, 0, IFADDR.pack(0, 0, 0, 0, 0), "addresses",
                                   dump=True):
        if kind != RTM_NEWADDR:
            continue
        (family, plen, _, _, idx), rest = _body(IFADDR, body, "address")
        if idx != index or family not in ADDR_LEN:
            continue
        a = codec.attr_map(rest)
        raw = a.get(IFA_LOCAL, a.get(IFA_ADDRESS))
        if raw is None:
            continue
        out.append(str(inet.ip_interface(f"{_ip(family, raw, 'address')}/{plen}")))
    return out


def addr(sock, cmd, index, ip, prefixlen):
    family, packed = _pack_ip(ip)
    body = (IFADDR.pack(family, prefixlen, 0, 0, index)
            + codec.attr(IFA_LOCAL, packed) + codec.attr(IFA_ADDRESS, packed))
    kind, flags = {"add": (RTM_NEWADDR, codec.F_CREATE | codec.F_EXCL),
                   "del": (RTM_DELADDR, 0)}[cmd]
    sock.request(kind, flags, body, f"{cmd} address {ip}/{prefixlen}")


# --- routes ------------------------------------------------------------------------------

def routes(sock, family):
    """[{dst, oif, table, proto}] of every route of one family ("dst" is "ip/len")."""
    out = []
    for kind, body in sock.request(RTM_GETROUTE, 0, RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0),
                                   "routes", dump=True):
        if kind != RTM_NEWROUTE:
            continue
        (fam, dst_len, _, _, table, proto, _, _, _), rest = _body(RTMSG, body, "route")
        if fam != family:
            continue
        a = codec.attr_map(rest)
        zero = "0.0.0.0" if family == socket.AF_INET else "::"
        dst = _ip(family, a[RTA_DST], "route") if RTA_DST in a else zero
        out.append({"dst": f"{dst}/{dst_len}", "proto": proto,
                    "table": get_u(a[RTA_TABLE], 4, "table") if RTA_TABLE in a else table,
                    "oif": get_u(a[RTA_OIF], 4, "oif") if RTA_OIF in a else None})
    return out


def route(sock, cmd, dst, oif, table, proto, scope):
    net = inet.ip_network(dst, strict=False)
    family = socket.AF_INET if net.version == 4 else socket.AF_INET6
    kind, flags, rtype = {"add": (RTM_NEWROUTE, codec.F_CREATE | codec.F_EXCL, RTN_UNICAST),
                          "del": (RTM_DELROUTE, 0, 0)}[cmd]
    body = (RTMSG.pack(family, net.prefixlen, 0, 0, table if table < 256 else 252, proto, scope,
                       rtype, 0)
            + codec.attr(RTA_DST, net.network_address.packed) + codec.u32(RTA_OIF, oif)
            + codec.u32(RTA_TABLE, table))
    sock.request(kind, flags, body, f"{cmd} route {net}")
