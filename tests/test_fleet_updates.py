# Issue 15, the fetch half, against a real mosquitto (TLS, passwords, the generated ACL) with
# whole daemons in-process (their real fleet agents and MQTT client) and the `lanmesh fleet`
# CLI: a release is added and assigned; each router fetches its own platform's package chunk
# by chunk, verifies it and reports; refusals (must show 4) are reported with their reason and
# leave nothing on the router; a download resumes after a restart; a router offline when it
# was assigned a release gets it when it comes back (must show 5).
import json
import logging
import os
import time

from lanmesh.fleet import signing, topics
from lanmesh.operator import releases
from lanmesh.operator.controller import BrokerSession
from lanmesh_lab.inprocess import Background
from test_fleet_mqtt import PREFIX, Watcher, fleet, lanmesh  # noqa: F401 - fixture

PLATFORM = {"package_format": "ipk", "board": "tplink-archer-c7-v5"}


def package(tmp, version="0.2.0", size=150_000, fmt="ipk"):
    name = {"ipk": f"lanmesh_{version}-r1_all.ipk", "deb": f"lanmesh_{version}-1_all.deb",
            "apk": f"lanmesh-{version}-r1.apk"}[fmt]
    p = tmp / name
    p.write_bytes(os.urandom(size))
    return p


def sites(f, *names, platform=None):
    """In-process daemons for `names`, each with {name: fleet settings} from `platform`."""
    b = Background([f.cfg(n, fleet=(platform or {}).get(n, PLATFORM)) for n in names])
    f.running.append(b)
    return b


def update_of(w, name, pred, what, timeout=20):
    return w.wait(lambda: (lambda u: u if u and pred(u) else None)(w.reported(name).get("update")),
                  timeout=timeout, what=what)


def update_dir(f, name):
    return f.tmp / name / "state" / "update"


def test_release_add_assign_fetch_verify_and_status(fleet):
    f = fleet
    ipk, deb = package(f.tmp), package(f.tmp, fmt="deb")
    r = lanmesh("fleet", "release", "add", str(ipk), str(deb), "--dir", f.fd.path)
    assert r.returncode == 0, r.stderr
    assert "release 0.2.0 signed and published" in r.stdout and "ipk: lanmesh_0.2.0-r1_all.ipk" in r.stdout
    r = lanmesh("fleet", "release", "add", str(ipk), "--dir", f.fd.path)
    assert r.returncode != 0 and "exists already" in r.stderr
    r = lanmesh("fleet", "release", "list", "--dir", f.fd.path)
    assert r.returncode == 0 and r.stdout.startswith("0.2.0") and "ipk 150000 B" in r.stdout

    w = Watcher(f)
    sites(f, "hq", "branch", platform={"branch": dict(PLATFORM, package_format="deb")})
    w.wait(lambda: w.messages.get(topics.state(PREFIX, "branch")) == b"online", what="online")
    r = lanmesh("fleet", "update", "hq", "branch", "--release", "0.2.0", "--dir", f.fd.path)
    assert r.returncode == 0, r.stderr
    for name, src in (("hq", ipk), ("branch", deb)):
        u = update_of(w, name, lambda u: u["state"] == "downloaded", f"{name} downloaded")
        assert u["version"] == "0.2.0" and u["chunks"] == [5, 5], u
        got = update_dir(f, name) / src.name
        assert got.read_bytes() == src.read_bytes()          # its own platform's package
        assert os.listdir(update_dir(f, name)) == [src.name]
    rows = {row["node"]: row for row in json.loads(lanmesh(
        "fleet", "status", "--json", "--dir", f.fd.path).stdout)}
    assert rows["hq"]["update"]["state"] == "downloaded" and rows["hq"]["software"] == "0.1.0"
    assert rows["branch"]["update"]["format"] == "deb"
    r = lanmesh("fleet", "update", "nowhere", "--release", "0.2.0", "--dir", f.fd.path)
    assert r.returncode != 0 and "not in the registry: nowhere" in r.stderr


def _session(f):
    return BrokerSession(f.opts)


def _manifest(f, path, key=None, chunk_size=32768, **kw):
    doc, files = releases.build_manifest("acme", [str(path)], chunk_size=chunk_size, **kw)
    env = signing.envelope_bytes(signing.sign(doc, key or signing.read_key(f.fd.key_path)))
    return doc, env, files


def test_refused_releases_say_why_and_leave_nothing(fleet):
    f = fleet
    w = Watcher(f)
    sites(f, "hq")
    w.wait(lambda: w.messages.get(topics.state(PREFIX, "hq")) == b"online", what="online")
    t = topics.update(PREFIX, "hq")
    cases = []
    p = package(f.tmp, "0.3.0")
    cases.append((_manifest(f, p, key=signing.generate_key()), None,
                  "does not verify with the fleet key"))               # another fleet's key
    cases.append((_manifest(f, package(f.tmp, "0.0.9")), None, "not newer than the running 0.1.0"))
    cases.append((_manifest(f, p, boards=["glinet-gl-mt6000"]), None, "not for this board"))
    cases.append((_manifest(f, package(f.tmp, "0.4.0", fmt="deb")), None, "has no ipk package"))
    # a manifest whose artefact on the broker is not what it signed
    for version, broken, why in (("0.5.0", lambda b: b[:-100], "truncated"),
                                 ("0.6.0", lambda b: b + b"x" * 100, "oversize"),
                                 ("0.7.0", lambda b: bytes(len(b)), "does not match the manifest")):
        cases.append((_manifest(f, package(f.tmp, version, size=40_000)), broken, why))
    with _session(f) as s:
        for (doc, env, files), broken, why in cases:
            if broken is not None:
                data = open(files["ipk"], "rb").read()
                s.publish(topics.chunk(PREFIX, doc["version"], "ipk", 0), data[:32768], retain=True)
                s.publish(topics.chunk(PREFIX, doc["version"], "ipk", 1), broken(data[32768:]),
                          retain=True)
            s.publish(t, env, retain=True)
            u = update_of(w, "hq", lambda u, v=doc["version"]: u.get("version") == v and
                          u["state"] == "rejected", f"{doc['version']} rejected ({why})")
            assert why in u["reason"], u
            d = update_dir(f, "hq")
            assert not d.exists() or os.listdir(d) == [], os.listdir(d)   # nothing kept
        s.publish(t, b"not json at all", retain=True)
        update_of(w, "hq", lambda u: u["state"] == "rejected" and "JSON" in u["reason"], "garbage")


def test_a_download_resumes_after_a_restart_and_an_offline_router_catches_up(fleet, caplog):
    f = fleet
    w = Watcher(f)
    p = package(f.tmp, size=200_000)                # 7 chunks of 32 KiB
    doc, env, files = _manifest(f, p)
    data = p.read_bytes()
    with _session(f) as s:
        for i in range(4):                          # the broker holds only 4 of them so far
            s.publish(topics.chunk(PREFIX, "0.2.0", "ipk", i), data[i * 32768:(i + 1) * 32768],
                      retain=True)
        s.publish(topics.update(PREFIX, "hq"), env, retain=True)   # hq is offline: retained
    b = sites(f, "hq")
    u = update_of(w, "hq", lambda u: u["state"] == "downloading" and u["chunks"][0] == 4,
                  "4 chunks in")
    assert u["chunks"] == [4, 7]
    b.stop()                                        # the router restarts mid-download
    f.running.remove(b)
    part = update_dir(f, "hq") / (p.name + ".part")
    assert part.exists()
    caplog.set_level(logging.INFO)
    caplog.clear()
    b = sites(f, "hq")
    w.wait(lambda: "4 of 7 chunks already here" in caplog.text, what="resumed from disk")
    with _session(f) as s:
        for i in range(4, 7):
            s.publish(topics.chunk(PREFIX, "0.2.0", "ipk", i), data[i * 32768:(i + 1) * 32768],
                      retain=True)
    update_of(w, "hq", lambda u: u["state"] == "downloaded", "downloaded", timeout=40)
    assert (update_dir(f, "hq") / p.name).read_bytes() == data
