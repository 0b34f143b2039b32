# The desired state of one node's data plane, handed whole to a backend (DESIGN §2.1).
# Plain, comparable values: the daemon builds a new LinkState on every change and the
# backend reconciles the OS to it; applying an equal LinkState twice changes nothing.


class PeerState:
    __slots__ = ("public_key", "endpoint", "allowed_ips", "keepalive", "force_endpoint",
                 "not_via")

    def __init__(self, public_key, allowed_ips=(), endpoint=None, keepalive=0,
                 force_endpoint=False, not_via=()):
        self.public_key = public_key            # WireGuard base64
        self.endpoint = endpoint                # "host:port" / "[v6]:port" or None (peer dials us)
        # A relay's port: set again whenever WireGuard roamed away from it (the still-working
        # slow direct path must not pull the session back)
        self.force_endpoint = bool(force_endpoint)
        # Relays' addresses: an endpoint WireGuard roamed to there is set back (a relay port
        # the relay then forgets is a dead end); any other roaming (NAT rebinding) stays
        self.not_via = tuple(sorted(not_via))
        self.allowed_ips = tuple(sorted(allowed_ips))  # prefixes as text, e.g. "198.19.1.0/24"
        self.keepalive = int(keepalive or 0)    # seconds, 0 = off

    def key(self):
        return (self.public_key, self.endpoint, self.allowed_ips, self.keepalive,
                self.force_endpoint, self.not_via)

    def __eq__(self, other):
        return isinstance(other, PeerState) and self.key() == other.key()

    def __hash__(self):
        return hash(self.key())

    def __repr__(self):
        return f"PeerState({self.public_key[:8]}…, {self.endpoint}, {list(self.allowed_ips)}, ka={self.keepalive})"


class LinkState:
    __slots__ = ("ifname", "private_key", "listen_port", "peers", "addresses", "routes", "mtu",
                 "forwarding", "mss_clamp", "mesh_port", "relays", "relay_range")

    def __init__(self, ifname, private_key, listen_port, peers=(), addresses=(), routes=(),
                 mtu=1420, forwarding=True, mss_clamp=True, mesh_port=None, relays=(),
                 relay_range=None):
        self.ifname = ifname
        self.private_key = private_key          # WireGuard base64
        self.listen_port = int(listen_port)
        self.peers = {p.public_key: p for p in peers}
        self.addresses = tuple(sorted(addresses))  # on the tunnel: "100.64.0.1/32", "fd00:6c6d::1/128"
        self.routes = tuple(sorted(routes))        # prefixes routed into the tunnel (overlay + remote LANs)
        self.mtu = int(mtu)
        self.forwarding = bool(forwarding)       # ip_forward / ipv6 forwarding + nft forward accept
        self.mss_clamp = bool(mss_clamp)         # nft TCP MSS clamp to the tunnel's path MTU
        self.mesh_port = mesh_port               # nft drops this UDP port unless it came in the tunnel
        # blind relay forwards: (port in, port out, to ip, to port), see nft.render
        self.relays = tuple(sorted(tuple(r) for r in relays))
        self.relay_range = tuple(relay_range) if relay_range else None   # (first, last) port

    def key(self):
        return (self.ifname, self.private_key, self.listen_port,
                tuple(sorted(p.key() for p in self.peers.values())),
                self.addresses, self.routes, self.mtu, self.forwarding, self.mss_clamp, self.mesh_port,
                self.relays, self.relay_range)

    def __eq__(self, other):
        return isinstance(other, LinkState) and self.key() == other.key()

    def __repr__(self):
        return (f"LinkState({self.ifname}, port={self.listen_port}, peers={len(self.peers)}, "
                f"addresses={list(self.addresses)}, routes={list(self.routes)})")


class PeerStatus:
    """What a backend reads back for `lanmesh status` (and link monitoring)."""
    __slots__ = ("public_key", "endpoint", "last_handshake", "rx_bytes", "tx_bytes", "allowed_ips")

    def __init__(self, public_key, endpoint=None, last_handshake=0, rx_bytes=0, tx_bytes=0,
                 allowed_ips=()):
        self.public_key = public_key
        self.endpoint = endpoint
        self.last_handshake = last_handshake    # unix seconds (float), 0 = never
        self.rx_bytes = rx_bytes
        self.tx_bytes = tx_bytes
        self.allowed_ips = tuple(sorted(allowed_ips))

    def as_dict(self):
        return {k: getattr(self, k) for k in self.__slots__}
