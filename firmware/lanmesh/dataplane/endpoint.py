# Peer endpoints as the backends hand them to WireGuard: names are resolved on every apply,
# so dynamic-DNS sites are followed without a watchdog script.
import socket

from .. import inet
from ..adapters import dns
from .uapi_proto import format_endpoint, split_endpoint


def resolve(endpoint, log, ifname):
    """'host:port' → candidate 'ip:port' strings. A name that does not resolve now returns
    [] so the caller leaves the peer's current endpoint alone."""
    host, port = split_endpoint(endpoint)
    try:
        return [format_endpoint(inet.ip_address(host), port)]
    except ValueError:
        pass
    try:
        infos = dns.getaddrinfo(host, port, socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError) as exc:
        log.warning(f"{ifname}: endpoint {endpoint}: {exc}; keeping the current one")
        return []
    out = []
    for info in infos:
        ep = format_endpoint(info[4][0].split("%")[0], port)
        if ep not in out:
            out.append(ep)
    return out
