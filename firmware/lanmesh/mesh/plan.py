# Next hops -> what each WireGuard peer carries and where it sends. Relays are blind (issue
# 14): a peer's allowed IPs never move with routes — its pinned probe address (overlay IPv6
# /128), its overlay IPv4 /32 and its LANs, always — and a destination routed through a relay
# only moves that peer's *endpoint*, to the port the relay granted for the session
# (mesh/relay.py). `relayed` {dest: (relay, port)} says which; a destination whose relay has
# not granted a port yet keeps its direct endpoint (its packets are lost either way).


def node_facts(n):
    """(name, ipv4 /32, ipv6 /128, lan prefixes, relay) from a document node dict or a
    netdoc.Node-like object."""
    if isinstance(n, dict):
        v4 = v6 = None
        for a in n.get("address", ()):
            if ":" in a:
                v6 = a
            else:
                v4 = a
        return n["name"], v4, v6, tuple(n.get("lan", ())), bool(n.get("relay", False))
    return n.name, n.ipv4, n.ipv6, tuple(n.lan), bool(n.relay)


class Plan:
    """next_hops {dest: peer or None}; allowed {peer: tuple of prefixes, sorted};
    routes {prefix: peer or None} for status; relayed {dest: (relay, port)}."""
    __slots__ = ("next_hops", "allowed", "routes", "relayed")

    def __init__(self, next_hops, allowed, routes, relayed=None):
        self.next_hops = next_hops
        self.allowed = allowed
        self.routes = routes
        self.relayed = relayed or {}

    def __eq__(self, other):
        return (isinstance(other, Plan) and self.next_hops == other.next_hops
                and self.allowed == other.allowed and self.relayed == other.relayed)

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        return "Plan(%r)" % (sorted(self.next_hops.items()),)


def make_plan(me, nodes, next_hops, relayed=None):
    """me: our name; nodes: {name: (name, v4, v6, lan, relay)}; next_hops: {dest: peer};
    relayed: {dest: (relay, port)} granted for the destinations routed through a relay."""
    allowed = {}
    routes = {}
    hops = {}
    for dest in sorted(nodes):
        if dest == me:
            continue
        _, v4, v6, lan, _ = nodes[dest]
        via = next_hops.get(dest)
        if via not in nodes or via == me:
            via = None
        hops[dest] = via
        own = ([v6] if v6 else []) + ([v4] if v4 else []) + list(lan)
        allowed[dest] = tuple(sorted(own))
        if v6:
            routes[v6] = dest          # pinned: always its own peer
        for p in ((v4,) if v4 else ()) + lan:
            routes[p] = via
    used = {}
    for dest, r in (relayed or {}).items():
        if hops.get(dest) == r[0] and r[0] != dest:
            used[dest] = r
    return Plan(hops, allowed, routes, used)
