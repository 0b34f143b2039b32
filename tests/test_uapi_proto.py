# The UAPI text protocol without I/O: parsing `get=1`, errno handling, and the `set=1`
# diff — checked against a small model of how wireguard-go applies a set request.
import pytest
from hypothesis import given, settings, strategies as st

from lanmesh.dataplane.uapi_proto import (UapiError, build_set, check_errno, endpoint_key,
                                          format_endpoint, parse_get, split_endpoint)
from lanmesh.errors import BackendError

K1, K2, K3 = "11" * 32, "22" * 32, "33" * 32
PRIV = "a8" * 31 + "68"

# Verbatim shape of a wireguard-go v0.0.20220316 reply.
GET = (f"private_key={PRIV}\nlisten_port=51999\n"
       f"public_key={K1}\npreshared_key={'00' * 32}\nprotocol_version=1\n"
       "endpoint=[fd00::1]:51820\nlast_handshake_time_sec=1700000000\n"
       "last_handshake_time_nsec=500000000\ntx_bytes=1480\nrx_bytes=92\n"
       "persistent_keepalive_interval=25\nallowed_ip=fd00:6c6d::2/128\nallowed_ip=100.64.0.0/24\n"
       f"public_key={K2}\npreshared_key={'00' * 32}\nprotocol_version=1\n"
       "last_handshake_time_sec=0\nlast_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\n"
       "persistent_keepalive_interval=0\nerrno=0\n\n")


def test_parse_get():
    dev = parse_get(GET)
    assert dev["private_key"] == PRIV and dev["listen_port"] == 51999
    p1, p2 = dev["peers"][K1], dev["peers"][K2]
    assert p1["endpoint"] == "[fd00::1]:51820"
    assert p1["last_handshake"] == 1700000000.5
    assert (p1["rx_bytes"], p1["tx_bytes"], p1["keepalive"]) == (92, 1480, 25)
    assert p1["allowed_ips"] == ("100.64.0.0/24", "fd00:6c6d::2/128")
    assert p2 == {"endpoint": None, "allowed_ips": (), "keepalive": 0, "last_handshake": 0.0,
                  "rx_bytes": 0, "tx_bytes": 0}


def test_parse_get_of_a_fresh_device():
    # No private key yet: wireguard-go leaves the line out.
    assert parse_get("listen_port=38652\nerrno=0\n\n") == {
        "private_key": None, "listen_port": 38652, "fwmark": 0, "peers": {}}


@pytest.mark.parametrize("reply, errno, words", [
    ("errno=-22\n\n", -22, "Invalid argument"),
    ("errno=-98\n\n", -98, "Address already in use"),
    ("errno=5\n\n", 5, "Input/output error"),        # C implementations answer positive values
])
def test_errno_is_a_readable_error(reply, errno, words):
    for fn in (check_errno, parse_get):
        with pytest.raises(UapiError) as exc:
            fn(reply)
        assert exc.value.errno == errno and words in str(exc.value)
        assert isinstance(exc.value, BackendError)


@pytest.mark.parametrize("reply, words", [
    ("", "truncated"),                                   # connection closed on a bad request
    ("errno=0\n", "truncated"),
    ("listen_port=1\n\n", "no errno"),
    ("listen_port\nerrno=0\n\n", "malformed line"),
    ("=1\nerrno=0\n\n", "malformed line"),
    ("listen_port=x\nerrno=0\n\n", "not an integer"),
    ("errno=zero\n\n", "not an integer"),
    ("hello=1\nerrno=0\n\n", "unknown device key"),
    (f"public_key={K1}\nfoo=1\nerrno=0\n\n", "unknown peer key"),
    ("public_key=abc\nerrno=0\n\n", "64 hex digits"),
    (f"public_key={'zz' * 32}\nerrno=0\n\n", "64 hex digits"),
    (f"public_key={K1}\nrx_bytes=-1\nerrno=0\n\n", "negative"),
    (f"public_key={K1}\nallowed_ip=1.2.3.4/33\nerrno=0\n\n", "not an IP prefix"),
])
def test_malformed_replies_are_rejected(reply, words):
    with pytest.raises(BackendError, match=words):
        parse_get(reply)


def test_set_reply_with_extra_lines_is_rejected():
    with pytest.raises(UapiError, match="unexpected line"):
        check_errno("listen_port=1\nerrno=0\n\n")
    check_errno("errno=0\n\n")


def _peer(allowed=(), endpoint=None, keepalive=0):
    return {"endpoint": endpoint, "allowed_ips": tuple(sorted(allowed)), "keepalive": keepalive}


def _want(**peers):
    return {"private_key": PRIV, "listen_port": 51999, "peers": peers}


def test_new_device_gets_everything():
    req = build_set({"private_key": None, "listen_port": 0, "peers": {}},
                    _want(**{K1: _peer(["100.64.0.2/32"], "198.18.0.2:51820", 25)}))
    assert req == (f"set=1\nprivate_key={PRIV}\nlisten_port=51999\npublic_key={K1}\n"
                   "endpoint=198.18.0.2:51820\npersistent_keepalive_interval=25\n"
                   "replace_allowed_ips=true\nallowed_ip=100.64.0.2/32\n\n")


def test_unchanged_device_sends_nothing():
    current = parse_get(GET)
    want = _want(**{K1: _peer(["fd00:6c6d::2/128", "100.64.0.0/24"], "[fd00::1]:51820", 25),
                    K2: _peer()})
    assert build_set(current, want) == ""
    # Unknown endpoint (peer dials us / name did not resolve): the current one is kept.
    want["peers"][K1]["endpoint"] = None
    assert build_set(current, want) == ""


def test_only_the_changed_peer_is_touched_and_in_place():
    current = parse_get(GET)
    want = _want(**{K1: _peer(["fd00:6c6d::2/128", "100.64.0.0/24"], "[fd00::1]:51820", 25),
                    K2: _peer(["198.19.3.0/24"]), K3: _peer(["198.19.9.0/24"])})
    assert build_set(current, want) == (
        f"set=1\npublic_key={K2}\nupdate_only=true\nreplace_allowed_ips=true\n"
        f"allowed_ip=198.19.3.0/24\npublic_key={K3}\npersistent_keepalive_interval=0\n"
        "replace_allowed_ips=true\nallowed_ip=198.19.9.0/24\n\n")


def test_listen_port_zero_means_any():
    current = parse_get(GET)
    assert build_set(current, dict(_want(), listen_port=0, peers=current["peers"])) == ""


def test_removed_peer():
    current = parse_get(GET)
    want = _want(**{K2: _peer()})
    assert build_set(current, want) == f"set=1\npublic_key={K1}\nremove=true\n\n"


def test_endpoints_compare_by_value():
    assert endpoint_key("[::ffff:1.2.3.4]:1") == endpoint_key("[::ffff:102:304]:1")
    assert endpoint_key("[fd00::1]:1") != endpoint_key("[fd00::1]:2")


@pytest.mark.parametrize("text, parsed", [
    ("198.18.0.1:51820", ("198.18.0.1", 51820)),
    ("[fd00::1]:51820", ("fd00::1", 51820)),
    ("vpn.example.net:443", ("vpn.example.net", 443)),
])
def test_split_endpoint(text, parsed):
    assert split_endpoint(text) == parsed


@pytest.mark.parametrize("text", ["fd00::1:51820", "host", "host:", ":1", "host:0", "h:65536",
                                  "[fd00::1]51820", "h:x"])
def test_bad_endpoints(text):
    with pytest.raises(BackendError, match="expected host:port"):
        split_endpoint(text)


def test_format_endpoint():
    assert format_endpoint("fd00::0:1", 5) == "[fd00::1]:5"
    assert format_endpoint("198.18.0.1", 5) == "198.18.0.1:5"


# --- property: applying build_set() to the device yields the desired device -------------------

def _model_apply(dev, request):
    """How wireguard-go applies a set request, reduced to the fields we diff."""
    dev = {"private_key": dev["private_key"], "listen_port": dev["listen_port"],
           "peers": {k: dict(v) for k, v in dev["peers"].items()}}
    touched, peer = set(), None
    assert request.startswith("set=1\n") and request.endswith("\n\n")
    for line in request[6:-2].split("\n"):
        key, _, value = line.partition("=")
        if key == "public_key":
            touched.add(value)
            peer = dev["peers"].setdefault(value, _peer())
            pk = value
        elif key == "remove":
            del dev["peers"][pk]
        elif key == "update_only":
            assert pk in dev["peers"]
        elif key == "replace_allowed_ips":
            peer["allowed_ips"] = ()
        elif key == "allowed_ip":
            peer["allowed_ips"] = tuple(sorted(peer["allowed_ips"] + (value,)))
        elif key == "endpoint":
            peer["endpoint"] = value
        elif key == "persistent_keepalive_interval":
            peer["keepalive"] = int(value)
        else:
            dev[key] = value if key == "private_key" else int(value)
    return dev, touched


_keys = st.sampled_from([K1, K2, K3])
_peers = st.dictionaries(_keys, st.builds(
    _peer, st.lists(st.sampled_from(["100.64.0.1/32", "198.19.1.0/24", "fd00:6c6d::2/128"]),
                    unique=True),
    st.sampled_from([None, "198.18.0.1:51820", "[fd00::1]:51820"]), st.sampled_from([0, 25])))
_devs = st.builds(lambda k, port, peers: {"private_key": k, "listen_port": port, "peers": peers},
                  st.sampled_from([None, PRIV, "b0" * 32]), st.sampled_from([0, 51820]), _peers)


@settings(max_examples=300, deadline=None)
@given(_devs, _devs)
def test_build_set_converges_and_touches_only_changed_peers(current, desired):
    desired["private_key"] = desired["private_key"] or PRIV
    request = build_set(current, desired)
    if not request:
        after, touched = current, set()
    else:
        after, touched = _model_apply(current, request)
    assert set(after["peers"]) == set(desired["peers"])
    for pk, want in desired["peers"].items():
        have = after["peers"][pk]
        assert have["allowed_ips"] == want["allowed_ips"] and have["keepalive"] == want["keepalive"]
        if want["endpoint"]:
            assert have["endpoint"] == want["endpoint"]
        if pk in current["peers"] and current["peers"][pk] == have:
            assert pk not in touched, "an unchanged peer was touched"
    assert after["private_key"] == desired["private_key"]
    assert after["listen_port"] == (desired["listen_port"] or current["listen_port"])
    assert build_set(after, desired) == ""
