# The WireGuard cross-platform UAPI text protocol, with no I/O (sans-IO, like h11).
# parse_get() turns a `get=1` reply into a plain device dict; build_set() diffs that
# against the desired device (dataplane.peerdiff, shared with the kernel backend) and
# returns the `set=1` request that changes only what differs.
#
# Device dict: {"private_key": hex|None, "listen_port": int,
#               "peers": {pubkey_hex: peer}}
# Peer dict:   {"endpoint": "ip:port"|"[v6]:port"|None, "allowed_ips": tuple(sorted),
#               "keepalive": int, "last_handshake": float, "rx_bytes": int, "tx_bytes": int}
# In a desired peer, endpoint None means "leave it alone" (the peer dials us, or its
# name did not resolve this time).
import os

from .. import inet
from ..errors import BackendError

_DEVICE_INT = {"listen_port", "fwmark"}
_PEER_INT = {"last_handshake_time_sec", "last_handshake_time_nsec", "tx_bytes", "rx_bytes",
             "persistent_keepalive_interval", "protocol_version"}
_PEER_TEXT = {"preshared_key", "endpoint"}


class UapiError(BackendError):
    """The userspace WireGuard answered errno≠0, or spoke something that is not UAPI."""

    def __init__(self, message, errno=None):
        self.errno = errno
        super().__init__(message)


def errno_text(n):
    # wireguard-go answers negative errno values (errno=-22); the C tools use positive ones.
    try:
        return f"errno={n} ({os.strerror(abs(n))})" if n else "errno=0"
    except (OverflowError, ValueError):
        return f"errno={n}"


def _int(key, value):
    if len(value) > 20:         # u64 counters fit; longer is not a UAPI number
        raise UapiError(f"UAPI reply: {key} is not an integer")
    try:
        n = int(value, 10)
    except ValueError:
        raise UapiError(f"UAPI reply: {key}={value!r} is not an integer") from None
    if key != "errno" and n < 0:
        raise UapiError(f"UAPI reply: {key}={value!r} is negative")
    return n


def _lines(reply):
    """Split a reply into (key, value) pairs; check and strip the final errno line."""
    if not reply.endswith("\n\n"):
        raise UapiError("UAPI reply is truncated (no blank line at the end)")
    pairs = []
    for line in reply[:-2].split("\n"):
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise UapiError(f"UAPI reply: malformed line {line[:60]!r}")
        pairs.append((key, value))
    if not pairs or pairs[-1][0] != "errno":
        raise UapiError("UAPI reply has no errno line")
    err = _int("errno", pairs[-1][1])
    if err:
        raise UapiError(f"UAPI request failed: {errno_text(err)}", errno=err)
    return pairs[:-1]


def check_errno(reply):
    """The reply to a `set=1` request: raise UapiError unless it is errno=0."""
    extra = _lines(reply)
    if extra:
        raise UapiError(f"UAPI reply to set: unexpected line {extra[0][0]}=…")


def _new_peer():
    return {"endpoint": None, "allowed_ips": [], "keepalive": 0, "last_handshake": 0.0,
            "rx_bytes": 0, "tx_bytes": 0}


def parse_get(reply):
    """A `get=1` reply → device dict (see the top of this file)."""
    dev = {"private_key": None, "listen_port": 0, "fwmark": 0, "peers": {}}
    peer = None
    hs = {}
    for key, value in _lines(reply):
        if key == "public_key":
            peer = _new_peer()
            dev["peers"][_hexkey(key, value)] = peer
            hs = {"last_handshake_time_sec": 0, "last_handshake_time_nsec": 0}
        elif peer is None:
            if key == "private_key":
                dev["private_key"] = _hexkey(key, value)
            elif key in _DEVICE_INT:
                dev[key] = _int(key, value)
            else:
                raise UapiError(f"UAPI reply: unknown device key {key!r}")
        elif key == "allowed_ip":
            try:
                peer["allowed_ips"].append(norm_prefix(value))
            except BackendError:
                raise UapiError(f"UAPI reply: allowed_ip={value[:60]!r} is not an IP prefix") from None
        elif key == "endpoint":
            peer["endpoint"] = value
        elif key in _PEER_INT:
            n = _int(key, value)
            if key == "persistent_keepalive_interval":
                peer["keepalive"] = n
            elif key in ("tx_bytes", "rx_bytes"):
                peer[key] = n
            elif key in hs:
                hs[key] = n
                peer["last_handshake"] = hs["last_handshake_time_sec"] + \
                    hs["last_handshake_time_nsec"] / 1e9
        elif key not in _PEER_TEXT:
            raise UapiError(f"UAPI reply: unknown peer key {key!r}")
    for p in dev["peers"].values():
        p["allowed_ips"] = tuple(sorted(p["allowed_ips"]))
    return dev


def counters_of(reply):
    """A `get=1` reply → {hex public key: (rx_bytes, tx_bytes)}: only what link monitoring
    reads every sample (mesh/liveness.py), without parsing every allowed IP."""
    out = {}
    key = None
    rx = tx = 0
    for line in reply.split("\n"):
        if line.startswith("public_key="):
            if key is not None:
                out[key] = (rx, tx)
            key, rx, tx = line[11:].lower(), 0, 0
        elif key is not None and line.startswith("rx_bytes="):
            rx = _int("rx_bytes", line[9:])
        elif key is not None and line.startswith("tx_bytes="):
            tx = _int("tx_bytes", line[9:])
    if key is not None:
        out[key] = (rx, tx)
    return out


def _hexkey(key, value):
    if len(value) != 64:
        raise UapiError(f"UAPI reply: {key} is not 64 hex digits")
    try:
        bytes.fromhex(value)
    except ValueError:
        raise UapiError(f"UAPI reply: {key} is not 64 hex digits") from None
    return value.lower()


def norm_prefix(text):
    """'100.64.0.5/24' → '100.64.0.0/24', as WireGuard stores it (host bits masked)."""
    try:
        return str(inet.ip_network(text.strip(), strict=False))
    except ValueError:
        raise BackendError(f"{text!r} is not an IP prefix") from None


def split_endpoint(text):
    """'host:port' / '[v6]:port' / 'v4:port' → (host, port); BackendError when malformed."""
    bad = BackendError(f"endpoint {text!r}: expected host:port or [IPv6]:port")
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
        if ":" in host:           # a bare IPv6 address: the port is ambiguous
            raise bad
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise bad
    return host, int(port)


def format_endpoint(ip, port):
    ip = inet.ip_address(ip)
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def endpoint_key(text):
    """Compare endpoints by value: '[::ffff:1.2.3.4]:1' and '[::ffff:102:304]:1' are equal."""
    if text is None:
        return None
    try:
        host, port = split_endpoint(text)
        return inet.ip_address(host), port
    except (BackendError, ValueError):
        return text


def build_set(current, desired):
    """The `set=1` request turning `current` into `desired`, or "" when they already match
    (the diff itself is shared with the kernel backend: dataplane.peerdiff)."""
    from .peerdiff import diff, to_uapi
    return to_uapi(*diff(current, desired))
