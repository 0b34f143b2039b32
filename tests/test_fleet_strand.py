# Issue 13: ordinary mistakes never strand a site. A document signed with the wrong key, a
# wrong fleet name in the router's config, a rekey (while running, and with a restart in
# between) and a key on disk that the document does not name: the router keeps its last
# good document and its mesh links where it can, never exits, and takes the next good
# document by itself. Whole daemons in-process, real mosquitto (test_fleet_mqtt's bed).
import json
import os

from lanmesh import keys
from lanmesh.config import load_config
from lanmesh.console.agent import Store
from lanmesh_lab.inprocess import Background
from test_fleet_mqtt import PREFIX, Watcher, lanmesh, publish_next, signed
from test_fleet_mesh import wait_for
from test_fleet_mqtt import fleet  # noqa: F401 (the fixture)
from lanmesh.fleet import signing, topics


def _up(daemon, peer):
    return any(x["peer"] == peer and x["up"] for x in daemon.status()["links"])


def _until(pred, what, timeout=15.0):
    return wait_for(pred, timeout, what)


def _start(f, cfgs=None):
    b = Background(cfgs or [f.cfg("hq"), f.cfg("branch")])
    f.running.append(b)
    return b


def _restart(f, b):
    """As the init system would: the same routers, their node.json as it is on disk now."""
    b.stop()
    f.running.remove(b)
    return _start(f, [load_config(d.cfg.path) for d in b.daemons])


def _applied(b, i, v):
    return _until(lambda: b.daemons[i].document is not None and b.daemons[i].document.version == v
                  and b.daemons[i].fleet is not None
                  and b.daemons[i].fleet.core.applied_version == v, f"v{v} confirmed at node {i}")


def _rekey_on_device(f, name):
    """What `lanmesh provision --rekey` does on the router: the console agent commits a new
    key (and keeps the old one beside it); → the new public key."""
    new = keys.genkey()
    changed, _ = Store(str(f.tmp / name)).commit({}, new)
    assert changed
    return keys.pubkey(new)


def test_mistakes_never_strand_the_site(fleet):
    f = fleet
    w = Watcher(f)
    b = _start(f)
    publish_next(f)
    _applied(b, 0, 1)
    hq = b.daemons[0]
    _until(lambda: _up(hq, "branch"), "hq-branch link")

    # 1. A document signed with another key: refused, v1 and the link stay.
    v1 = json.loads(f.fd.registry.last_published()[1])["doc"]
    w.publish(topics.net(PREFIX), signed(dict(v1, version=2), key=signing.generate_key()),
              retain=True)
    w.wait(lambda: any("does not verify" in x["reason"] for x in w.reported("hq").get("rejected", [])),
           what="wrong-key document refused")
    assert hq.document.version == 1 and _up(hq, "branch")
    publish_next(f)                                   # the next good one: taken by itself
    _applied(b, 0, 2)
    assert not w.wait(lambda: "rejected" in w.reported("hq") and w.reported("hq"),
                      what="report")["rejected"]     # history once a newer version applied

    # 2. A wrong fleet name in the router's config, then a restart: it runs its last good
    #    document (mesh up), and says the broker drops its messages.
    path = f.tmp / "hq" / "node.json"
    good = path.read_text()
    raw = json.loads(good)
    raw["fleet"].update(name="acne", topic_prefix="lanmesh/acne/")
    path.write_text(json.dumps(raw))
    b = _restart(f, b)
    hq = b.daemons[0]
    assert hq.document is not None and hq.document.version == 2
    _until(lambda: _up(hq, "branch"), "mesh link with a wrong fleet name")
    _until(lambda: "fleet name (acne" in (hq.status()["fleet_state"]["broker_error"] or ""),
           "the wrong fleet name named")
    path.write_text(good)
    b = _restart(f, b)

    # 3. Rekey while running: the device commits a new key; the registry takes it (address
    #    kept); the next document switches the router to it; the old key is then removed.
    hq = b.daemons[0]
    _until(lambda: hq.fleet is not None and hq.fleet.core.connected, "hq connected again")
    _until(lambda: _up(hq, "branch"), "hq-branch link after the restart")
    address = f.fd.registry.node("hq")["address"]
    k2 = _rekey_on_device(f, "hq")
    r = lanmesh("fleet", "node", "set", "hq", "--public-key", k2, "--dir", f.fd.path)
    assert r.returncode == 0 and "kept" in r.stdout, r.stdout + r.stderr
    assert f.fd.registry.node("hq")["address"] == address
    assert hq.document.version == 2 and _up(hq, "branch")     # still on the old key
    publish_next(f)
    _applied(b, 0, 3)
    assert hq.public_key == k2
    _until(lambda: _up(hq, "branch"), "hq-branch link on the new key")
    prev = hq.cfg.private_key_file + ".prev"
    _until(lambda: not os.path.exists(prev), "the previous key removed once v3 is good")

    # 4. Rekey, then a restart before the fleet has the new key (was: a crash loop): the
    #    router starts on the previous key with its last good document, mesh up.
    k3 = _rekey_on_device(f, "hq")
    b = _restart(f, b)
    hq = b.daemons[0]
    assert hq.document.version == 3 and hq.public_key == k2
    _until(lambda: _up(hq, "branch"), "mesh link on the previous key after a restart")
    f.fd.registry.set_node("hq", public_key=k3)
    publish_next(f)
    _applied(b, 0, 4)
    assert hq.public_key == k3

    # 5. A key on disk that no document names (replaced by hand, no previous key): the
    #    router starts anyway, says why, and takes the next document that names it.
    k4 = keys.genkey()
    keys.write_private_key(hq.cfg.private_key_file, k4)
    b = _restart(f, b)
    hq = b.daemons[0]
    assert b.alive() and hq.document is None
    assert any("is not this node's" in r for r in hq.status()["rejected"]), hq.status()["rejected"]
    f.fd.registry.set_node("hq", public_key=keys.pubkey(k4))
    publish_next(f)
    _applied(b, 0, 5)
    _until(lambda: _up(hq, "branch"), "mesh link after the next good document")
    w.close()
