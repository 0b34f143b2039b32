# Routing plan with blind relays: allowed IPs never move with routes (each peer carries its
# own prefixes, always); a destination routed via a relay moves only its endpoint, to the
# port the relay granted.
from lanmesh.mesh.plan import make_plan, node_facts


def nodes():
    raw = [{"name": n, "address": ["100.64.0.%d/32" % i, "fd00::%d/128" % i],
            "lan": ["198.19.%d.0/24" % i], "relay": True} for i, n in enumerate(["a", "b", "c", "d"], 1)]
    return {f[0]: f for f in (node_facts(n) for n in raw)}


OWN = {"b": ("100.64.0.2/32", "198.19.2.0/24", "fd00::2/128"),
       "c": ("100.64.0.3/32", "198.19.3.0/24", "fd00::3/128"),
       "d": ("100.64.0.4/32", "198.19.4.0/24", "fd00::4/128")}


def test_a_relayed_destination_keeps_its_allowed_ips_and_moves_its_endpoint():
    plan = make_plan("a", nodes(), {"b": "b", "c": "b", "d": "d"}, {"c": ("b", 52001)})
    assert plan.allowed == OWN                      # the relay never carries c's prefixes
    assert plan.relayed == {"c": ("b", 52001)}
    assert plan.routes["198.19.3.0/24"] == "b" and plan.routes["fd00::3/128"] == "c"
    # not granted yet: c keeps its direct endpoint; a grant for a stale route is ignored
    assert make_plan("a", nodes(), {"b": "b", "c": "b", "d": "d"}).relayed == {}
    assert make_plan("a", nodes(), {"b": "b", "c": "d", "d": "d"}, {"c": ("b", 52001)}).relayed == {}
    assert plan != make_plan("a", nodes(), {"b": "b", "c": "b", "d": "d"})


def test_destination_without_a_path_stays_on_its_own_peer():
    plan = make_plan("a", nodes(), {"b": "b"})
    assert plan.next_hops == {"b": "b", "c": None, "d": None}
    assert plan.routes["198.19.3.0/24"] is None                 # status: unreachable
    assert plan.allowed == OWN


def test_start_up_plan_with_no_links_yet_is_the_direct_mesh():
    # the first computation, before any link is up, must not take the direct mesh away
    assert make_plan("a", nodes(), {}).allowed == make_plan("a", nodes(), {"b": "b", "c": "c", "d": "d"}).allowed


def test_plans_compare_by_value_and_accept_netdoc_like_objects():
    class N:
        def __init__(self, name, i):
            self.name, self.ipv4, self.ipv6 = name, "100.64.0.%d/32" % i, "fd00::%d/128" % i
            self.lan, self.relay = ("198.19.%d.0/24" % i,), True
    objs = {n: node_facts(N(n, i)) for i, n in enumerate(["a", "b", "c", "d"], 1)}
    assert make_plan("a", objs, {"b": "b"}) == make_plan("a", nodes(), {"b": "b"})
    assert make_plan("a", objs, {"b": "b"}) != make_plan("a", nodes(), {"b": "b", "c": "b"})
    assert make_plan("a", objs, {"c": "b"}, {"c": ("b", 1)}) != make_plan("a", objs, {"c": "b"})
