# IP prefixes for the network document and config: parse, normalise, overlap, containment.
# CPython side only (lanmesh.inet); the MicroPython cores receive plain strings.
import re

from . import inet

_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")


def parse_prefix(text, host=False):
    """'198.19.1.0/24' → ip_network; host=True demands a single address (/32 or /128)."""
    if not isinstance(text, str):
        raise ValueError("is not a string")
    if "/" not in text:
        raise ValueError("is not an IP prefix (missing /len)")
    try:
        net = inet.ip_network(text, strict=True)
    except ValueError as e:
        if "host bits set" in str(e):
            raise ValueError("has host bits set") from None
        raise ValueError("is not an IP prefix") from None
    if host and net.prefixlen != net.max_prefixlen:
        raise ValueError(f"must be a single address (/{net.max_prefixlen})")
    return net


def parse_endpoint(text):
    """'host:port' or '[v6]:port' → (host, port)."""
    if not isinstance(text, str) or ":" not in text:
        raise ValueError("is not host:port")
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError("is not [ipv6]:port")
    else:
        host, _, port = text.rpartition(":")
        if ":" in host:
            raise ValueError("IPv6 endpoints need brackets: [addr]:port")
    if not host:
        raise ValueError("has no host")
    if not valid_host(host):
        raise ValueError("has no valid host (an IP address or a DNS name)")
    if not (port.isascii() and port.isdigit()) or len(port) > 5 or not 1 <= int(port) <= 65535:
        raise ValueError("has no valid port (1-65535)")
    return host, int(port)


def valid_host(host):
    """An IP address literal or a DNS name (RFC 1123 labels): nothing a line-based protocol
    (UAPI) or a resolver could be confused by."""
    try:
        inet.ip_address(host)
        return True
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    return 0 < len(name) <= 253 and all(_LABEL.match(label) for label in name.split("."))


def overlaps(a, b):
    return a.version == b.version and a.overlaps(b)
