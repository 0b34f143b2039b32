# Issue 15, the install half: routers whose lanmesh was installed by the real opkg (offline
# roots, as Image Builder lays them out), each daemon run from its root's /usr/bin/lanmesh
# in a site namespace, a real mosquitto over TLS. A release built from this tree with a
# bumped version is added and assigned; each router fetches it and the package of the
# version it runs (the way back), the guard installs it with opkg, restarts the service and
# waits for the new daemon's confirm (must show 1). A release that exits at start rolls back
# by itself within the confirm window and says why; opkg's view is the old version again
# (must show 2). kill -9 of the daemon and of the guard (must show 3).
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from openwrt_root import apk, apk_repo, missing_tools, opkg, opkg_root, tool  # noqa: E402
from test_fleet_mesh import wait_for  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "packaging"))
import build_apk  # noqa: E402
import build_deb  # noqa: E402
import build_ipk  # noqa: E402

pytestmark = pytest.mark.netns
WINDOW = 10

SERVICE = """#!/bin/sh
# the site's init system, as far as lanmesh's guard needs one: restart the daemon from the
# root's /usr/bin/lanmesh (the version opkg installed last) in the site's namespace
pid=$(cat {pidfile} 2>/dev/null)
if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null
    n=0; while kill -0 "$pid" 2>/dev/null && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
    kill -9 "$pid" 2>/dev/null
fi
setsid ip netns exec {ns} {python} -S {root}/usr/bin/lanmesh run --config {config} \
    >>{log} 2>&1 </dev/null &
echo $! >{pidfile}
"""


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    if missing_tools("opkg"):
        pytest.skip(missing_tools("opkg"))
    out = str(tmp_path_factory.mktemp("pkgs"))

    def exits_at_start(tree):
        tree.entries["usr/bin/lanmesh"] = (0o755, b"#!/bin/sh\necho 'broken release' >&2\nexit 3\n")

    def no_broker(tree):           # starts and runs the mesh, but never reaches the broker
        path = "usr/lib/lanmesh/lanmesh/adapters/mqtt.py"
        mode, src = tree.entries[path]
        hook = b'def parse_broker(url):\n    url = "mqtts://198.18.255.254:1"\n'
        tree.entries[path] = (mode, src.replace(b"def parse_broker(url):\n", hook, 1))
    return {"0.1.0": build_ipk.build(os.path.join(out, "v1")),
            "0.2.0": build_ipk.build(os.path.join(out, "v2"), version="0.2.0"),
            "0.3.0": build_ipk.build(os.path.join(out, "v3"), version="0.3.0", edit=exits_at_start),
            "0.4.0": build_ipk.build(os.path.join(out, "v4"), version="0.4.0", edit=no_broker),
            **{v: build_ipk.build(os.path.join(out, v), version=v) for v in ("0.5.0", "0.6.0", "0.7.0")},
            "0.8.0": build_ipk.build(os.path.join(out, "v8"), version="0.8.0", edit=exits_at_start)}


class Router:
    """A site whose lanmesh is an opkg-installed (or apk-installed) root, run by SERVICE."""

    def __init__(self, lab, fl, site, package, fmt="ipk"):
        self.lab, self.fl, self.site, self.fmt = lab, fl, site, fmt
        self.root = os.path.join(site.dir, "root")
        if fmt == "ipk":
            opkg_root(self.root)
            r = opkg(self.root, "install", package)
        elif fmt == "apk":
            os.makedirs(os.path.join(self.root, "etc"))
            r = apk(self.root, apk_repo(os.path.join(site.dir, "repo"), extra=[package]), "add",
                    "lanmesh")
        else:                   # Raspberry Pi OS: dpkg, systemd
            r = dpkg_root_install(self.root, package)
        assert r.returncode == 0, r.stdout + r.stderr
        if fmt != "deb":
            with open(os.path.join(self.root, "etc/rc.common"), "w") as f:
                f.write("# OpenWrt's rc.common: lanmesh's guard writes a procd init hook here\n")
        self.service = os.path.join(site.dir, "service.sh")
        self.pidfile = os.path.join(site.dir, "daemon.pid")
        with open(self.service, "w") as f:
            f.write(SERVICE.format(pidfile=self.pidfile, ns=site.router, python=sys.executable,
                                   root=self.root, config=site.config_path,
                                   log=os.path.join(site.dir, "daemon.log")))
        os.chmod(self.service, 0o755)
        cfg = json.load(open(site.config_path))
        cfg["fleet"].update({"package_format": fmt, "board": "lab",
                             "package_manager": {"ipk": tool("opkg"), "apk": tool("apk")}.get(
                                 fmt, "dpkg"),
                             "package_root": self.root, "restart_command": self.service,
                             "confirm_window": WINDOW})
        with open(site.config_path, "w") as f:
            json.dump(cfg, f)

    def restart(self):
        subprocess.run(["sh", self.service], check=True, timeout=20)

    def pid(self):
        try:
            return int(open(self.pidfile).read())
        except (OSError, ValueError):
            return None

    def stop(self):
        pid = self.pid()
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        guard = os.path.join(self.site.dir, "state", "update", "guard.pid")
        if os.path.exists(guard):
            try:
                os.kill(int(open(guard).read()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass

    def installed(self):
        if self.fmt == "deb":
            r = subprocess.run(["dpkg-query", f"--root={self.root}", "-W", "-f=${Version}",
                                "lanmesh"], capture_output=True, text=True)
            return r.stdout.strip() or None
        if self.fmt == "apk":
            r = subprocess.run([tool("apk"), "--root", self.root, "info", "lanmesh"],
                               capture_output=True, text=True)
            first = r.stdout.split(" ", 1)[0]
            return first[len("lanmesh-"):] if first.startswith("lanmesh-") else None
        r = opkg(self.root, "list-installed")
        return {line.split(" - ")[0]: line.split(" - ")[1] for line in r.stdout.splitlines()
                if line.startswith("lanmesh ")}.get("lanmesh")

    def update_dir(self):
        return os.path.join(self.site.dir, "state", "update")


def dpkg_root_install(root, deb):
    """A Raspberry Pi OS root as dpkg sees it: its status lists the package's dependencies
    (python3, python3-cryptography), systemd's unit directory; lanmesh installed with the
    real dpkg, its scripts run on the root (--force-script-chrootless, as image builds do)."""
    for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "lib/systemd/system"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    with open(os.path.join(root, "var/lib/dpkg/status"), "w") as f:
        for name in ("python3", "python3-cryptography"):
            f.write(f"Package: {name}\nStatus: install ok installed\nVersion: 99\n"
                    f"Architecture: all\nMaintainer: test\nDescription: stand-in\n\n")
    return subprocess.run(["dpkg", f"--root={root}", "--force-script-chrootless", "-i", deb],
                          capture_output=True, text=True, timeout=120)


def _rows(fl):
    return {r["node"]: r for r in fl.status_rows()}


def wait_update(fl, name, pred, what, timeout):
    """Until `name`'s fleet status row (with an update report) satisfies pred → the row."""
    seen = {}

    def look():
        seen["row"] = row = _rows(fl).get(name)
        return row if row and row.get("update") and pred(row) else None
    try:
        return wait_for(look, timeout, f"{name} {what}", every=0.5)
    except AssertionError as e:
        raise AssertionError(f"{e}: {seen.get('row')}") from None


@pytest.fixture
def fleet_of_routers(make_lab, tmp_path, packages):
    from lanmesh_lab.fleetlab import FleetLab
    lab = make_lab(3)
    fl = FleetLab(lab, tmp_path / "fleet")
    routers = []
    try:
        fl.start_broker()
        for s in lab.sites:
            routers.append(Router(lab, fl, s, packages["0.1.0"]))
        for r in routers:
            r.restart()
        fl.wait_applied(1, timeout=30, sites=lab.sites)
        yield lab, fl, routers
    finally:
        for r in routers:
            r.stop()
        fl.close()


def _rollout_status(fl):
    return json.loads(fl.cli("rollout", "status", "--json").stdout.splitlines()[-1])


def test_rollout_canary_then_the_rest_and_broken_releases_roll_back_and_halt(
        fleet_of_routers, packages):
    lab, fl, routers = fleet_of_routers
    hq, branch, far = routers
    fl.cli("release", "add", packages["0.1.0"])     # the running version: the way back
    fl.cli("release", "add", packages["0.2.0"])
    far.stop()                                      # offline during its wave (must show 5)
    wait_for(lambda: _rows(fl)[far.site.name]["state"] != "online", 20, "far offline")
    # ...for a while: the others' links to it are down. (One that dies during a trial takes
    # a link the new version cannot bring back: that trial rolls back, as it should not know
    # whose fault it is.)
    for r in (hq, branch):
        wait_for(lambda: not any(l["up"] for l in lab.status(r.site)["links"]
                                 if l["peer"] == far.site.name), 30, "the link to far down")
    out = fl.cli("rollout", "start", "0.2.0", "--waves", f"canary={hq.site.name}", "100%",
                 "--max-failures", "1").stdout
    assert f"wave canary assigned to {hq.site.name}" in out, out
    # waves advance while the rollout is watched: each `rollout status` carries it on
    deadline, looks_before = time.monotonic() + 120, 0
    while time.monotonic() < deadline:
        st = _rollout_status(fl)
        canary = st["waves"][0]["nodes"][0]
        if not st["waves"][1]["assigned"]:
            # the rest wait for the canary: not assigned, nothing installed
            assert canary["progress"] != "confirmed", st
            assert {branch.installed(), far.installed()} == {"0.1.0-r1"}
            looks_before += 1
        if st["state"] == "done":
            break
        time.sleep(0.5)
    assert st["state"] == "done", st
    assert looks_before >= 2, "the canary's progress was never seen before the next wave"
    # an offline router does not hold its wave back; it updates when it is back
    progress = {e["node"]: e["progress"] for w in st["waves"] for e in w["nodes"]}
    assert progress == {hq.site.name: "confirmed", branch.site.name: "confirmed",
                        far.site.name: "offline"}, st
    far.restart()
    wait_update(fl, far.site.name, lambda r: r["update"]["state"] == "confirmed" and
                r["software"] == "0.2.0", "far confirmed on 0.2.0 once back", 60)
    for r in routers:
        assert r.installed() == "0.2.0-r1"                   # opkg's view is true
        # the guard ends the trial within a second of the confirm mark
        wait_for(lambda: not os.path.exists(os.path.join(r.update_dir(), "trial")), 5,
                 "the trial over")
        assert not os.path.exists(os.path.join(r.root, "etc/init.d/lanmesh-guard"))
    assert sorted(os.listdir(os.path.join(hq.update_dir(), "keep"))) == [
        "lanmesh_0.2.0-r1_all.ipk", "manifest"]
    assert lab.status(hq.site)["version"] == 1               # the mesh document is kept
    text = fl.cli("rollout", "status").stdout
    assert "rollout 1: release 0.2.0, done" in text and "confirmed 1" in text, text

    # broken releases: 0.3.0 exits at start, 0.4.0 never reaches the broker. The canary
    # rolls back by itself within the window, says why, and the rollout halts there.
    for bad in ("0.3.0", "0.4.0"):
        fl.cli("release", "add", packages[bad])
        t0 = time.monotonic()
        r = fl.cli("rollout", "start", bad, "--waves", f"canary={hq.site.name}", "100%",
                   "--max-failures", "1", "--watch", "--json", "--interval", "1",
                   check=False, timeout=WINDOW + 90)
        took = time.monotonic() - t0
        assert r.returncode == 1, r.stdout + r.stderr       # halted
        st = json.loads(r.stdout.splitlines()[-1])
        assert st["state"] == "halted" and "--max-failures 1" in st["reason"], st
        canary = st["waves"][0]["nodes"][0]
        assert canary["progress"] == "rolled back", canary
        assert f"{bad} did not confirm within {WINDOW}s" in canary["reason"], canary
        assert st["waves"][1]["assigned"] is False
        assert hq.installed() == "0.2.0-r1" and took < WINDOW + 60, (hq.installed(), took)
        log = open(os.path.join(hq.update_dir(), "guard.log")).read()
        assert f"rolling back to 0.2.0" in log and "reinstalled 0.2.0" in log, log
        for other in (branch, far):                         # never given it
            assert other.installed() == "0.2.0-r1"
            assert (_rows(fl)[other.site.name]["update"] or {}).get("version") != bad
    # the same manifest again (a restart, the retained copy): not installed twice
    hq.restart()
    row = wait_update(fl, hq.site.name, lambda r: r["state"] == "online" and
                      r["update"]["state"] == "rolled-back", "online, rolled back", 30)
    time.sleep(3)
    assert hq.installed() == "0.2.0-r1" and row["software"] == "0.2.0", row


def _kill9(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, TypeError):
        pass


def _retain(fl, topic, payload_file=None):
    """Publish (or with no file: clear) a retained message as the controller."""
    from lanmesh.adapters.mqtt import parse_broker
    opts = fl.fd.broker_options()
    _, host, port = parse_broker(opts["broker"])
    argv = ["mosquitto_pub", "-h", host, "-p", str(port), "--cafile", opts["ca_file"],
            "-u", opts["username"], "-P", open(opts["password_file"]).read().strip(), "-q", "1",
            "-r", "-t", topic] + (["-f", payload_file] if payload_file else ["-n"])
    fl.lab.ns.exec(fl.ns, *argv)


def test_kill_9_at_each_step_leaves_a_working_version_and_the_update_goes_on(
        fleet_of_routers, packages, tmp_path):
    from lanmesh.fleet import topics
    lab, fl, routers = fleet_of_routers
    hq = routers[0]
    name, state = hq.site.name, lambda: (_rows(fl).get(hq.site.name) or {}).get("update") or {}

    # 1. after verify: 0.2.0 is downloaded and checked, the way back (0.1.0) is not on the
    # broker yet. kill -9; the operator adds 0.1.0; the restarted daemon goes on from disk.
    fl.cli("release", "add", packages["0.2.0"])
    fl.cli("update", name, "--release", "0.2.0")
    wait_for(lambda: state().get("state") == "downloaded", 60, "downloaded")
    _kill9(hq.pid())
    fl.cli("release", "add", packages["0.1.0"])
    hq.restart()
    row = wait_update(fl, name, lambda r: r["update"]["state"] == "confirmed" and
                      r["software"] == "0.2.0", "confirmed on 0.2.0 after kill -9", 60)
    assert hq.installed() == "0.2.0-r1"

    # 2. mid-download: chunk 3 is held back on the broker, so the download waits there with
    # chunks on disk. kill -9; the chunk comes back; the restart resumes from what is on disk.
    fl.cli("release", "add", packages["0.5.0"])
    chunk = topics.chunk(fl.fd.prefix(), "0.5.0", "ipk", 3)
    _retain(fl, chunk)
    fl.cli("update", name, "--release", "0.5.0")
    part = os.path.join(hq.update_dir(), "lanmesh_0.5.0-r1_all.ipk.part")
    wait_for(lambda: state().get("state") == "downloading" and os.path.exists(part) and
             (state().get("chunks") or [0])[0] >= 4, 60, "downloading with chunks on disk")
    _kill9(hq.pid())
    held = tmp_path / "chunk3"
    with open(packages["0.5.0"], "rb") as f:
        f.seek(3 * 32768)
        held.write_bytes(f.read(32768))
    _retain(fl, chunk, str(held))
    hq.restart()
    wait_update(fl, name, lambda r: r["update"]["state"] == "confirmed" and
                r["software"] == "0.5.0", "confirmed on 0.5.0 after kill -9 mid-download", 60)
    log = open(os.path.join(hq.site.dir, "daemon.log")).read()
    n = -(-os.path.getsize(packages["0.5.0"]) // 32768)
    fetches = re.findall(rf"fetching the ipk of 0\.5\.0 \(\d+ bytes, (\d+) of {n} chunks", log)
    assert fetches[0] == "0" and int(fetches[-1]) >= 4, (fetches, log[-3000:])   # resumed
    assert hq.installed() == "0.5.0-r1"

    # 3. mid-install: kill -9 the moment the guard took over. The guard does not need it.
    fl.cli("release", "add", packages["0.6.0"])
    fl.cli("update", name, "--release", "0.6.0")
    trial = os.path.join(hq.update_dir(), "trial")
    wait_for(lambda: os.path.exists(trial), 60, "handed over to the guard", every=0.02)
    _kill9(hq.pid())
    wait_update(fl, name, lambda r: r["update"]["state"] == "confirmed" and
                r["software"] == "0.6.0", "confirmed on 0.6.0 after kill -9 mid-install", 60)

    # 4. after the switch, before the confirm: the broker is down, so 0.7.0 cannot confirm;
    # its daemon is killed; the init system starts it again, the broker comes back, it confirms
    fl.cli("release", "add", packages["0.7.0"])
    fl.cli("update", name, "--release", "0.7.0")
    phase = os.path.join(hq.update_dir(), "phase")
    wait_for(lambda: os.path.exists(phase) and open(phase).read().strip() == "switched", 60,
             "switched", every=0.02)
    fl.stop_broker()
    old_pid = hq.pid()
    wait_for(lambda: hq.pid() != old_pid, 20, "restarted by the guard", every=0.02)
    time.sleep(1)
    _kill9(hq.pid())
    assert not os.path.exists(os.path.join(hq.update_dir(), "confirmed"))
    fl.start_broker()
    hq.restart()
    wait_update(fl, name, lambda r: r["update"]["state"] == "confirmed" and
                r["software"] == "0.7.0", "confirmed on 0.7.0 after kill -9 before confirm", 60)
    assert hq.installed() == "0.7.0-r1"

    # 5. a power cut inside the next trial: guard and daemon gone at once. At boot the init
    # hook the guard left runs it again (installing when the power went: roll back; after
    # the switch: 0.8.0 never confirms), then the init system starts lanmesh
    fl.cli("release", "add", packages["0.8.0"])
    fl.cli("update", name, "--release", "0.8.0")
    gpid = os.path.join(hq.update_dir(), "guard.pid")
    wait_for(lambda: os.path.exists(gpid), 60, "the guard running", every=0.02)
    hook = os.path.join(hq.root, "etc/init.d/lanmesh-guard")
    assert os.path.exists(hook) and os.path.islink(os.path.join(hq.root, "etc/rc.d/S94lanmesh-guard"))
    _kill9(int(open(gpid).read()))
    _kill9(hq.pid())
    subprocess.run(["sh", "-c", f". {hook}; boot"], check=True, timeout=10)
    hq.restart()
    row = wait_update(fl, name, lambda r: r["update"]["state"] == "rolled-back" and
                      r["state"] == "online", "rolled back after the power cut", WINDOW + 60)
    assert hq.installed() == "0.7.0-r1" and row["software"] == "0.7.0", row
    assert not os.path.exists(hook), "the init hook outlived the trial"


@pytest.mark.parametrize("fmt", ["apk", "deb"])
def test_apk_and_deb_routers_install_confirm_and_roll_back(make_lab, tmp_path, fmt):
    """OpenWrt 25.x (the real apk v3) and Raspberry Pi OS (the real dpkg, a systemd hook):
    the same hand-over on an installed root."""
    from lanmesh_lab.fleetlab import FleetLab
    if fmt == "apk" and missing_tools("apk"):
        pytest.skip(missing_tools("apk"))
    if fmt == "deb" and not shutil.which("dpkg-deb"):
        pytest.skip("needs dpkg-deb (dpkg)")
    out = str(tmp_path / "pkgs")

    def exits_at_start(tree):
        tree.entries["usr/bin/lanmesh"] = (0o755, b"#!/bin/sh\nexit 3\n")

    def build(v, e):
        if fmt == "apk":
            return build_apk.build(os.path.join(out, v), apk=tool("apk"), version=v, edit=e)
        return build_deb.build(os.path.join(out, v), version=v, edit=e)
    pk = {v: build(v, e) for v, e in (("0.1.0", None), ("0.2.0", None), ("0.3.0", exits_at_start))}
    lab = make_lab(1)
    fl = FleetLab(lab, tmp_path / "fleet")
    router = None
    try:
        fl.start_broker()
        router = Router(lab, fl, lab.sites[0], pk["0.1.0"], fmt=fmt)
        router.restart()
        fl.wait_applied(1, timeout=30, sites=lab.sites)
        name = router.site.name
        for v in ("0.1.0", "0.2.0", "0.3.0"):
            fl.cli("release", "add", pk[v])
        fl.cli("update", name, "--release", "0.2.0")
        if fmt == "deb":                # the systemd hook, while the trial runs
            unit = os.path.join(router.root, "etc/systemd/system/lanmesh-guard.service")
            wait_for(lambda: os.path.exists(unit), 60, "the systemd hook during the trial",
                     every=0.02)
        row = wait_update(fl, name, lambda r: r["update"]["state"] == "confirmed" and
                          r["software"] == "0.2.0", "confirmed on 0.2.0", 60)
        want = {"apk": "0.2.0-r1", "deb": "0.2.0-1"}[fmt]
        assert router.installed() == want, row
        fl.cli("update", name, "--release", "0.3.0")
        row = wait_update(fl, name, lambda r: r["update"]["state"] == "rolled-back" and
                          r["state"] == "online", "rolled back", WINDOW + 60)
        assert router.installed() == want and row["software"] == "0.2.0", row
        assert not os.path.exists(os.path.join(router.root, "etc/systemd/system/lanmesh-guard.service"))
    finally:
        if router is not None:
            router.stop()
        fl.close()
