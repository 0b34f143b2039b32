# `make ipk`: structure as opkg expects it (OpenWrt's ipkg-build layout), reproducible.
import gzip
import io
import os
import subprocess
import sys
import tarfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "stubs"))
from snapshot import REPO, snapshot  # noqa: E402

EPOCH = 1700000000


def _build(src, out, epoch=EPOCH):
    r = subprocess.run([sys.executable, os.path.join(src, "packaging", "build_ipk.py"),
                        "--out", out], env=dict(os.environ, SOURCE_DATE_EPOCH=str(epoch)),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    src = snapshot(str(tmp_path_factory.mktemp("src")))
    a = _build(src, str(tmp_path_factory.mktemp("a")))
    b = _build(src, str(tmp_path_factory.mktemp("b")))
    c = _build(src, str(tmp_path_factory.mktemp("c")), EPOCH + 1)
    return src, a, b, c


def _tar(data):
    return tarfile.open(fileobj=io.BytesIO(data), mode="r:")


def _members(data):
    with _tar(data) as t:
        return [(m, t.extractfile(m).read() if m.isfile() else None) for m in t.getmembers()]


def _unpack(path):
    with open(path, "rb") as f:
        raw = f.read()
    outer = _members(gzip.decompress(raw))
    parts = {m.name: d for m, d in outer}
    return raw, outer, parts


def test_two_builds_are_byte_identical_and_use_the_epoch(built):
    _, a, b, c = built
    assert os.path.basename(a) == "lanmesh_0.1.0-r1_all.ipk"
    with open(a, "rb") as fa, open(b, "rb") as fb, open(c, "rb") as fc:
        da, db, dc = fa.read(), fb.read(), fc.read()
    assert da == db
    assert da != dc, "SOURCE_DATE_EPOCH must reach the archives"


def test_outer_layout_is_what_opkg_reads(built):
    raw, outer, parts = _unpack(built[1])
    # gzip header: magic, deflate, no FNAME flag, mtime 0
    assert raw[:3] == b"\x1f\x8b\x08" and raw[3] & 0x08 == 0 and raw[4:8] == b"\0\0\0\0"
    assert [m.name for m, _ in outer] == ["./debian-binary", "./data.tar.gz", "./control.tar.gz"]
    assert parts["./debian-binary"] == b"2.0\n"
    for blob in (parts["./data.tar.gz"], parts["./control.tar.gz"]):
        assert blob[:3] == b"\x1f\x8b\x08" and blob[4:8] == b"\0\0\0\0"


def test_owner_mtime_and_order_everywhere(built):
    _, outer, parts = _unpack(built[1])
    inner = {n: _members(gzip.decompress(parts[n])) for n in ("./data.tar.gz", "./control.tar.gz")}
    for members in [outer] + list(inner.values()):
        for m, _ in members:
            assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", EPOCH), m.name
    names = [m.name for m, _ in inner["./data.tar.gz"]]
    assert names[0] == "." and names[1:] == sorted(names[1:])


def test_control_conffiles_and_scripts(built):
    _, _, parts = _unpack(built[1])
    control = {m.name: (m, d) for m, d in _members(gzip.decompress(parts["./control.tar.gz"]))}
    data_raw = gzip.decompress(parts["./data.tar.gz"])
    data = {m.name: (m, d) for m, d in _members(data_raw)}
    fields = dict(line.split(": ", 1) for line in
                  control["./control"][1].decode().splitlines() if not line.startswith(" "))
    assert fields["Package"] == "lanmesh"
    assert fields["Version"] == "0.1.0-r1"
    assert fields["Architecture"] == "all"
    assert int(fields["Installed-Size"]) == len(data_raw)
    assert fields["SourceDateEpoch"] == str(EPOCH)
    deps = fields["Depends"].split(", ")
    assert {"python3-light", "python3-openssl", "kmod-wireguard", "nftables"} <= set(deps)
    assert not {"python3-pyroute2", "python3-paho-mqtt", "python3-cryptography",
                "python3-asyncio", "python3-urllib", "python3-uuid"} & set(deps)
    conffiles = control["./conffiles"][1].decode().split()
    assert "/etc/config/lanmesh" in conffiles
    for c in conffiles:
        m, _ = data["." + c]
        assert m.isfile()
    for script in ("./postinst", "./prerm", "./postrm"):
        m, body = control[script]
        assert m.mode == 0o755 and body.startswith(b"#!/bin/sh")
        subprocess.run(["sh", "-n", "-c", body.decode()], check=True)


def test_data_contents(built):
    src = built[0]
    _, _, parts = _unpack(built[1])
    data = {m.name: (m, d) for m, d in _members(gzip.decompress(parts["./data.tar.gz"]))}
    lib = "./usr/lib/lanmesh"
    # 24.10's Python is 3.11, as this build's: byte code only, no source, no __pycache__
    assert f"{lib}/lanmesh/__init__.pyc" in data and f"{lib}/lanmesh/uci.pyc" in data
    assert not any("/vendor/" in n or "/paho/" in n for n in data)   # own MQTT client
    assert not any(n.endswith(".py") or "__pycache__" in n for n in data)
    for host_only in ("operator", "lanmesh_lab", "pyroute2", "serial", "cryptography"):
        assert not any(f"/{host_only}/" in n or n.endswith(f"/{host_only}") for n in data), host_only
    for path, mode in (("./usr/bin/lanmesh", 0o755), ("./etc/init.d/lanmesh", 0o755),
                       ("./etc/uci-defaults/90-lanmesh", 0o755), ("./etc/config/lanmesh", 0o600),
                       ("./lib/upgrade/keep.d/lanmesh", 0o644)):
        assert data[path][0].mode == mode, path
    with open(os.path.join(src, "openwrt/lanmesh/files/lanmesh.init"), "rb") as f:
        assert data["./etc/init.d/lanmesh"][1] == f.read()
    assert data["./etc/lanmesh"][0].isdir() and data["./etc/lanmesh"][0].mode == 0o700
    boards = sorted(n for n in os.listdir(os.path.join(src, "board-configs")) if n != "schema.json")
    for n in boards:
        with open(os.path.join(src, "board-configs", n), "rb") as f:
            assert data[f"{lib}/lanmesh/boards/{n}"][1] == f.read()


def test_busybox_tar_unpacks_it_and_the_launcher_runs_the_packaged_code(built, tmp_path):
    # the device's own tools: busybox tar on the outer and inner archives
    ipk = built[1]
    subprocess.run(["busybox", "tar", "-xzf", ipk, "-C", str(tmp_path)], check=True)
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(["busybox", "tar", "-xzf", str(tmp_path / "data.tar.gz"), "-C", str(root)],
                   check=True)
    r = subprocess.run([sys.executable, str(root / "usr/bin/lanmesh"), "--version"],
                       env={"PATH": os.environ["PATH"]}, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("0.1.0")
    assert not list(root.rglob("__pycache__")), "nothing is written at run time"
