# MeshNode as a unit: bad input is counted and dropped, probes are answered, status is readable,
# and every fact/effect type behaves with a hand-driven clock near the tick wrap.
from lanmesh.ticks import TICKS_PERIOD, ticks_add, ticks_diff
from lanmesh.mesh import wire
from lanmesh.mesh.node import (MeshNode, MessageReceived, DocumentChanged, SendMessage,
                               RoutesChanged, LinkChanged)
from test_mesh_sim import doc_nodes, FakeKeys, MeshSim, path_msg


def signed(lsa, key):
    lsa.sig = FakeKeys(key).sign(wire.signed_bytes(lsa))
    return lsa

T0 = TICKS_PERIOD - 100


def sends(effects, peer=None):
    return [wire.decode(e.data) for e in effects
            if isinstance(e, SendMessage) and (peer is None or e.peer == peer)]


def test_probe_is_answered_with_ack_and_digest():
    n = MeshNode("a", doc_nodes(["a", "b"]), keys=FakeKeys("k0"))
    out = n.handle(MessageReceived("b", path_msg(wire.encode_probe, "b", 77, 5, "k1", "k0")), T0)
    (ack,) = [m for m in sends(out, "b") if m.type != wire.PROBE]   # our own probe may ride along
    assert ack.type == wire.ACK and ack.seq == 77 and ack.sender == "a"
    assert ack.digest == n.lsdb.digest()


def test_malformed_and_spoofed_messages_are_counted_and_dropped():
    n = MeshNode("a", doc_nodes(["a", "b", "c"]), keys=FakeKeys("k0"))
    n.tick(T0)
    probe = path_msg(wire.encode_probe, "b", 1, 1, "k1", "k0")
    for junk in (b"", b"\xff" * 40, probe[:-1]):
        assert n.handle(MessageReceived("b", junk), T0) == []
    assert n.counters["malformed"] == 3
    # sender name inside must match the peer the tunnel says it came from
    assert n.handle(MessageReceived("c", probe), T0) == []
    assert n.handle(MessageReceived("zz", path_msg(wire.encode_probe, "zz", 1, 1, "k9", "k0")), T0) == []
    assert n.counters["bad_sender"] == 2
    # a path probe whose MAC is not the pair's (forged, or made with another key)
    assert n.handle(MessageReceived("b", path_msg(wire.encode_probe, "b", 1, 1, "k2", "k0"),
                                    via=("198.18.0.9", 51822)), T0) == []
    assert n.counters["bad_mac"] == 1
    (lsas,) = wire.encode_lsas("b", [wire.Lsa("stranger", 1, {}, sig=bytes(64))])
    n.handle(MessageReceived("b", lsas), T0)
    assert n.counters["unknown_origin"] == 1 and n.lsdb.get("stranger") is None


def test_first_tick_probes_every_peer_soon_and_deadline_advances():
    n = MeshNode("a", doc_nodes(["a", "b", "c"]), keys=FakeKeys("k0"))
    assert n.next_deadline() is None             # not started yet
    n.tick(T0)
    probes = {"b": 0, "c": 0}
    now = T0
    while ticks_diff(now, T0) < 1000:
        d = n.next_deadline()
        assert ticks_diff(d, now) > 0 or now == T0   # never asks to be woken in the past
        now = d
        for e in n.tick(now):
            if isinstance(e, SendMessage) and wire.decode(e.data).type == wire.PROBE:
                probes[e.peer] += 1
    assert 4 <= probes["b"] <= 5 and 4 <= probes["c"] <= 5


def test_link_up_floods_own_lsa_and_dumps_database_then_routes():
    sim = MeshSim(["a", "b"])
    sim.run(2000)
    assert sim.plans["a"].next_hops == {"b": "b"}
    st = sim.nodes["a"].status()
    assert st["links"]["b"]["up"] and st["links"]["b"]["rtt_ms"] == 10
    assert st["links"]["b"]["loss_pct"] == 0 and st["links"]["b"]["cost"] == 15
    assert st["routes"]["198.19.2.0/24"] == "b" and st["lsdb"]["a"] >= 1
    assert st["counters"]["malformed"] == 0 and st["counters"]["tx_msgs"] > 0


def test_effect_types_in_a_cut():
    sim = MeshSim(["a", "b", "c"])
    sim.run(3000)
    node = sim.nodes["a"]
    sim.cut_link("a", "c")
    seen = []
    orig = sim._apply

    def spy(src, effects):
        if src == "a":
            seen.extend(effects)
        orig(src, effects)
    sim._apply = spy
    sim.run(1500)
    downs = [e for e in seen if isinstance(e, LinkChanged)]
    assert [(e.peer, e.up) for e in downs] == [("c", False)]
    routes = [e for e in seen if isinstance(e, RoutesChanged)]
    assert routes and routes[-1].plan.next_hops["c"] == "b"
    lsas = [m for e in seen if isinstance(e, SendMessage)
            for m in [wire.decode(e.data)] if m.type == wire.LSAS]
    assert any(l.origin == "a" and "c" not in l.links for m in lsas for l in m.lsas)
    assert node.status()["links"]["c"]["up"] is False


def test_document_change_of_probe_interval():
    n = MeshNode("a", doc_nodes(["a", "b"]), {"probe_interval_ms": 250}, keys=FakeKeys("k0"))
    n.tick(T0)
    n.handle(DocumentChanged(doc_nodes(["a", "b"]), {"probe_interval_ms": 1000}), T0)
    assert n.links["b"].interval == 1000


def test_summary_requests_what_is_newer_and_pushes_what_is_missing():
    n = MeshNode("a", doc_nodes(["a", "b", "c"]), keys=FakeKeys("k0"))
    n.tick(T0)
    (lsas,) = wire.encode_lsas("b", [signed(wire.Lsa("c", 4, {"b": 7}), "k2")])
    n.handle(MessageReceived("b", lsas), T0)
    # b says: c is at 9 (newer than our 4) and it has never heard of a
    (summary,) = wire.encode_summary("b", [("b", 2), ("c", 9)])
    msgs = sends(n.handle(MessageReceived("b", summary), T0), "b")
    req = [m for m in msgs if m.type == wire.REQUEST]
    push = [l.origin for m in msgs if m.type == wire.LSAS for l in m.lsas]
    assert [m.origins for m in req] == [["b", "c"]] and push == ["a"]
    # a request is answered with the LSAs we hold
    (ask,) = wire.encode_request("b", ["c", "a", "nobody"])
    msgs = sends(n.handle(MessageReceived("b", ask), T0), "b")
    assert sorted(l.origin for m in msgs for l in m.lsas) == ["a", "c"]


def test_older_copy_is_answered_with_ours():
    n = MeshNode("a", doc_nodes(["a", "b", "c"]), keys=FakeKeys("k0"))
    n.tick(T0)
    (new,) = wire.encode_lsas("c", [signed(wire.Lsa("c", 8, {}), "k2")])
    n.handle(MessageReceived("c", new), T0)
    (old,) = wire.encode_lsas("b", [wire.Lsa("c", 3, {}, sig=bytes(64))])
    msgs = sends(n.handle(MessageReceived("b", old), T0), "b")
    assert [(l.origin, l.seq) for m in msgs for l in m.lsas] == [("c", 8)]
