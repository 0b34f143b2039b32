# The network document (DESIGN §3, docs/FORMATS.md): parse, validate with path-and-value
# messages, canonical serialisation. Validation collects every problem, so `lanmesh doc
# check` prints them all at once; a document with any problem is never applied.
import json
import re

from . import boundjson
from .errors import DocumentError
from .keys import is_key
from .prefix import parse_endpoint, parse_prefix

MAX_DOC_BYTES = 1 << 20          # 1 MiB: far above any real fleet, small enough for a router
NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,30}\Z")   # match() anchors the start; \Z the end
# path_port: link probes between underlay addresses, outside the tunnel (open it on the WAN);
# relay_port_base..+2*relay_sessions-1: what a relay node forwards for blind relaying.
DEFAULT_SETTINGS = {"listen_port": 51820, "keepalive": 25, "probe_interval_ms": 250,
                    "confirm_window": 60, "mtu": 1420, "mesh_port": 51821, "path_port": 51822,
                    "relay_port_base": 52000, "relay_sessions": 32}
_SETTING_RANGES = {"listen_port": (1, 65535), "keepalive": (0, 3600), "mesh_port": (1, 65535),
                   "probe_interval_ms": (50, 10000), "confirm_window": (5, 3600),
                   "mtu": (1280, 9000), "path_port": (1, 65535),
                   "relay_port_base": (1024, 65000), "relay_sessions": (1, 256)}
_TOP_KEYS = {"fleet", "version", "overlay", "settings", "nodes", "comment"}
_NODE_KEYS = {"name", "public_key", "address", "lan", "endpoints", "relay", "comment"}


def canonical(doc):
    """The byte form that gets signed: UTF-8, sorted keys, no spaces."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class Node:
    __slots__ = ("name", "public_key", "ipv4", "ipv6", "lan", "endpoints", "relay")

    def __init__(self, d):
        self.name = d["name"]
        self.public_key = d["public_key"]
        addrs = [parse_prefix(a) for a in d["address"]]
        self.ipv4 = next(str(a) for a in addrs if a.version == 4)
        self.ipv6 = next(str(a) for a in addrs if a.version == 6)
        self.lan = tuple(str(parse_prefix(p)) for p in d.get("lan", ()))
        self.endpoints = tuple(d.get("endpoints", ()))
        self.relay = bool(d.get("relay", False))


class NetworkDocument:
    """A validated document. `raw` is the dict as given (what canonical() signs)."""

    def __init__(self, raw):
        self.raw = raw
        self.fleet = raw["fleet"]
        self.version = raw["version"]
        self.overlay4 = raw["overlay"]["ipv4"]
        self.overlay6 = raw["overlay"]["ipv6"]
        self.settings = dict(DEFAULT_SETTINGS, **raw.get("settings", {}))
        self.nodes = {n["name"]: Node(n) for n in raw["nodes"]}

    def node(self, name):
        return self.nodes.get(name)

    def node_by_key(self, public_key):
        for n in self.nodes.values():
            if n.public_key == public_key:
                return n
        return None

    def __eq__(self, other):
        return isinstance(other, NetworkDocument) and canonical(self.raw) == canonical(other.raw)


def loads(data, source="document"):
    """bytes/str → NetworkDocument, or DocumentError listing every problem."""
    try:
        data = boundjson.prepare(data, MAX_DOC_BYTES, source)
    except boundjson.JsonError as e:
        raise DocumentError([str(e)]) from None
    if not data.strip():
        raise DocumentError([f"{source}: empty"])
    try:
        raw = json.loads(data, object_pairs_hook=_no_duplicate_keys,
                         parse_int=boundjson.parse_int, parse_constant=boundjson.parse_constant)
    except boundjson.JsonError as e:
        raise DocumentError([f"{source}: {e}"]) from None
    except _DuplicateKey as e:
        raise DocumentError([f"{source}: duplicate key {e.args[0]!r} in one JSON object"]) from None
    except json.JSONDecodeError as e:
        ended = e.pos >= len(data.rstrip()) or e.msg.startswith("Unterminated string")
        what = "truncated JSON" if ended else "not valid JSON"
        raise DocumentError([f"{source}: {what}: {e.msg} at line {e.lineno} column {e.colno}"]) from None
    problems = validate(raw)
    if problems:
        raise DocumentError(problems)
    return NetworkDocument(raw)


def load(path):
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_DOC_BYTES + 1)
    except OSError as e:
        raise DocumentError([f"{path}: cannot read: {e.strerror}"]) from None
    return loads(data, source=path)


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise _DuplicateKey(k)
        d[k] = v
    return d


def validate(raw):
    """Every problem as 'path: value problem'; [] when the document is good."""
    p = []
    if not isinstance(raw, dict):
        return ["document: must be a JSON object"]
    for k in sorted(set(raw) - _TOP_KEYS):
        p.append(f"{k}: unknown field")
    fleet = raw.get("fleet")
    if not isinstance(fleet, str) or not NAME_RE.match(fleet):
        p.append(f"fleet: {fleet!r} is not a fleet name (a-z, 0-9, '-', up to 31)")
    version = raw.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        p.append(f"version: {version!r} is not a positive integer")
    overlay = _overlay(raw.get("overlay"), p)
    _settings(raw.get("settings", {}), p)
    nodes = raw.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        p.append(f"nodes: {_short(nodes)} must be a non-empty list")
        return p
    seen = {"name": {}, "public_key": {}, "address": {}}
    lans = []
    for i, n in enumerate(nodes):
        _node(i, n, overlay, seen, lans, p)
    _lan_overlaps(lans, p)
    return p


def _lan_overlaps(lans, p):
    """Prefixes of different nodes that overlap, in O(n log n): sorted by start (then widest
    first), a prefix overlaps an earlier one iff it starts before the widest end seen so far."""
    order = sorted(range(len(lans)), key=lambda k: (lans[k][1].version,
                                                    int(lans[k][1].network_address),
                                                    lans[k][1].prefixlen, k))
    reach = None                        # (version, last address, index) of the widest so far
    for k in order:
        (node, at), net = lans[k]
        first, last = int(net.network_address), int(net.broadcast_address)
        if reach is not None and reach[0] == net.version and first <= reach[1]:
            (other, _), onet = lans[reach[2]]
            if other != node:
                p.append(f"{at}: {str(net)!r} overlaps {str(onet)!r} of node {other!r}")
        if reach is None or reach[0] != net.version or last > reach[1]:
            reach = (net.version, last, k)


def _short(v):
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def _overlay(ov, p):
    if not isinstance(ov, dict):
        p.append(f"overlay: {_short(ov)} must be an object with ipv4 and ipv6 prefixes")
        return {}
    out = {}
    for fam, ver in (("ipv4", 4), ("ipv6", 6)):
        try:
            net = parse_prefix(ov.get(fam))
            if net.version != ver:
                raise ValueError(f"is not an IPv{ver} prefix")
            out[ver] = net
        except ValueError as e:
            p.append(f"overlay.{fam}: {ov.get(fam)!r} {e}")
    return out


def _settings(s, p):
    if not isinstance(s, dict):
        p.append(f"settings: {_short(s)} must be an object")
        return
    ports = dict(DEFAULT_SETTINGS, **s)
    if ports.get("mesh_port") == ports.get("listen_port"):
        p.append(f"settings.mesh_port: {ports['mesh_port']!r} is WireGuard's listen_port too; "
                 f"the mesh needs a port of its own")
    if ports.get("path_port") in (ports.get("listen_port"), ports.get("mesh_port")):
        p.append(f"settings.path_port: {ports['path_port']!r} is taken by listen_port or "
                 f"mesh_port; path probes need a port of their own")
    try:
        lo = int(ports["relay_port_base"])
        hi = lo + 2 * int(ports["relay_sessions"]) - 1
        for k in ("listen_port", "mesh_port", "path_port"):
            if isinstance(ports.get(k), int) and lo <= ports[k] <= hi:
                p.append(f"settings.{k}: {ports[k]!r} is inside the relay ports {lo}..{hi}")
        if hi > 65535:
            p.append(f"settings.relay_sessions: relay ports {lo}..{hi} end above 65535")
    except (TypeError, ValueError):
        pass                        # the range check below says what is wrong
    for k, v in s.items():
        if k not in _SETTING_RANGES:
            p.append(f"settings.{k}: unknown setting")
            continue
        lo, hi = _SETTING_RANGES[k]
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            p.append(f"settings.{k}: {v!r} is not an integer in {lo}..{hi}")


def _node(i, n, overlay, seen, lans, p):
    at = f"nodes[{i}]"
    if not isinstance(n, dict):
        p.append(f"{at}: {_short(n)} must be an object")
        return
    for k in sorted(set(n) - _NODE_KEYS):
        p.append(f"{at}.{k}: unknown field")
    name = n.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        p.append(f"{at}.name: {name!r} is not a node name (a-z, 0-9, '-', up to 31)")
    _unique(seen["name"], name, f"{at}.name", p)
    key = n.get("public_key")
    if not isinstance(key, str) or not is_key(key):
        p.append(f"{at}.public_key: {_short(key)} is not a WireGuard public key")
    else:
        _unique(seen["public_key"], key, f"{at}.public_key", p)
    _addresses(at, n.get("address"), overlay, seen, p)
    lan = n.get("lan", [])
    if not isinstance(lan, list):
        p.append(f"{at}.lan: {_short(lan)} must be a list of prefixes")
        lan = []
    for j, pre in enumerate(lan):
        try:
            net = parse_prefix(pre)
        except ValueError as e:
            p.append(f"{at}.lan[{j}]: {pre!r} {e}")
            continue
        for ver, ov in overlay.items():
            if net.version == ov.version and net.overlaps(ov):
                p.append(f"{at}.lan[{j}]: {pre!r} overlaps the overlay {str(ov)!r}")
        lans.append(((name, f"{at}.lan[{j}]"), net))
    eps = n.get("endpoints", [])
    if not isinstance(eps, list):
        p.append(f"{at}.endpoints: {_short(eps)} must be a list of host:port")
        eps = []
    for j, ep in enumerate(eps):
        try:
            parse_endpoint(ep)
        except ValueError as e:
            p.append(f"{at}.endpoints[{j}]: {ep!r} {e}")
    if "relay" in n and not isinstance(n["relay"], bool):
        p.append(f"{at}.relay: {n['relay']!r} must be true or false")


def _addresses(at, addrs, overlay, seen, p):
    if not isinstance(addrs, list) or len(addrs) != 2:
        p.append(f"{at}.address: {_short(addrs)} must be [IPv4 /32, IPv6 /128]")
        return
    fams = set()
    for j, a in enumerate(addrs):
        try:
            net = parse_prefix(a, host=True)
        except ValueError as e:
            p.append(f"{at}.address[{j}]: {a!r} {e}")
            continue
        fams.add(net.version)
        ov = overlay.get(net.version)
        if ov is not None and not net.subnet_of(ov):
            p.append(f"{at}.address[{j}]: {a!r} is outside the overlay {str(ov)!r}")
        _unique(seen["address"], str(net), f"{at}.address[{j}]", p)
    if len(fams) == 1:
        p.append(f"{at}.address: {_short(addrs)} needs one IPv4 /32 and one IPv6 /128")


def _unique(seen, value, at, p):
    if not isinstance(value, str):
        return
    if value in seen:
        p.append(f"{at}: {_short(value)} is already used by {seen[value]}")
    else:
        seen[value] = at.rsplit(".", 1)[0]
