#!/usr/bin/env python3
# `make deb`: build lanmesh_<version>_all.deb for Raspberry Pi OS / Debian (bookworm+).
# Debian's paho-mqtt (1.6) and pyroute2 (0.7) are too old, so the pure-Python wheels
# lanmesh needs are vendored into /usr/lib/lanmesh/vendor (downloaded once, checked
# against pinned hashes, cached in .cache/wheels); cryptography comes from Debian
# (bookworm's 38 has X25519, Ed25519 and ChaCha20-Poly1305). Byte-reproducible with
# SOURCE_DATE_EPOCH (dpkg-deb clamps to it; the staged tree has fixed modes and mtimes).
import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from archive import Tree, source_date_epoch  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(REPO, "packaging")
LIB = "usr/lib/lanmesh"
# file name -> sha256; keep in step with pyproject.toml's pins.
WHEELS = {
    "pyroute2-0.9.7-py3-none-any.whl":
        "01a2a3afe565a6acb0a0d5d8ac86c9682b6564407e3d9589070191ae94b737e8",
    "paho_mqtt-2.2.0-py3-none-any.whl":
        "3243630f7c2b05f71d1de8c6f59865eb04d3a59ae8c866e92377faed6753db4d",
    "pyserial-3.5-py2.py3-none-any.whl":
        "c4451db6ba391ca6ca299fb3ec7bae67a5c55dde170964c7a14ceefec02f2cf0",
}
REQUIREMENTS = ["pyroute2==0.9.7", "paho-mqtt==2.2.0", "pyserial==3.5"]


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def fetch_wheels(cache):
    """Pinned wheels from the cache, downloading (pure-Python only) what is missing."""
    os.makedirs(cache, exist_ok=True)
    if any(not os.path.exists(os.path.join(cache, w)) for w in WHEELS):
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--only-binary=:all:", "--disable-pip-version-check",
                        "--dest", cache] + REQUIREMENTS, check=True)
    paths = []
    for w, digest in sorted(WHEELS.items()):
        p = os.path.join(cache, w)
        if not os.path.exists(p):
            raise SystemExit(f"{w}: not downloaded (is it still a pure-Python wheel?)")
        if _sha256(p) != digest:
            raise SystemExit(f"{p}: sha256 mismatch; delete it and rebuild")
        paths.append(p)
    return paths


def add_wheel(tree, wheel, dest):
    with zipfile.ZipFile(wheel) as z:
        for info in sorted(z.infolist(), key=lambda i: i.filename):
            name = info.filename
            top = name.split("/", 1)[0]
            if info.is_dir() or top.endswith(".data"):  # .data: scripts we do not ship
                continue
            executable = (info.external_attr >> 16) & 0o111
            tree.add_file(f"{dest}/{name}", z.read(info), 0o755 if executable else 0o644)


def _version():
    with open(os.path.join(REPO, "firmware", "lanmesh", "__init__.py")) as f:
        return re.search(r'__version__ = "([^"]+)"', f.read()).group(1)


def _read(*parts):
    with open(os.path.join(HERE, *parts), "rb") as f:
        return f.read()


def package_tree(wheels):
    tree = Tree()
    tree.add_source_tree(os.path.join(REPO, "firmware", "lanmesh"), f"{LIB}/lanmesh",
                         skip_dirs=("__pycache__",))   # a Pi can be the controller too
    boards = os.path.join(REPO, "board-configs")
    for n in sorted(os.listdir(boards)):
        if n.endswith(".json") and n != "schema.json":
            with open(os.path.join(boards, n), "rb") as f:
                tree.add_file(f"{LIB}/lanmesh/boards/{n}", f.read())
    for w in wheels:
        add_wheel(tree, w, f"{LIB}/vendor")
    tree.add_file("usr/bin/lanmesh", _read("debian", "launcher"), 0o755)
    tree.add_file("usr/lib/systemd/system/lanmesh.service", _read("lanmesh.service"))
    tree.add_file("usr/lib/modules-load.d/lanmesh.conf", _read("debian", "modules-load.conf"))
    tree.add_dir("etc/lanmesh", 0o700)
    tree.add_file("etc/lanmesh/node.json.example", _read("debian", "node.json.example"))
    return tree


CONFFILES = ["/etc/lanmesh/node.json.example"]


def build(out_dir, cache=None, epoch=None):
    epoch = source_date_epoch(REPO) if epoch is None else epoch
    cache = cache or os.environ.get("LANMESH_WHEEL_CACHE") or os.path.join(REPO, ".cache", "wheels")
    tree = package_tree(fetch_wheels(cache))
    version = f"{_version()}-1"
    size_kib = sum((len(d) + 1023) // 1024 for _, d in tree.files().values()) + len(tree.entries)
    control = _read("debian", "control.in").decode()
    for k, v in {"NAME": "lanmesh", "VERSION": version, "INSTALLED_SIZE": str(size_kib),
                 "MAINTAINER": "lanmesh developers <lanmesh@example.invalid>",
                 "VENDORED": ", ".join(r.replace("==", " ") for r in REQUIREMENTS)}.items():
        control = control.replace(f"@{k}@", v)
    tree.add_file("DEBIAN/control", control)
    tree.add_file("DEBIAN/conffiles", "".join(c + "\n" for c in CONFFILES))
    for script in ("postinst", "prerm", "postrm"):
        tree.add_file(f"DEBIAN/{script}", _read("debian", script), 0o755)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"lanmesh_{version}_all.deb")
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "root")
        os.mkdir(root)
        tree.write_to(root, epoch)
        env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch))
        subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", root,
                        os.path.join(tmp, "out.deb")], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        shutil.move(os.path.join(tmp, "out.deb"), path)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=os.path.join(REPO, "dist"), help="output directory")
    ap.add_argument("--wheel-cache", default=None,
                    help="where pinned wheels are cached (default .cache/wheels)")
    a = ap.parse_args(argv)
    print(build(a.out, a.wheel_cache))


if __name__ == "__main__":
    main()
