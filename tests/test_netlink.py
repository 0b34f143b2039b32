# lanmesh.netlink: the codec's strict parsing, the request/reply loop (against a fake
# kernel), WireGuard encoding (the flags pyroute2 0.7 got wrong), and read-only requests
# against this host's real kernel. Changing requests run for real in test_hostnet.py
# (rtnetlink, in a netns) and in the kernel VM (WireGuard: tests/vm_guest_kernel.py).
import base64
import socket
import struct

import pytest
from hypothesis import given, settings, strategies as st

from lanmesh.netlink import codec, rtnl, wgnl
from lanmesh.netlink.codec import MalformedReply, NetlinkError
from netlink_frames import ack, fake_socket, reply, wg_dump_part, wg_peer

K1 = base64.b64encode(bytes(range(32))).decode()
K2 = base64.b64encode(bytes(range(1, 33))).decode()


def test_attributes_round_trip_with_padding():
    data = codec.u8(1, 7) + codec.string(2, "wg0") + codec.u32(3, 9)
    assert len(data) % 4 == 0
    assert codec.parse_attrs(data) == [(1, b"\x07"), (2, b"wg0\0"), (3, struct.pack("=I", 9))]


@pytest.mark.parametrize("data, why", [
    (b"\x03\x00", "truncated attribute header"),
    (struct.pack("=HH", 3, 1), "overruns"),                      # shorter than its header
    (struct.pack("=HH", 12, 1) + b"\0" * 4, "overruns"),         # longer than the data
])
def test_bad_attributes_are_refused(data, why):
    with pytest.raises(MalformedReply, match=why):
        codec.parse_attrs(data)


def test_nesting_is_bounded_and_sizes_are_exact():
    with pytest.raises(MalformedReply, match="nested too deeply"):
        codec.parse_attrs(b"", depth=codec.MAX_DEPTH + 1)
    with pytest.raises(MalformedReply, match="3 bytes, expected 4"):
        codec.get_u(b"abc", 4, "mtu")
    with pytest.raises(MalformedReply, match="not NUL-terminated"):
        codec.get_string(b"wg0", "name")


def test_messages_that_overrun_the_datagram_are_refused():
    msg = reply(16, 0, 1, b"abcd")
    assert codec.split_messages(msg + msg)[1][4] == b"abcd"
    with pytest.raises(MalformedReply, match="overruns"):
        codec.split_messages(msg[:-2])
    with pytest.raises(MalformedReply, match="truncated message header"):
        codec.split_messages(msg + b"\0" * 8)


def test_request_skips_late_and_foreign_replies_and_stops_at_the_ack():
    def answer(kind, flags, seq, body):
        assert flags & codec.F_REQUEST and flags & codec.F_ACK
        return [reply(16, 0, seq - 1, b"late") + reply(16, 0, seq, b"other", pid=99)
                + reply(16, 0, seq, b"mine"), ack(seq)]
    nl = fake_socket(answer)
    assert nl.request(18, 0, b"") == [(16, b"mine")]
    assert nl.request(18, 0, b"") == [(16, b"mine")]     # the next sequence number works too


def test_errors_carry_errno_and_the_kernels_reason():
    def answer(kind, flags, seq, body):
        tlv = codec.string(codec.NLMSGERR_ATTR_MSG, "Unknown device type")
        err = struct.pack("=i", -95) + codec.HEADER.pack(16, kind, flags, seq, 0) + tlv
        return [reply(codec.NLMSG_ERROR, codec.F_ACK_TLVS, seq, err)]
    with pytest.raises(NetlinkError) as e:
        fake_socket(answer).request(16, 0, b"", "add link wg0")
    assert e.value.code == 95 and "Unknown device type" in str(e.value)
    assert str(e.value).startswith("add link wg0: ")


def test_a_dump_ends_at_done_and_reports_its_error():
    parts = []

    def answer(kind, flags, seq, body):
        assert flags & codec.F_DUMP == codec.F_DUMP
        return [reply(20, codec.F_MULTI, seq, b"a") + reply(20, codec.F_MULTI, seq, b"b"),
                reply(codec.NLMSG_DONE, codec.F_MULTI, seq, struct.pack("=i", parts.pop() if parts else 0))]
    assert fake_socket(answer).request(22, 0, b"", dump=True) == [(20, b"a"), (20, b"b")]
    parts.append(-19)
    with pytest.raises(NetlinkError) as e:
        fake_socket(answer).request(22, 0, b"", dump=True)
    assert e.value.code == 19


def test_no_reply_times_out_with_a_clear_error():
    with pytest.raises(NetlinkError, match="no reply from the kernel"):
        fake_socket(lambda *a: []).request(18, 0, b"", "link wg0")


def test_an_endless_dump_is_cut_off():
    big = reply(20, codec.F_MULTI, 1, b"\0" * 60000)
    nl = fake_socket(lambda kind, flags, seq, body: [big] * (codec.MAX_REPLY // 60000 + 2))
    with pytest.raises(MalformedReply, match="reply larger than"):
        nl.request(22, 0, b"", dump=True)


# --- WireGuard -----------------------------------------------------------------------------

def _peer_of_set(body):
    dev = codec.attr_map(body[wgnl.GENL.size:])
    (_, peer), = codec.parse_attrs(dev[wgnl.DEV_PEERS])
    return codec.attr_map(peer)


def test_an_endpoint_change_edits_in_place_and_keeps_allowed_ips():
    # pyroute2 0.7.9's WireGuard.set sent REPLACE_ALLOWEDIPS here: the routes vanished.
    p = _peer_of_set(wgnl.encode_set("wg0", peer={"public_key": K1, "update_only": True,
                                                  "endpoint_addr": "198.18.0.8", "endpoint_port": 51820}))
    assert codec.get_u(p[wgnl.PEER_FLAGS], 4, "flags") == wgnl.PEER_F_UPDATE_ONLY
    assert wgnl.PEER_ALLOWEDIPS not in p
    assert wgnl._sockaddr(p[wgnl.PEER_ENDPOINT]) == ("198.18.0.8", 51820)


def test_allowed_ips_replace_and_remove_flags():
    p = _peer_of_set(wgnl.encode_set("wg0", peer={"public_key": K1, "update_only": True,
                                                  "replace_allowed_ips": True,
                                                  "allowed_ips": ["100.64.0.2/32", "fd00::/64"]}))
    assert codec.get_u(p[wgnl.PEER_FLAGS], 4, "f") == wgnl.PEER_F_UPDATE_ONLY | wgnl.PEER_F_REPLACE_ALLOWEDIPS
    assert [wgnl._allowed_ip(a) for _, a in codec.parse_attrs(p[wgnl.PEER_ALLOWEDIPS])] == \
        ["100.64.0.2/32", "fd00::/64"]
    p = _peer_of_set(wgnl.encode_set("wg0", peer={"public_key": K1, "remove": True}))
    assert codec.get_u(p[wgnl.PEER_FLAGS], 4, "f") == wgnl.PEER_F_REMOVE_ME


def test_device_dump_parses_every_field_and_ipv6_endpoints():
    part = wg_dump_part(K2, 51820, [wg_peer(K1, endpoint=("fd00::2", 51821), keepalive=25,
                                            handshake=(10, 500_000_000), rx=1, tx=2,
                                            allowed=["100.64.0.2/32"])])
    (dev,) = wgnl.parse_device([part])
    assert dev["private_key"] == K2 and dev["listen_port"] == 51820
    assert dev["peers"] == [{"public_key": K1, "endpoint": ("fd00::2", 51821), "keepalive": 25,
                             "last_handshake": 10.5, "rx_bytes": 1, "tx_bytes": 2,
                             "allowed_ips": ["100.64.0.2/32"]}]


@pytest.mark.parametrize("bad, why", [
    (codec.nested(0, codec.attr(wgnl.PEER_PUBLIC_KEY, b"short")), "peer key: 5 bytes"),
    (codec.nested(0, codec.u16(wgnl.PEER_KEEPALIVE, 1)), "without a public key"),
    (codec.nested(0, codec.attr(wgnl.PEER_PUBLIC_KEY, bytes(32)),
                  codec.attr(wgnl.PEER_ENDPOINT, b"\x02\x00" + b"\0" * 6)), "endpoint: family 2, 8 bytes"),
])
def test_malformed_devices_are_refused(bad, why):
    with pytest.raises(MalformedReply, match=why):
        wgnl.parse_device([wgnl.GENL.pack(0, 1) + codec.nested(wgnl.DEV_PEERS, bad)])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_parsers_refuse_or_accept_but_never_crash(data):
    for parse in (codec.split_messages, lambda d: wgnl.parse_device([d]),
                  lambda d: rtnl._parse_link(d)):
        try:
            parse(data)
        except MalformedReply:
            pass
        except (KeyError, ValueError) as exc:   # only MalformedReply is allowed out
            raise AssertionError(f"{type(exc).__name__}: {exc}") from None


# --- the real kernel (read-only) --------------------------------------------------------------

def test_real_kernel_link_and_route_dumps():
    with rtnl.open_socket() as nl:
        lo = rtnl.link(nl, name="lo")
        assert lo["index"] == socket.if_nametoindex("lo") and lo["kind"] is None
        assert rtnl.link(nl, name="lmnosuchlink0") is None
        assert "127.0.0.1/8" in rtnl.addrs(nl, lo["index"])
        assert all(r["dst"].count("/") == 1 for r in rtnl.routes(nl, socket.AF_INET))
    with wgnl.open_socket() as nl:              # no module on this host: None, not an error
        fam = wgnl.family_id(nl)
        assert fam is None or fam > 0
