# Issue 13, the operator's side without a broker: what `fleet status` makes of reports (rows
# by name, stale from the node's own interval, links from its own list, rejections with their
# version, warnings with their fix), and a one-line `provision` on a fleet directory.
import json

import pytest

from lanmesh import keys
from lanmesh.fleet import signing, topics
from lanmesh.operator import controller, provision

P = "lanmesh/acme/"


@pytest.fixture
def fd(tmp_path):
    fd = controller.FleetDir.init(str(tmp_path / "acme"), "acme", overlay6="fd00:6c6d::/64")
    for i, n in enumerate(("zeta", "alpha", "mid")):
        fd.registry.add_node(n, keys.pubkey(keys.genkey()), [f"198.19.{i + 1}.0/24"],
                             [f"198.18.0.{i + 1}:51820"])
    return fd


def _msgs(**reports):
    m = {}
    for name, (state, rep) in reports.items():
        m[topics.state(P, name)] = state.encode()
        m[topics.reported(P, name)] = json.dumps(rep).encode()
    return m


def _publish(fd, version):
    doc = dict(fd.registry.next_document(), version=version)
    env = signing.envelope_bytes(signing.sign(doc, signing.read_key(fd.key_path)))
    fd.registry.record_published(version, env)
    return env


def test_rows_by_name_stale_links_rejections_and_warnings(fd):
    env = _publish(fd, 1)
    now = 1_000_000
    rep = {"time": now - 5, "report_interval": 10, "applied_version": 1,
           "links": [{"peer": "mid", "up": False}, {"peer": "zeta", "up": True}],
           "links_up": [2, 2],                       # a stale count: the list wins
           "rejected": [{"version": 7, "reason": "signature does not verify with the fleet key"}]}
    msgs = _msgs(alpha=("online", rep),
                 mid=("online", dict(rep, time=now - 31, rejected=[])),        # > 3 × 10 s
                 zeta=("online", dict(rep, rejected=[], applied_version=1)))
    msgs[topics.net(P)] = env
    rows = controller.status_rows(fd, msgs, now)
    assert [r["node"] for r in rows] == ["alpha", "mid", "zeta"]
    by = {r["node"]: r for r in rows}
    assert by["mid"]["state"] == "stale" and by["alpha"]["state"] == "online"
    assert (by["alpha"]["links_up"], by["alpha"]["links_total"]) == (1, 2)
    text = controller.format_table(rows)
    assert "rejected v7: signature does not verify" in text and "!" not in text
    assert all(len(line) < 120 for line in text.splitlines()), text

    # The broker lost the document (no persistence): said, with the fix.
    del msgs[topics.net(P)]
    text = controller.format_table(controller.status_rows(fd, msgs, now))
    assert "broker holds no document" in text and "lanmesh fleet publish" in text

    # A rollback on one node: the fleet is split, and the table says what to do.
    msgs[topics.net(P)] = _publish(fd, 2)
    split = _msgs(alpha=("online", dict(rep, applied_version=1, rejected=[],
                                        rollback={"version": 2, "reason": "broker not reachable"})),
                  mid=("online", dict(rep, applied_version=2, rejected=[])),
                  zeta=("online", dict(rep, applied_version=2, rejected=[])))
    split[topics.net(P)] = msgs[topics.net(P)]
    text = controller.format_table(controller.status_rows(fd, split, now), wide=True)
    assert "fleet split: alpha v1, mid v2, zeta v2" in text
    assert "alpha rolled back v2: broker not reachable" in text and "publish` (v3)" in text


def test_a_readded_node_keeps_its_row_place(fd):
    pub = fd.registry.node("alpha")["public_key"]
    fd.registry.remove_node("alpha")
    fd.registry.add_node("alpha", pub, ["198.19.9.0/24"])
    rows = controller.status_rows(fd, {}, 0)
    assert [r["node"] for r in rows] == ["alpha", "mid", "zeta"]


def test_one_line_provision_takes_the_fleet_from_its_directory(fd, tmp_path):
    d = provision.fleet_defaults(fd.path)
    assert d["fleet"] == "acme" and d["fleet_key"] == fd.public_key()
    node = provision.Node("b7", ["198.19.7.0/24"], fleet="acme", fleet_key=d["fleet_key"])
    with pytest.raises(provision.ProvisionError) as e:
        node.check()                                 # no broker stored yet
    assert "--broker" in str(e.value) and "fleet config broker=" in str(e.value)
    assert "--fleet-key" not in str(e.value)
    fd.registry.set("broker", "mqtts://198.18.0.250:8883")
    assert provision.fleet_defaults(fd.path)["broker"] == "mqtts://198.18.0.250:8883"


def test_register_updates_in_place_on_a_rekey(fd):
    before = fd.registry.node("mid")
    new = keys.pubkey(keys.genkey())
    what = provision.register_node(fd.path, "mid", new, before["lan"])
    assert what.startswith("updated (new key") and "addresses kept" in what
    after = fd.registry.node("mid")
    assert after["public_key"] == new and after["address"] == before["address"]
    assert provision.register_node(fd.path, "mid", new, before["lan"]) == "unchanged"
