# The blind relay's pure tables (mesh/relay.py) and their use by the mesh core: who may get a
# session, how many, for how long, and what the kernel is told to forward.
from lanmesh.mesh import wire
from lanmesh.mesh.node import MeshNode, MessageReceived, SendMessage
from lanmesh.mesh.relay import EXPIRE_MS, REFRESH_MS, RETRY_MS, Relays
from test_mesh_sim import FakeKeys, doc_nodes

KNOWN = {"a": 1, "b": 1, "c": 1, "d": 1}


def test_only_a_relay_grants_and_only_within_its_bound():
    assert Relays("b", relay=False).request("a", "a", "c", True, KNOWN, 0)[0] == wire.NOT_RELAY
    r = Relays("b", relay=True, port_base=52000, max_sessions=1)
    st, ports = r.request("a", "a", "c", True, KNOWN, 0)
    assert st == wire.GRANTED and ports == (52000, 52001)
    assert r.request("c", "c", "a", True, KNOWN, 0) == (wire.GRANTED, (52001, 52000))   # same session
    assert r.request("a", "a", "d", True, KNOWN, 0)[0] == wire.FULL
    assert r.request("a", "a", "zz", True, KNOWN, 0)[0] == wire.NO_PATH      # not in the document
    assert r.request("a", "a", "b", True, KNOWN, 0)[0] == wire.NO_PATH       # ourselves: no
    assert r.refused == 3


def test_sessions_forward_toward_each_end_and_expire_without_their_users():
    r = Relays("b", relay=True)
    r.request("a", "a", "c", True, KNOWN, 0)
    r.request("c", "a", "c", True, KNOWN, 0)
    maps, onward = r.forwarding({"a": "a", "c": "c"})
    assert maps == ((52000, 52001, "node", "a", 0), (52001, 52000, "node", "c", 0)) and not onward
    # toward c through another relay: that hop must be asked, and is forwarded to once granted
    maps, onward = r.forwarding({"a": "a", "c": "d"})
    assert onward == {("d", "a", "c")} and maps == ((52000, 52001, "node", "a", 0),)
    r.want(onward, 0)
    assert r.granted("d", "a", "c", wire.GRANTED, (52010, 52011), 5)
    maps, _ = r.forwarding({"a": "a", "c": "d"})
    assert (52001, 52000, "relay", "d", 52011) in maps
    # one user releases; the other stops refreshing: the session goes
    assert r.request("a", "a", "c", False, KNOWN, 10) is None
    r.expire(EXPIRE_MS - 1)
    assert r.sessions
    r.expire(EXPIRE_MS)
    assert not r.sessions and r.forwarding({"a": "a", "c": "c"}) == ((), set())


def test_asks_are_retried_refreshed_and_released():
    r = Relays("a")
    want = {("b", "a", "c")}
    assert [p for p, _ in r.want(want, 0)] == ["b"]
    assert r.want(want, RETRY_MS - 1) == []                  # not answered yet: retried at 1 s
    assert len(r.want(want, RETRY_MS)) == 1
    r.granted("b", "a", "c", wire.GRANTED, (52000, 52001), RETRY_MS)
    assert r.port("b", "a", "c", "c") == 52001
    assert r.want(want, RETRY_MS + REFRESH_MS - 1) == []     # granted: refreshed every 5 s
    (peer, data), = r.want(set(), RETRY_MS + 10)             # not needed: released
    m = wire.decode(data)
    assert peer == "b" and m.type == wire.RELAY and m.want == 0 and not r.asks


def test_relay_requests_count_only_inside_the_tunnel():
    """A RELAY arriving on the path socket (outside the tunnel: anyone on the Internet or a
    LAN can send there) is refused and counted; inside the tunnel it is granted."""
    n = MeshNode("b", doc_nodes(["a", "b", "c"]), keys=FakeKeys("k1"))
    n.tick(0)
    req = wire.encode_relay("a", "a", "c", True)
    n.handle(MessageReceived("a", req, via=("198.18.9.9", 51822)), 1)
    assert n.counters["bad_sender"] == 1 and not n.relays.sessions
    out = n.handle(MessageReceived("a", req), 2)
    (ans,) = [wire.decode(e.data) for e in out if isinstance(e, SendMessage)
              and wire.decode(e.data).type == wire.RELAYED]
    assert ans.status == wire.GRANTED and ("a", "c") in n.relays.sessions


def test_a_node_marked_relay_false_grants_nothing():
    n = MeshNode("b", doc_nodes(["a", "b", "c"], non_relays=("b",)), keys=FakeKeys("k1"))
    n.tick(0)
    out = n.handle(MessageReceived("a", wire.encode_relay("a", "a", "c", True)), 1)
    (ans,) = [wire.decode(e.data) for e in out if isinstance(e, SendMessage)
              and wire.decode(e.data).type == wire.RELAYED]
    assert ans.status == wire.NOT_RELAY and not n.relays.sessions


def test_a_freed_slot_is_the_last_to_be_reused():
    """A freed session's ports still have conntrack entries in the relay's kernel that keep
    NATing to the old target while anyone sends there: a new session gets other ports."""
    r = Relays("b", relay=True, port_base=52000, max_sessions=3)
    assert r.request("a", "a", "c", True, KNOWN, 0)[1] == (52000, 52001)
    r.request("a", "a", "c", False, KNOWN, 10)                      # freed at 10
    assert r.request("a", "a", "d", True, KNOWN, 20)[1] == (52002, 52003)   # never-used first
    r.request("c", "c", "d", True, KNOWN, 30)                       # the last never-used slot
    r.request("a", "a", "d", False, KNOWN, 40)                      # slot 1 freed at 40
    assert r.request("a", "a", "c", True, KNOWN, 50)[1] == (52000, 52001)   # freed longest ago


def test_a_session_whose_next_hop_moves_gets_new_ports_and_its_users_are_told():
    r = Relays("b", relay=True)
    r.request("a", "a", "c", True, KNOWN, 0)
    r.request("c", "a", "c", True, KNOWN, 0)
    assert r.retarget({"a": "a", "c": "c"}, 1) == []                 # first look: recorded
    assert r.retarget({"a": "a", "c": "c"}, 2) == []
    told = r.retarget({"a": "a", "c": "d"}, 3)                       # toward c now via d
    assert sorted(u for u, *_ in told) == ["a", "c"] and told[0][3:] == (52002, 52003)
    assert r.sessions[("a", "c")].ports == {"a": 52002, "c": 52003}
