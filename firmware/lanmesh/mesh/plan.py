# Next hops -> what each WireGuard peer carries. A peer's allowed IPs are its pinned probe
# address (its overlay IPv6 /128, always, so probes reach it directly) plus the overlay IPv4
# /32 and LAN prefixes of every destination routed through it. A destination without a known
# path stays on its own peer (status still says unreachable): while links are still being
# measured at start-up that keeps the direct mesh working (it used to vanish for ~0.5 s), and
# when the direct link really is dead, packets for it are lost either way.


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
    routes {prefix: peer or None} for status."""
    __slots__ = ("next_hops", "allowed", "routes")

    def __init__(self, next_hops, allowed, routes):
        self.next_hops = next_hops
        self.allowed = allowed
        self.routes = routes

    def __eq__(self, other):
        return (isinstance(other, Plan) and self.next_hops == other.next_hops
                and self.allowed == other.allowed)

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        return "Plan(%r)" % (sorted(self.next_hops.items()),)


def make_plan(me, nodes, next_hops):
    """me: our name; nodes: {name: (name, v4, v6, lan, relay)}; next_hops: {dest: peer}."""
    allowed = {}
    routes = {}
    hops = {}
    for name in nodes:
        if name != me:
            allowed[name] = [nodes[name][2]] if nodes[name][2] else []
    for dest in sorted(nodes):
        if dest == me:
            continue
        _, v4, v6, lan, _ = nodes[dest]
        via = next_hops.get(dest)
        if via not in allowed:
            via = None
        hops[dest] = via
        if v6:
            routes[v6] = dest          # pinned: always direct
        for p in ((v4,) if v4 else ()) + lan:
            routes[p] = via
            allowed[via if via is not None else dest].append(p)
    return Plan(hops, {p: tuple(sorted(a)) for p, a in allowed.items()}, routes)
