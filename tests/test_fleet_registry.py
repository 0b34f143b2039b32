# Controller registry (SQLite): stable address allocation, validation before any write,
# revocation, document versions and diffs; broker config files.
import ipaddress
import json
import os

import pytest

from lanmesh import keys, netdoc
from lanmesh.fleet import signing
from lanmesh.operator import brokerconf, controller, registry


def pub():
    return keys.pubkey(keys.genkey())


@pytest.fixture
def fd(tmp_path):
    return controller.FleetDir.init(str(tmp_path / "acme"), "acme", overlay6="fd00:6c6d::/64")


def test_init_layout_and_modes(fd):
    for p, mode in ((fd.key_path, 0o600), (fd.password_path, 0o600), (fd.registry_path, 0o600)):
        assert os.stat(p).st_mode & 0o777 == mode
    assert signing.public_key(signing.read_key(fd.key_path)) == fd.public_key()
    with pytest.raises(Exception, match="already initialised"):
        controller.FleetDir.init(fd.path, "acme")


def test_random_ula_is_in_fd00():
    net = ipaddress.ip_network(registry.random_ula64())
    assert net.prefixlen == 64 and net.subnet_of(ipaddress.ip_network("fd00::/8"))


def test_allocation_is_stable_and_never_reused(fd):
    reg = fd.registry
    a = reg.add_node("hq", pub(), ["198.19.1.0/24"], ["198.18.0.1:51820"])
    b = reg.add_node("branch", pub(), ["198.19.2.0/24"])
    assert a["address"] == ["100.64.0.1/32", "fd00:6c6d::1/128"]
    assert b["address"] == ["100.64.0.2/32", "fd00:6c6d::2/128"]
    reg.remove_node("hq")
    c = reg.add_node("shop", pub(), ["198.19.3.0/24"])
    assert c["address"] == ["100.64.0.3/32", "fd00:6c6d::3/128"]       # hq's .1 is not reused
    # Reopening the registry gives the same nodes and addresses.
    again = registry.Registry.open(fd.registry_path)
    assert again.nodes() == reg.nodes()
    assert [n["name"] for n in again.nodes()] == ["branch", "shop"]


@pytest.mark.parametrize("name, lan, error", [
    ("hq", ["198.19.9.0/24"], "already used"),
    ("x", ["198.19.1.128/25"], "overlaps '198.19.1.0/24'"),
    ("x", ["198.19.300.0/24"], "is not an IP prefix"),
    ("x", ["100.64.5.0/24"], "overlaps the overlay"),
    ("Bad_Name", [], "is not a node name"),
    ("controller", [], "reserved"),
])
def test_bad_node_changes_nothing(fd, name, lan, error):
    reg = fd.registry
    reg.add_node("hq", pub(), ["198.19.1.0/24"])
    before = (reg.nodes(), reg.get("next_index"))
    with pytest.raises(registry.RegistryError, match=error):
        reg.add_node(name, pub(), lan)
    assert (reg.nodes(), reg.get("next_index")) == before


def test_bad_key_and_endpoint(fd):
    with pytest.raises(registry.RegistryError, match="not a WireGuard public key"):
        fd.registry.add_node("a", "nope")
    with pytest.raises(registry.RegistryError, match="is not host:port"):
        fd.registry.add_node("a", pub(), endpoints=["198.18.0.1"])


def test_documents_versions_and_diff(fd):
    reg = fd.registry
    reg.add_node("hq", pub(), ["198.19.1.0/24"])
    reg.add_node("branch", pub(), ["198.19.2.0/24"])
    doc, env, diff, old = controller.prepare(fd)
    assert doc["version"] == 1 and old is None and diff[0] == "+ first document: 2 nodes"
    assert netdoc.validate(doc) == []
    assert signing.verify_document(env, fd.public_key()).version == 1
    reg.record_published(1, env)
    reg.remove_node("hq")
    reg.add_node("shop", pub(), ["198.19.3.0/24"], ["198.18.0.3:51820"])
    reg.set_settings({"confirm_window": 10})
    doc2, env2, diff2, old2 = controller.prepare(fd)
    assert doc2["version"] == 2 and old2["version"] == 1
    assert "- node hq (revoked: no longer in the document)" in diff2
    assert any(line.startswith("+ node shop: 100.64.0.3/32") for line in diff2)
    assert any(line.startswith("~ settings:") for line in diff2)
    assert "hq" not in {n["name"] for n in doc2["nodes"]}
    with pytest.raises(registry.RegistryError, match="confirm_window: 1 is not an integer"):
        reg.set_settings({"confirm_window": 1})


def test_broker_config_keeps_passwords_and_revokes(fd, tmp_path):
    reg = fd.registry
    reg.add_node("hq", pub())
    reg.add_node("branch", pub())
    out = str(tmp_path / "broker")
    fresh = brokerconf.write_broker_config(out, "lanmesh/acme/", ["hq", "branch"], "ctlpw")
    assert set(fresh) == {"hq", "branch"}
    pw = brokerconf.read_passwd(os.path.join(out, "passwd"))
    assert brokerconf.check_password(fresh["hq"], pw["hq"])
    assert "controller" not in pw      # the controller has a listener of its own
    ctl = brokerconf.read_passwd(os.path.join(out, brokerconf.CONTROLLER_PASSWD))
    assert list(ctl) == ["controller"] and brokerconf.check_password("ctlpw", ctl["controller"])
    assert open(os.path.join(out, "credentials", "hq.pass")).read().strip() == fresh["hq"]
    acl = open(os.path.join(out, "acl")).read()
    assert "pattern readwrite lanmesh/acme/node/%u/#" in acl
    assert "user hq\ntopic read lanmesh/acme/net" in acl and "pattern read " not in acl
    assert "user controller\ntopic readwrite lanmesh/acme/#" in acl
    # Again, with hq removed: branch keeps its password, hq's account and file are gone.
    fresh2 = brokerconf.write_broker_config(out, "lanmesh/acme/", ["branch"], "ctlpw")
    assert fresh2 == {}
    pw2 = brokerconf.read_passwd(os.path.join(out, "passwd"))
    assert set(pw2) == {"branch"} and pw2["branch"] == pw["branch"]
    assert not os.path.exists(os.path.join(out, "credentials", "hq.pass"))
    conf = open(os.path.join(out, "mosquitto.conf")).read()
    assert conf.count("allow_anonymous false") == 2 and f"acl_file {out}/acl" in conf
    assert "listener 8883 0.0.0.0\nallow_anonymous false\npassword_file " + out + "/passwd\n" in conf
    assert "use_username_as_clientid true" in conf and "listener 8884 " in conf


def test_enrolled_node_credential_is_kept_by_broker_config(tmp_path):
    # `lanmesh provision --fleet-dir` gives the router its broker account at once; re-running
    # it reuses the same password; a later broker-config keeps the account.
    out = str(tmp_path / "broker")
    brokerconf.write_broker_config(out, "lanmesh/acme/", ["hq"], "ctlpw")
    hq = brokerconf.read_passwd(os.path.join(out, "passwd"))["hq"]
    pw = brokerconf.node_credential(out, "branch")
    assert brokerconf.add_node_credential(out, "branch", pw) is True
    assert brokerconf.node_credential(out, "branch") == pw          # re-provisioning: same one
    assert brokerconf.add_node_credential(out, "branch", pw) is False
    entries = brokerconf.read_passwd(os.path.join(out, "passwd"))
    assert brokerconf.check_password(pw, entries["branch"]) and entries["hq"] == hq
    assert oct(os.stat(os.path.join(out, "credentials", "branch.pass")).st_mode & 0o777) == "0o600"
    fresh = brokerconf.write_broker_config(out, "lanmesh/acme/", ["hq", "branch"], "ctlpw")
    assert fresh == {}
    assert brokerconf.check_password(pw, brokerconf.read_passwd(os.path.join(out, "passwd"))["branch"])


def test_status_rows_join_registry_and_reports(fd):
    reg = fd.registry
    reg.add_node("hq", pub())
    reg.add_node("branch", pub())
    reg.record_published(4, b"{}")
    msgs = {"lanmesh/acme/node/hq/state": b"online",
            "lanmesh/acme/node/hq/reported": json.dumps({
                "time": 1000, "applied_version": 4, "pending_version": None,
                "rollback": None, "rejected": [], "links_up": [1, 1]}).encode(),
            "lanmesh/acme/node/ghost/state": b"lost"}
    rows = controller.status_rows(fd, msgs, 1010)
    by = {r["node"]: r for r in rows}
    assert by["hq"]["state"] == "online" and by["hq"]["last_seen"] == 10
    assert by["branch"]["state"] == "never seen"
    assert by["ghost"]["registered"] is False
    table = controller.format_table(rows)
    assert "hq" in table and "1/1 up" in table and "NOT IN REGISTRY" in table
