# Shortest paths: both-ends rule, symmetric cost, relay-only transit, and (property) the same
# path in both directions and loop-free next hops on random topologies with many ties.
from hypothesis import given, settings, strategies as st

from lanmesh.mesh.paths import shortest_paths, path_to, link_cost


def table_from(edges, one_sided=()):
    """edges: {(u, v): (cost_at_u, cost_at_v)}; one_sided: (u, v) only u advertises."""
    t = {}
    for (u, v), (cu, cv) in edges.items():
        t.setdefault(u, {})[v] = cu
        t.setdefault(v, {})[u] = cv
    for u, v in one_sided:
        t.setdefault(u, {})[v] = 1
        t.setdefault(v, {})
    return t


def paths_from(src, table, relays):
    hops, parent, cost = shortest_paths(src, table, relays)
    return hops, parent, cost


def test_link_needs_both_ends_and_costs_the_max():
    t = table_from({("a", "b"): (3, 9)}, one_sided=[("a", "c")])
    assert link_cost(t, "a", "b") == link_cost(t, "b", "a") == 9
    assert link_cost(t, "a", "c") is None
    hops, _, cost = paths_from("a", t, {"a", "b", "c"})
    assert hops == {"b": "b"} and cost["b"] == 9


def test_slow_direct_loses_to_two_fast_hops():
    t = table_from({("a", "c"): (85, 85), ("a", "b"): (10, 10), ("b", "c"): (10, 10)})
    hops, parent, _ = paths_from("a", t, {"a", "b", "c"})
    assert hops["c"] == "b" and path_to(parent, "a", "c") == ["a", "b", "c"]
    t = table_from({("a", "c"): (17, 17), ("a", "b"): (10, 10), ("b", "c"): (10, 10)})
    assert paths_from("a", t, {"a", "b", "c"})[0]["c"] == "c"


def test_non_relay_is_reachable_but_never_transit():
    t = table_from({("a", "b"): (1, 1), ("b", "c"): (1, 1), ("a", "d"): (50, 50), ("d", "c"): (50, 50)})
    hops, parent, _ = paths_from("a", t, {"a", "c", "d"})      # b is not a relay
    assert hops["b"] == "b"
    assert path_to(parent, "a", "c") == ["a", "d", "c"]
    hops, _, _ = paths_from("a", t, {"a", "c"})                  # nor is d: c unreachable
    assert "c" not in hops
    hops, _, _ = paths_from("b", t, {"a", "c"})                  # a non-relay still originates
    assert hops["c"] == "c" and hops["a"] == "a"


def test_equal_cost_square_picks_the_same_path_both_ways():
    t = table_from({("a", "b"): (1, 1), ("b", "c"): (1, 1), ("a", "d"): (1, 1), ("d", "c"): (1, 1)})
    relays = {"a", "b", "c", "d"}
    pa = path_to(paths_from("a", t, relays)[1], "a", "c")
    pc = path_to(paths_from("c", t, relays)[1], "c", "a")
    assert pa == list(reversed(pc))


@st.composite
def topologies(draw):
    n = draw(st.integers(2, 14))
    names = ["n%02d" % i for i in range(n)]
    edges = {}
    for i in range(n):
        for j in range(i + 1, n):
            if draw(st.booleans()):
                c = draw(st.sampled_from([1, 1, 2, 3, 10]))     # many ties on purpose
                d = draw(st.sampled_from([0, 0, 0, 1, 5]))      # the two ends may disagree
                edges[(names[i], names[j])] = (c, c + d) if draw(st.booleans()) else (c + d, c)
    relays = set(n_ for n_ in names if draw(st.integers(0, 4)) > 0)
    return names, table_from(edges), relays


@settings(max_examples=300, deadline=None)
@given(topologies())
def test_paths_are_symmetric_loop_free_and_consistent(topo):
    names, table, relays = topo
    res = {n: paths_from(n, table, relays) for n in names}
    for a in names:
        hops_a, parent_a, cost_a = res[a]
        for c in names:
            if a == c:
                continue
            p = path_to(parent_a, a, c)
            q = path_to(res[c][1], c, a)
            assert (p is None) == (q is None)
            if p is None:
                assert c not in hops_a
                continue
            assert p == list(reversed(q))                     # same path both directions
            assert all(x in relays for x in p[1:-1])          # only relays are transit
            walk = [a]                                        # next hops reach c, no loop
            while walk[-1] != c:
                nxt = res[walk[-1]][0][c]
                assert nxt not in walk
                walk.append(nxt)
            assert walk == p
            assert cost_a[c] == sum(link_cost(table, x, y) for x, y in zip(p, p[1:]))


@settings(max_examples=100, deadline=None)
@given(topologies())
def test_costs_are_optimal_against_brute_force(topo):
    names, table, relays = topo
    src = names[0]
    # Bellman-Ford style relaxation respecting relay-only transit
    INF = 1 << 60
    dist = {n: INF for n in names}
    dist[src] = 0
    for _ in names:
        for u in names:
            if dist[u] == INF or (u != src and u not in relays):
                continue
            for v in table.get(u, {}):
                c = link_cost(table, u, v)
                if c is not None and dist[u] + c < dist[v]:
                    dist[v] = dist[u] + c
    _, _, cost = paths_from(src, table, relays)
    for n in names:
        if n != src:
            assert cost.get(n, INF) == dist[n]
