# Mesh wire format: every message round-trips; malformed input raises WireError and nothing else.
import pytest
from hypothesis import given, settings, strategies as st

from lanmesh.mesh import wire
from lanmesh.mesh.wire import Lsa, WireError, decode

names = st.from_regex(r"[a-z0-9][a-z0-9-]{0,30}", fullmatch=True)
SIG = bytes(range(64))


MAC = (lambda b: bytes(range(16)))
N8 = b"nonce-08"


def test_probe_and_ack_round_trip():
    m = decode(wire.encode_probe("hq", 0xFFFFFFFF, 1234, N8, MAC))
    assert (m.type, m.sender, m.seq, m.digest) == (wire.PROBE, "hq", 0xFFFFFFFF, 1234)
    assert m.nonce == N8 and m.mac == bytes(range(16)) and m.maced == \
        wire.encode_probe("hq", 0xFFFFFFFF, 1234, N8, MAC)[:-16]
    m = decode(wire.encode_ack("branch-2", 7, 0, N8, MAC, hold=431))
    assert (m.type, m.sender, m.seq, m.digest, m.hold) == (wire.ACK, "branch-2", 7, 0, 431)
    assert decode(wire.encode_ack("b", 7, 0, N8, MAC, hold=10 ** 6)).hold == 0xFFFF
    # compact: 14 bytes of probe, 8 of nonce, 2 of hold, 16 of MAC (the MAC covers the hold)
    assert len(wire.encode_probe("hq", 1, 2, N8, MAC)) == 3 + 1 + 2 + 8 + 8 + 2 + 16
    assert wire.peek(wire.encode_probe("hq", 1, 2, N8, MAC)) == (wire.PROBE, "hq")
    assert wire.peek(b"\x00junk") is None


def test_relay_messages_round_trip():
    m = decode(wire.encode_relay("a", "a", "c", True))
    assert (m.type, m.sender, m.a, m.b, m.want) == (wire.RELAY, "a", "a", "c", 1)
    m = decode(wire.encode_relayed("b", "a", "c", wire.GRANTED, 52000, 52001))
    assert (m.type, m.a, m.b, m.status, m.ports) == (wire.RELAYED, "a", "c", 0, (52000, 52001))
    for bad in (wire.encode_relay("a", "a", "c", True)[:-1] + b"\x02",
                wire.encode_relay("a", "c", "c", True), wire.encode_relayed("b", "a", "c", 0)[:-1]):
        with pytest.raises(wire.WireError):
            decode(bad)


def test_lsas_round_trip_and_split_under_datagram_limit():
    lsas = [Lsa("n%d" % i, i + 1, {"m%d" % j: j + 1 for j in range(40)}, age_s=i, sig=SIG) for i in range(30)]
    msgs = wire.encode_lsas("hq", lsas)
    assert len(msgs) > 1 and all(len(m) <= wire.MAX_DATAGRAM for m in msgs)
    got = [l for m in msgs for l in decode(m).lsas]
    assert got == lsas


def test_summary_and_request_round_trip():
    entries = [("n%d" % i, i * 1000) for i in range(300)]
    msgs = wire.encode_summary("hq", entries)
    assert len(msgs) > 1 and all(len(m) <= wire.MAX_DATAGRAM for m in msgs)
    assert [e for m in msgs for e in decode(m).entries] == entries
    (req,) = wire.encode_request("hq", ["a", "b"])
    assert decode(req).origins == ["a", "b"]


@pytest.mark.parametrize("data,why", [
    (b"", "truncated"),
    (b"\x00\x01\x01\x02hq" + bytes(8), "magic"),
    (b"\xa7\x01\x01\x02hq" + bytes(8), "version"),
    (b"\xa7\x04\x0f\x02hq" + bytes(8), "unknown message type"),
    (b"\xa7\x04\x01\x02hq" + bytes(35), "trailing"),
    (b"\xa7\x04\x01\x02hq" + bytes(33), "truncated"),
    (b"\xa7\x04\x01\x02HQ" + bytes(34), "bad name"),
    (b"\xa7\x04\x01\x00" + bytes(34), "bad name"),
    (b"\xa7\x04\x01\x02-q" + bytes(34), "bad name"),
    (b"\xa7\x04\x03\x02hq\x00", "empty"),
    (b"\xa7\x04\x03\x02hq\x01\x01a" + bytes(4) + b"\x00\x00\x00\x01\x01b\x00\x00", "zero cost"),
    (b"\xa7\x04\x03\x02hq\x01\x01a" + bytes(4) + b"\x00\x00\x00\x01\x01a\x00\x01", "self link"),
    (b"\xa7\x04\x04\x02hq\xff\xff\x01a", "truncated"),
])
def test_malformed_raises_wire_error(data, why):
    with pytest.raises(WireError, match=why):
        decode(data)


def test_every_truncation_of_valid_messages_is_rejected():
    samples = [wire.encode_probe("hq", 5, 6, N8, MAC)] + wire.encode_lsas("hq", [Lsa("a", 3, {"b": 9, "c": 1}, sig=SIG)])
    padded = wire.encode_summary("hq", [("a", 1)]) + wire.encode_request("hq", ["a"])
    for m in samples + [p.rstrip(b"\0") for p in padded]:
        for n in range(len(m)):
            with pytest.raises(WireError):
                decode(m[:n])
    assert all(len(p) == wire.MAX_DATAGRAM for p in padded)


def test_encoder_refuses_bad_values():
    with pytest.raises(WireError):
        wire.encode_probe("Bad", 1, 1, N8, MAC)
    with pytest.raises(WireError):
        wire.encode_lsas("hq", [Lsa("a", 1, {"b": 0}, sig=SIG)])
    with pytest.raises(WireError, match="not signed"):
        wire.encode_lsas("hq", [Lsa("a", 1, {"b": 1})])
    with pytest.raises(WireError):
        wire.encode_probe("hq", 1 << 32, 1, N8, MAC)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80))
def test_random_bytes_never_crash(data):
    for d in (data, b"\xa7\x02" + data):
        try:
            decode(d)
        except WireError:
            pass


@settings(max_examples=150, deadline=None)
@given(names, st.lists(st.tuples(names, st.integers(0, 2**32 - 1),
                                 st.dictionaries(names, st.integers(1, 65535), max_size=20)), max_size=12))
def test_lsa_batches_round_trip(sender, raw):
    lsas = [Lsa(o, s, {k: v for k, v in links.items() if k != o}, sig=SIG) for o, s, links in raw]
    got = [l for m in wire.encode_lsas(sender, lsas) for l in decode(m).lsas]
    assert got == lsas


def test_summary_and_request_names_are_deduplicated_and_padding_must_be_zero():
    (req,) = wire.encode_request("hq", ["a", "b", "a", "a", "b"])
    assert decode(req).origins == ["a", "b"]
    (summ,) = wire.encode_summary("hq", [("a", 1), ("a", 9), ("b", 2)])
    assert decode(summ).entries == [("a", 1), ("b", 2)]
    with pytest.raises(WireError, match="padding"):
        decode(req[:-1] + b"\x01")


def test_lsa_signature_covers_origin_seq_and_links_but_not_age():
    a = Lsa("a", 3, {"b": 9, "c": 1}, age_s=0)
    b = Lsa("a", 3, {"c": 1, "b": 9}, age_s=77)
    assert wire.signed_bytes(a) == wire.signed_bytes(b)
    for other in (Lsa("x", 3, a.links), Lsa("a", 4, a.links), Lsa("a", 3, {"b": 9})):
        assert wire.signed_bytes(other) != wire.signed_bytes(a)
