# One WireGuard diff, two encoders (dataplane.peerdiff): the same table of (device read back,
# desired device) cases gives the same changes through the netlink encoder (kernel backend)
# and the UAPI encoder (uapi backend), and the endpoint rule is the same for both: a route
# change or a periodic re-apply never overwrites an endpoint the peer roamed to.
import pytest

from lanmesh.dataplane.peerdiff import choose_endpoints, diff, to_netlink, to_uapi

K1, K2, K3 = "a" * 64, "b" * 64, "c" * 64


def peer(allowed, endpoint=None, keepalive=0):
    return {"endpoint": endpoint, "allowed_ips": tuple(sorted(allowed)), "keepalive": keepalive}


def dev(peers, private="p" * 64, port=51820):
    return {"private_key": private, "listen_port": port, "peers": peers}


def from_uapi(text):
    """A `set=1` request back into (device changes, {key: change or None})."""
    dev_c, out, key = {}, {}, None
    for line in text.split("\n")[1:]:
        if not line:
            continue
        k, _, v = line.partition("=")
        if k in ("private_key", "listen_port") and key is None:
            dev_c[k] = int(v) if k == "listen_port" else v
        elif k == "public_key":
            key = v
            out[key] = {"new": True}
        elif k == "remove":
            out[key] = None
        elif k == "update_only":
            out[key]["new"] = False
        elif k == "endpoint":
            out[key]["endpoint"] = v
        elif k == "persistent_keepalive_interval":
            out[key]["keepalive"] = int(v)
        elif k == "allowed_ip":
            out[key]["allowed_ips"] = out[key].get("allowed_ips", ()) + (v,)
        elif k == "replace_allowed_ips":
            out[key].setdefault("allowed_ips", ())
    return dev_c, out


def from_netlink(steps):
    dev_c, out = {}, {}
    for kwargs, _ in steps:
        if "peer" not in kwargs:
            dev_c.update(kwargs)
            continue
        p = kwargs["peer"]
        if p.get("remove"):
            out[p["public_key"]] = None
            continue
        c = {"new": not p.get("update_only")}
        if "endpoint_addr" in p:
            h = p["endpoint_addr"]
            c["endpoint"] = (f"[{h}]" if ":" in h else h) + f":{p['endpoint_port']}"
        if "persistent_keepalive" in p:
            c["keepalive"] = p["persistent_keepalive"]
        if p.get("replace_allowed_ips"):
            c["allowed_ips"] = tuple(p["allowed_ips"])
        out[p["public_key"]] = c
    return dev_c, out


TABLE = [
    ("equal", dev({K1: peer(["100.64.0.2/32"], "198.18.0.2:51820", 25)}),
     dev({K1: peer(["100.64.0.2/32"], None, 25)}), ({}, {})),
    ("new device and peer", dev({}, private=None, port=0),
     dev({K1: peer(["100.64.0.2/32"], "[fd00::2]:51820")}),
     ({"private_key": "p" * 64, "listen_port": 51820},
      {K1: {"new": True, "endpoint": "[fd00::2]:51820", "keepalive": 0,
            "allowed_ips": ("100.64.0.2/32",)}})),
    ("routes moved, removal, untouched", dev({K1: peer(["100.64.0.2/32"], "198.18.0.2:51820"),
                                              K2: peer(["100.64.0.3/32"]), K3: peer(["100.64.0.4/32"])}),
     dev({K1: peer(["100.64.0.2/32"]), K2: peer(["100.64.0.3/32", "198.19.3.0/24"])}),
     ({}, {K3: None, K2: {"new": False, "allowed_ips": ("100.64.0.3/32", "198.19.3.0/24")}})),
    ("keepalive and endpoint edited in place", dev({K1: peer(["100.64.0.2/32"], "198.18.0.2:51820", 25)}),
     dev({K1: peer(["100.64.0.2/32"], "198.18.0.8:51820", 13)}),
     ({}, {K1: {"new": False, "endpoint": "198.18.0.8:51820", "keepalive": 13}})),
    ("listen port 0 means leave it", dev({}, port=40000), dev({}, port=0), ({}, {})),
]


@pytest.mark.parametrize("name,current,desired,expect", TABLE, ids=[t[0] for t in TABLE])
def test_both_encoders_carry_the_same_minimal_diff(name, current, desired, expect):
    d, changes = diff(current, desired)
    want_dev, want_peers = expect
    assert (d, dict(changes)) == (want_dev, want_peers)
    assert from_uapi(to_uapi(d, changes)) == (want_dev, want_peers)
    nl = from_netlink(to_netlink(d, changes))
    assert nl == (want_dev, want_peers)
    assert (to_uapi(d, changes) == "") == (to_netlink(d, changes) == []) == (not d and not changes)


ROAMED = "198.18.9.9:40000"       # where the peer's packets really come from now


@pytest.mark.parametrize("name,have,cands,last,want_ep,want_last", [
    ("route change: a roamed endpoint is left alone", ROAMED, ["198.18.0.2:51820"],
     "198.18.0.2:51820", None, "198.18.0.2:51820"),
    ("the document moved the endpoint", ROAMED, ["198.18.0.8:51820"], "198.18.0.2:51820",
     "198.18.0.8:51820", "198.18.0.8:51820"),
    ("a DNS name now resolves elsewhere", "198.18.0.2:51820", ["198.18.0.7:51820"],
     "198.18.0.2:51820", "198.18.0.7:51820", "198.18.0.7:51820"),
    ("the name still resolves to the current address", "198.18.0.7:51820",
     ["198.18.0.6:51820", "198.18.0.7:51820"], None, None, "198.18.0.7:51820"),
    ("unresolvable now: leave it", "198.18.0.2:51820", [], "198.18.0.2:51820", None,
     "198.18.0.2:51820"),
    ("no endpoint yet", None, ["198.18.0.2:51820"], None, "198.18.0.2:51820", "198.18.0.2:51820"),
])
def test_endpoint_rule(name, have, cands, last, want_ep, want_last):
    current = {K1: peer([], have)}
    desired = {K1: {"endpoint": cands, "allowed_ips": (), "keepalive": 0}}
    chosen, keep = choose_endpoints(current, desired, {K1: last} if last else {})
    assert chosen[K1] == want_ep and keep.get(K1) == want_last


def test_new_peer_gets_the_first_candidate():
    chosen, keep = choose_endpoints({}, {K2: {"endpoint": ["198.18.0.3:51820"]}}, {})
    assert chosen == {K2: "198.18.0.3:51820"} and keep == {K2: "198.18.0.3:51820"}


def test_a_relays_port_is_set_again_after_roaming():
    """A forced endpoint (a blind relay's port) is restored when WireGuard roamed away from it
    (packets still arriving over a slow direct path); an unforced one is left roamed."""
    relay = "198.18.2.2:52001"
    have = {K1: {"endpoint": "198.18.3.2:51820"}}           # roamed back to the direct path
    chosen, _ = choose_endpoints(have, {K1: {"endpoint": [relay], "force": True}}, {K1: relay})
    assert chosen[K1] == relay
    chosen, _ = choose_endpoints(have, {K1: {"endpoint": [relay]}}, {K1: relay})
    assert chosen[K1] is None


def test_back_from_a_relay_only_a_relays_port_is_undone():
    """A peer just back from a relay: an endpoint WireGuard roamed onto a relay's address is
    set back to the peer's own; a NAT rebinding elsewhere stays (roaming is WireGuard's job)."""
    own = "198.18.3.2:51820"
    want = {K1: {"endpoint": [own], "not_via": ("198.18.2.2",)}}
    onto_relay = {K1: {"endpoint": "198.18.2.2:52001"}}
    chosen, _ = choose_endpoints(onto_relay, want, {K1: own})
    assert chosen[K1] == own
    rebound = {K1: {"endpoint": "198.18.3.99:40000"}}
    chosen, _ = choose_endpoints(rebound, want, {K1: own})
    assert chosen[K1] is None
