import json

import pytest

from lanmesh import keys, netdoc
from lanmesh.errors import DocumentError


def node(i, **kw):
    d = {"name": f"site-{i}", "public_key": keys.pubkey(keys.genkey()),
         "address": [f"100.64.0.{i}/32", f"fd00:6c6d::{i}/128"],
         "lan": [f"198.19.{i}.0/24", f"fd00:19:{i}::/64"], "endpoints": [f"198.18.{i}.2:51820"]}
    d.update(kw)
    return d


def doc(*nodes, **kw):
    d = {"fleet": "acme", "version": 3, "overlay": {"ipv4": "100.64.0.0/10", "ipv6": "fd00:6c6d::/64"},
         "nodes": list(nodes) or [node(1), node(2)]}
    d.update(kw)
    return d


def problems(d):
    with pytest.raises(DocumentError) as e:
        netdoc.loads(json.dumps(d) if not isinstance(d, (str, bytes)) else d)
    return e.value.problems


def test_good_document_parses_with_defaults():
    d = netdoc.loads(json.dumps(doc()))
    assert d.fleet == "acme" and d.version == 3
    assert d.settings["listen_port"] == 51820 and d.settings["mtu"] == 1420
    n = d.node("site-1")
    assert n.ipv4 == "100.64.0.1/32" and n.ipv6 == "fd00:6c6d::1/128"
    assert n.lan == ("198.19.1.0/24", "fd00:19:1::/64") and n.relay is False   # relays see plaintext: opt in


def test_canonical_form_is_sorted_and_compact():
    raw = {"b": 1, "a": {"z": "é", "y": [1, 2]}}
    assert netdoc.canonical(raw) == '{"a":{"y":[1,2],"z":"é"},"b":1}'.encode()


def test_bad_prefix_is_named_with_path_and_value():
    p = problems(doc(node(1, lan=["198.19.300.0/24"]), node(2)))
    assert p == ["nodes[0].lan[0]: '198.19.300.0/24' is not an IP prefix"]


def test_host_bits_and_missing_length():
    p = problems(doc(node(1, lan=["198.19.1.1/24", "198.19.9.0"]), node(2)))
    assert "nodes[0].lan[0]: '198.19.1.1/24' has host bits set" in p
    assert "nodes[0].lan[1]: '198.19.9.0' is not an IP prefix (missing /len)" in p


def test_overlapping_lans_between_nodes_rejected():
    p = problems(doc(node(1), node(2, lan=["198.19.1.128/25"])))
    assert p == ["nodes[1].lan[0]: '198.19.1.128/25' overlaps '198.19.1.0/24' of node 'site-1'"]


def test_duplicate_public_key_and_name():
    a = node(1)
    b = node(2, public_key=a["public_key"], name="site-1")
    p = problems(doc(a, b))
    assert any(x.startswith("nodes[1].name: 'site-1' is already used by nodes[0]") for x in p)
    assert any(x.startswith("nodes[1].public_key:") and "already used" in x for x in p)


def test_duplicate_json_key_rejected():
    text = '{"fleet": "acme", "fleet": "evil", "version": 1}'
    assert problems(text) == ["document: duplicate key 'fleet' in one JSON object"]


def test_truncated_and_non_json():
    full = json.dumps(doc())
    assert problems(full[: len(full) // 2])[0].startswith("document: truncated JSON")
    assert problems("hello: world")[0].startswith("document: not valid JSON")
    assert problems(b"\xff\xfe")[0].startswith("document: not UTF-8")
    assert problems("")[0] == "document: empty"


def test_oversize_rejected():
    assert "limit" in problems(b" " * (netdoc.MAX_DOC_BYTES + 1))[0]


def test_every_problem_reported_at_once():
    bad = doc(node(1, address=["100.64.0.1/32"], endpoints=["nohost"]),
              node(2, public_key="short", relay="yes"), version=0, fleet="Bad Name")
    bad["settings"] = {"mtu": 10, "colour": 1}
    p = problems(bad)
    for want in ("fleet:", "version:", "settings.mtu:", "settings.colour: unknown setting",
                 "nodes[0].address:", "nodes[0].endpoints[0]:", "nodes[1].public_key:", "nodes[1].relay:"):
        assert any(x.startswith(want) for x in p), (want, p)


def test_address_outside_overlay_and_lan_inside_overlay():
    p = problems(doc(node(1, address=["100.128.0.1/32", "fd00:6c6d::1/128"]),
                     node(2, lan=["100.64.5.0/24"])))
    assert "nodes[0].address[0]: '100.128.0.1/32' is outside the overlay '100.64.0.0/10'" in p
    assert "nodes[1].lan[0]: '100.64.5.0/24' overlaps the overlay '100.64.0.0/10'" in p


def test_ipv6_endpoint_needs_brackets():
    assert problems(doc(node(1, endpoints=["fd00::1:51820"]), node(2)))[0].endswith(
        "IPv6 endpoints need brackets: [addr]:port")
    netdoc.loads(json.dumps(doc(node(1, endpoints=["[fd00::1]:51820"]), node(2))))
