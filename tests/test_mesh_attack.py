# A compromised router inside the mesh (it holds a valid tunnel and its own key, nothing
# else) against the mesh core, with real XEdDSA-signed adverts: forged adverts for another
# origin never move a route between two other nodes, a forged copy of a node's own advert
# never makes it "fight back", and nothing it sends is answered with more than twice its size.
from lanmesh.mesh import wire
from lanmesh.mesh.node import ANSWER_FACTOR, MeshNode, MessageReceived, SendMessage
from lanmesh.mesh.wire import Lsa, U32

from test_mesh_sim import FakeKeys, MeshSim, doc_nodes, real_keys

NAMES = ["a", "b", "c", "m"]


def _forged(origin, seq, links, signer=None):
    lsa = Lsa(origin, seq, links)
    # a signature, but by the wrong key (m's own), or garbage
    lsa.sig = signer.sign(wire.signed_bytes(lsa)) if signer is not None else bytes(range(64))
    return lsa


def _converged_sim():
    sim = MeshSim(NAMES, keys=real_keys(NAMES))
    assert sim.run_until(lambda: sim.converged() and sim.hop("a", "c") == "c", 8000) is not None
    sim.run(2000)
    return sim


def test_forged_adverts_for_another_origin_never_move_a_route_nor_storm():
    sim = _converged_sim()
    m_keys = sim.keys["m"]
    c_seq = sim.nodes["a"].lsdb.get("c").seq
    baseline_msgs = sum(sim.tx_msgs[n] for n in "abc")
    sim.run(10000)                      # how much the honest nodes send without an attack
    quiet = sum(sim.tx_msgs[n] for n in "abc") - baseline_msgs
    # Attack: every 500 ms, to a and b, "c's" advert claiming c's only link is to m (which
    # would pull a↔c through m), with every interesting seq, signed by m or with garbage.
    seqs = [c_seq + 1, c_seq + 1000, 0x7FFFFFFF, 0x80000000, U32, 0]
    before = sum(sim.tx_msgs[n] for n in "abc")
    samples = bad = 0
    for i in range(20):
        seq = seqs[i % len(seqs)]
        lsa = _forged("c", seq, {"m": 1}, m_keys if i % 2 else None)
        also_a = _forged("a", seq, {"m": 1}, m_keys)      # and "a's", sent to c
        for victim, forged in (("a", lsa), ("b", lsa), ("c", also_a)):
            for data in wire.encode_lsas("m", [forged]):
                sim.deliver(victim, MessageReceived("m", data))
        for _ in range(10):
            sim.run(50)
            samples += 1
            if (sim.hop("a", "c"), sim.hop("c", "a"), sim.hop("b", "c")) != ("c", "a", "c"):
                bad += 1
    attacked = sum(sim.tx_msgs[n] for n in "abc") - before
    assert bad == 0, f"{bad} of {samples} samples routed a↔c or b→c elsewhere"
    assert "198.19.3.0/24" not in sim.plans["a"].allowed["m"]
    for n in "abc":
        assert sim.nodes[n].lsdb.get("c").seq < 0x7FFFFFFF, "a forged seq got in"
        assert sim.nodes[n].lsdb.get("a").seq < 0x7FFFFFFF
    assert sim.nodes["a"].counters["bad_signature"] >= 16   # every forgery that claimed a newer seq
    assert sim.nodes["c"].counters["fight_backs"] == 0     # forged "own" copies are not believed
    # no storm: the honest nodes send about what they send when nobody attacks
    assert attacked <= quiet * 1.2 + 50, (quiet, attacked)


def test_genuine_restart_still_fights_back_past_its_old_seq():
    sim = _converged_sim()
    old = sim.nodes["a"].lsdb.get("c").seq
    sim.restart("c")
    assert sim.run_until(lambda: sim.converged() and sim.nodes["a"].lsdb.get("c").seq > old,
                         8000) is not None
    assert sim.nodes["c"].counters["fight_backs"] >= 1


def _big_mesh_node(n=40):
    names = ["n%02d" % i for i in range(n)]
    doc = doc_nodes(names)
    node = MeshNode(names[0], doc, {"probe_interval_ms": 250}, keys=FakeKeys("k0"))
    node.tick(0)
    lsas = []
    for i, o in enumerate(names[1:], 1):
        lsa = Lsa(o, 5, {x: 10 for x in names if x != o})
        lsa.sig = FakeKeys("k%d" % i).sign(wire.signed_bytes(lsa))
        lsas.append(lsa)
    for data in wire.encode_lsas(names[1], lsas):
        node.handle(MessageReceived(names[1], data), 0)
    assert len(node.lsdb.origins()) == n
    return node, names


def _answer_bytes(effects, peer):
    return sum(len(e.data) for e in effects if isinstance(e, SendMessage) and e.peer == peer
               and wire.decode(e.data).type == wire.LSAS)


def test_request_summary_and_stale_copies_are_answered_with_at_most_twice_their_size():
    node, names = _big_mesh_node()
    peer = names[1]
    # the finding: one 1,197-byte REQUEST naming the same origins over and over
    head = bytes((wire.MAGIC, wire.VERSION, wire.REQUEST, len(peer))) + peer.encode()
    body = b""
    count = 0
    while len(head) + 2 + len(body) + 4 <= 1197:
        o = names[2 + count % 5].encode()
        body += bytes((len(o),)) + o
        count += 1
    request = head + count.to_bytes(2, "big") + body
    out = node.handle(MessageReceived(peer, request), 100)
    assert 0 < _answer_bytes(out, peer) <= ANSWER_FACTOR * len(request)
    # an unpadded request for everything, an empty summary, a stale copy: all bounded
    for data in (wire.encode_request(peer, names)[0].rstrip(b"\0"),
                 bytes((wire.MAGIC, wire.VERSION, wire.SUMMARY, len(peer))) + peer.encode() + b"\0\0",
                 wire.encode_lsas(peer, [Lsa(names[5], 1, {}, sig=bytes(64))])[0]):
        out = node.handle(MessageReceived(peer, data), 200)
        assert _answer_bytes(out, peer) <= ANSWER_FACTOR * len(data), data[:12]
    assert node.counters["answers_cut"] > 0


def test_padded_requests_from_an_honest_peer_still_sync_a_big_database():
    a, names = _big_mesh_node()
    b = MeshNode(names[1], doc_nodes(names), {"probe_interval_ms": 250}, keys=FakeKeys("k1"))
    b.tick(0)
    # b knows nothing: it asks for everything a has, in padded requests sized for the answers
    wanted = [o for o in names if o != names[1]]
    got = set()
    for data in wire.encode_request(names[1], wanted, b._per_request()):
        for e in a.handle(MessageReceived(names[1], data), 300):
            if isinstance(e, SendMessage) and wire.decode(e.data).type == wire.LSAS:
                got.update(l.origin for l in wire.decode(e.data).lsas)
    assert got == set(wanted)
