# The ipk and the apk installed the way OpenWrt installs them, with its real tools: into
# offline roots listing exactly the 24.10 / 25.12 feed packages (Image Builder), refused
# where a dependency is missing, and in a chroot (a live router: busybox, the real uci)
# where the maintainer scripts run: install sets up network and firewall, an upgrade
# keeps an edited conffile, remove leaves no file, zone, rule or network section.
import os
import subprocess
import sys

import pytest

from openwrt_root import (REPO, apk, apk_repo, files_under, live_root, missing_tools, opkg,
                          opkg_root, uci)
from test_pkg_openwrt import FIREWALL, NETWORK

sys.path.insert(0, os.path.join(REPO, "packaging"))
import build_apk  # noqa: E402
import build_ipk  # noqa: E402
from router import LIB, router_tree  # noqa: E402

EPOCH = 1700000000
SECTIONS = ["network.lanmesh", "firewall.lanmesh", "firewall.lanmesh_wg", "firewall.lanmesh_mesh",
            "firewall.lanmesh_path",
            "firewall.lanmesh_ping", "firewall.lanmesh_lan", "firewall.lan_lanmesh"]


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("dist"))
    pk = {"ipk": [build_ipk.build(os.path.join(out, r), "24.10", EPOCH, pkg_release=r)
                  for r in ("1", "2")]}
    if not missing_tools("apk"):
        pk["apk"] = [build_apk.build(os.path.join(out, r), "25.12", EPOCH, apk=None, pkg_release=r)
                     for r in ("1", "2")]
    return pk


def _need(*tools):
    reason = missing_tools(*tools)
    if reason:
        pytest.skip(reason)


PM_STATE = ("usr/lib/opkg/", "lib/apk/", "etc/apk/", "var/log/apk.log", "var/lock/", "tmp/")


def _payload(root, base=frozenset()):
    """Files under root that are not the package manager's own bookkeeping (or in base)."""
    return {p for p in files_under(root) - base if not p.startswith(PM_STATE)}


def _router_files(release):
    return {p for p in router_tree({"24.10": "3.11", "25.12": "3.13"}[release]).files()}


# --- offline roots (Image Builder) ----------------------------------------------------------

def test_ipk_installs_into_a_2410_root_and_removes_cleanly(packages, tmp_path):
    _need("opkg")
    root = opkg_root(str(tmp_path / "root"))
    before = files_under(root)
    r = opkg(root, "install", packages["ipk"][0])
    assert r.returncode == 0, r.stdout + r.stderr
    payload = _payload(root, before)
    assert payload == _router_files("24.10")
    assert f"{LIB}/lanmesh/daemon.pyc" in payload           # byte code for 3.11, no source
    assert not any(p.endswith(".py") for p in payload)
    assert not any("/vendor/" in p for p in payload)        # no third-party library at all
    r = opkg(root, "remove", "lanmesh")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _payload(root, before) == set()


@pytest.mark.parametrize("gone", ["python3-openssl", "libsodium", "nftables", "kmod-wireguard"])
def test_ipk_is_refused_by_a_root_without_a_dependency(packages, tmp_path, gone):
    _need("opkg")
    root = opkg_root(str(tmp_path / "root"), drop=(gone,))
    r = opkg(root, "install", packages["ipk"][0])
    assert r.returncode != 0
    assert gone in r.stdout + r.stderr
    assert not os.path.exists(os.path.join(root, LIB))


def test_apk_installs_into_a_2512_root_and_removes_cleanly(packages, tmp_path):
    _need("apk")
    root = str(tmp_path / "root")
    index = apk_repo(str(tmp_path / "repo"), extra=packages["apk"][:1])
    r = apk(root, index, "add", "lanmesh")
    assert r.returncode == 0, r.stdout + r.stderr
    payload = _payload(root)
    assert payload == _router_files("25.12")
    assert f"{LIB}/lanmesh/daemon.py" in payload             # 3.13: source, compiled at install
    r = apk(root, index, "del", "lanmesh")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _payload(root) == set()


@pytest.mark.parametrize("gone", ["python3-ctypes", "nftables"])
def test_apk_is_refused_by_a_root_without_a_dependency(packages, tmp_path, gone):
    _need("apk")
    root = str(tmp_path / "root")
    index = apk_repo(str(tmp_path / "repo"), drop=(gone,), extra=packages["apk"][:1])
    r = apk(root, index, "add", "lanmesh")
    assert r.returncode != 0
    assert gone in r.stdout + r.stderr
    assert not os.path.exists(os.path.join(root, LIB))


# --- a live router: maintainer scripts run in a chroot ----------------------------------------

def _live(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("chroot needs root")
    return live_root(str(tmp_path / "root"), NETWORK, FIREWALL)


def _lifecycle(root, install, upgrade, remove, base_files):
    r = install()
    assert r.returncode == 0, r.stdout + r.stderr
    # post-install ran our uci-defaults for real (OpenWrt's uci) and enabled the service
    for s in SECTIONS:
        assert uci(root, "-q", "get", s) is not None, s
    assert uci(root, "get", "firewall.lanmesh.input") == "REJECT"     # not the router's services
    assert uci(root, "get", "firewall.lanmesh_wg.dest_port") == "51820"
    assert uci(root, "get", "firewall.lanmesh_mesh.src") == "lanmesh"
    assert not os.path.exists(os.path.join(root, "etc/uci-defaults/90-lanmesh"))
    assert os.path.islink(os.path.join(root, "etc/rc.d/S95lanmesh"))
    # the user edits the package's conffile; an upgrade keeps the edit and the sections
    assert uci(root, "set", "lanmesh.node.name=hq") == ""
    assert uci(root, "commit", "lanmesh") == ""
    r = upgrade()
    assert r.returncode == 0, r.stdout + r.stderr
    assert uci(root, "get", "lanmesh.node.name") == "hq"
    for s in SECTIONS:
        assert uci(root, "-q", "get", s) is not None, s
    # remove: no package file, byte code, zone, rule or network section is left
    r = remove()
    assert r.returncode == 0, r.stdout + r.stderr
    for s in SECTIONS:
        assert uci(root, "-q", "get", s) is None, s
    assert uci(root, "get", "firewall.@zone[1].name") == "wan"       # the router's own: intact
    assert _payload(root, base_files) == set()
    assert not os.path.exists(os.path.join(root, "usr/lib/lanmesh"))
    assert not os.path.exists(os.path.join(root, "etc/lanmesh"))


def test_ipk_lifecycle_on_a_live_router(packages, tmp_path):
    _need("opkg", "uci")
    root = _live(tmp_path)
    opkg_root(root)
    base = files_under(root)
    for i, p in enumerate(packages["ipk"]):
        subprocess.run(["cp", p, os.path.join(root, "tmp", f"lanmesh-r{i + 1}.ipk")], check=True)
    _lifecycle(root, lambda: opkg(root, "install", "/tmp/lanmesh-r1.ipk", chroot=True),
               lambda: opkg(root, "install", "/tmp/lanmesh-r2.ipk", chroot=True),
               lambda: opkg(root, "remove", "lanmesh", chroot=True), base)


def test_apk_lifecycle_on_a_live_router(packages, tmp_path):
    _need("apk", "uci")
    root = _live(tmp_path)
    base = files_under(root)
    r1 = apk_repo(str(tmp_path / "repo1"), extra=packages["apk"][:1])
    r2 = apk_repo(str(tmp_path / "repo2"), extra=packages["apk"][1:])
    _lifecycle(root, lambda: apk(root, r1, "add", "lanmesh", scripts=True),
               lambda: apk(root, r2, "upgrade", "lanmesh", scripts=True),
               lambda: apk(root, r2, "del", "lanmesh", scripts=True), base)


def test_firewall_rules_follow_the_documents_ports_with_the_real_uci(tmp_path):
    # the rules uci-defaults made, edited with OpenWrt's own uci as the daemon does
    _need("uci")
    from lanmesh.adapters import openwrt_firewall
    from openwrt_root import tool
    conf = tmp_path / "config"
    conf.mkdir()
    (conf / "firewall").write_text(
        "config rule 'lanmesh_wg'\n\toption dest_port '51820'\n\toption target 'ACCEPT'\n\n"
        "config rule 'lanmesh_mesh'\n\toption dest_port '51821'\n")
    uci = (tool("uci"), "-c", str(conf))
    reloaded = tmp_path / "reloaded"
    reload = (str(tmp_path / "fw"),)
    (tmp_path / "fw").write_text(f"#!/bin/sh\necho x >> {reloaded}\n")
    os.chmod(tmp_path / "fw", 0o755)
    assert openwrt_firewall.reconcile({"listen_port": 51820, "mesh_port": 51821}, uci, reload) == []
    assert not reloaded.exists()                            # nothing changed: no reload
    got = openwrt_firewall.reconcile({"listen_port": 40000, "mesh_port": 51821}, uci, reload)
    assert got == ["firewall.lanmesh_wg.dest_port=40000"]
    assert "option dest_port '40000'" in (conf / "firewall").read_text()
    assert reloaded.read_text() == "x\n"
    (conf / "firewall").write_text("config rule 'lanmesh_mesh'\n\toption dest_port '51821'\n")
    assert openwrt_firewall.reconcile({"listen_port": 1, "mesh_port": 51821}, uci, reload) == []
