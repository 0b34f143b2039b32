#!/usr/bin/env python3
# `make deb`: build lanmesh_<version>_all.deb for Raspberry Pi OS / Debian (bookworm+).
# Debian's paho-mqtt (1.6) is too old, so the pure-Python wheels lanmesh needs are
# vendored into /usr/lib/lanmesh/vendor (packaging/wheels.py); cryptography comes from
# Debian (the controller's signing; a router verifies without it). Byte-reproducible with
# SOURCE_DATE_EPOCH (dpkg-deb clamps to it; the staged tree has fixed modes and mtimes).
import argparse
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wheels  # noqa: E402
from archive import Tree, source_date_epoch, staged  # noqa: E402
from router import set_version  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(REPO, "packaging")
LIB = "usr/lib/lanmesh"
REQUIREMENTS = ["paho-mqtt==2.2.0", "pyserial==3.5"]   # pyserial: a Pi can provision


def _version():
    with open(os.path.join(REPO, "firmware", "lanmesh", "__init__.py")) as f:
        return re.search(r'__version__ = "([^"]+)"', f.read()).group(1)


def _read(*parts):
    with open(os.path.join(HERE, *parts), "rb") as f:
        return f.read()


def package_tree(wheel_paths):
    tree = Tree()
    tree.add_source_tree(os.path.join(REPO, "firmware", "lanmesh"), f"{LIB}/lanmesh",
                         skip_dirs=("__pycache__",))   # a Pi can be the controller too
    boards = os.path.join(REPO, "board-configs")
    for n in sorted(os.listdir(boards)):
        if n.endswith(".json") and n != "schema.json":
            with open(os.path.join(boards, n), "rb") as f:
                tree.add_file(f"{LIB}/lanmesh/boards/{n}", f.read())
    for w in wheel_paths:
        wheels.add_wheel(tree, w, f"{LIB}/vendor")
    tree.add_file("usr/bin/lanmesh", _read("launcher"), 0o755)
    tree.add_file("usr/lib/systemd/system/lanmesh.service", _read("lanmesh.service"))
    tree.add_file("usr/lib/modules-load.d/lanmesh.conf", _read("debian", "modules-load.conf"))
    tree.add_dir("etc/lanmesh", 0o700)
    tree.add_file("etc/lanmesh/node.json.example", _read("debian", "node.json.example"))
    return tree


CONFFILES = ["/etc/lanmesh/node.json.example"]


def build(out_dir, cache=None, epoch=None, version=None, edit=None):
    """version: another version than this tree's; edit(tree): change its files first (tests
    build the next release of the same code, and broken ones)."""
    epoch = source_date_epoch(REPO) if epoch is None else epoch
    tree = package_tree(wheels.fetch(REQUIREMENTS, cache or wheels.default_cache(REPO)))
    if version is not None:
        set_version(tree, version)
    if edit is not None:
        edit(tree)
    version = f"{version or _version()}-1"
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
    with staged(tree, epoch) as (tmp, root):
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
