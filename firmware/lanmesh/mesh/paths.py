# Shortest paths over the link-state table, chosen so that every node picks the same path for
# a pair in both directions (WireGuard checks inner source addresses against allowed IPs, so
# A->C and C->A must cross the same relays).
#
# - A link u-v exists only if both u's and v's LSAs list it; its cost is the max of the two.
# - Path order: total cost, then the sum of a 32-bit hash of each link's (unordered) endpoint
#   names. Both terms are additive and direction-free, so the best path is unique (barring a
#   hash-sum collision) and identical from either end; every sub-path of it is also best,
#   so the relays on it route the pair the same way. On an exact tie the smaller name wins.
# - Only nodes with relay=true are expanded as transit.
import heapq

_M = 0xFFFFFFFF
_SHIFT = 42             # hash sums of up to 1024 hops fit below this bit


def _fnv(name):
    h = 0x811C9DC5
    for c in name.encode():
        h = ((h ^ c) * 0x01000193) & _M
    return h


def link_hash(ha, hb):
    """Direction-free 32-bit mix of two node hashes."""
    x = ((ha ^ hb) * 0x9E3779B1) & _M
    x ^= x >> 15
    x = (x * 0x85EBCA77) & _M
    return x ^ (x >> 13)


def link_cost(table, u, v):
    """Cost of u-v if both ends advertise it, else None."""
    a = table.get(u)
    b = table.get(v)
    if a is None or b is None:
        return None
    cu = a.get(v)
    cv = b.get(u)
    if cu is None or cv is None:
        return None
    return cu if cu >= cv else cv


def shortest_paths(source, table, relays):
    """table: {node: {neighbor: cost}} (the LSDB); relays: set of names that may be transit.
    Returns (next_hop, parent, cost): next_hop {dest: first hop} for every reachable dest."""
    hashes = {}
    for n in table:
        hashes[n] = _fnv(n)
    best = {source: 0}
    parent = {}
    next_hop = {}
    cost = {}
    done = set()
    heap = [(0, source)]
    while heap:
        key, u = heapq.heappop(heap)
        if u in done:
            continue
        done.add(u)
        cost[u] = key >> _SHIFT
        if u != source:
            p = parent[u]
            next_hop[u] = u if p == source else next_hop[p]
            if u not in relays:
                continue        # reachable, but may not carry traffic for others
        mine = table.get(u)
        if not mine:
            continue
        hu = hashes[u]
        for v, cu in mine.items():
            if v in done:
                continue
            theirs = table.get(v)
            if theirs is None:
                continue
            cv = theirs.get(u)
            if cv is None:
                continue
            k = key + ((cu if cu >= cv else cv) << _SHIFT)
            old = best.get(v)
            if old is not None and k > old:
                continue                # already cheaper: skip the hash (most edges of a full mesh)
            k += link_hash(hu, hashes[v])
            if old is None or k < old or (k == old and u < parent[v]):
                best[v] = k
                parent[v] = u
                heapq.heappush(heap, (k, v))
    return next_hop, parent, cost


def path_to(parent, source, dest):
    """The node list source..dest from a parent map, or None if unreachable."""
    if dest == source:
        return [source]
    if dest not in parent:
        return None
    out = [dest]
    while out[-1] != source:
        out.append(parent[out[-1]])
    out.reverse()
    return out
