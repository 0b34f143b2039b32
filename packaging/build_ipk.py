#!/usr/bin/env python3
# `make ipk`: build lanmesh_<version>_all.ipk for OpenWrt 24.10 (opkg) without the SDK.
# Same layout as OpenWrt's scripts/ipkg-build: a gzip'd GNU tar holding ./debian-binary,
# ./data.tar.gz, ./control.tar.gz in that order; byte-reproducible (SOURCE_DATE_EPOCH).
# Files come from packaging/router.py; dependencies, conffiles and maintainer scripts
# from openwrt/lanmesh/Makefile.
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from archive import gz, source_date_epoch, tar_bytes, tree_tar  # noqa: E402
from feed import read_feed  # noqa: E402
from router import RELEASES, router_tree  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEED = os.path.join(REPO, "openwrt", "lanmesh")


def control_text(feed, installed_size, epoch):
    fields = [
        ("Package", feed["name"]),
        ("Version", f"{feed['version']}-r{feed['release']}"),
        ("Depends", ", ".join(["libc"] + feed["depends"])),
        ("License", feed["license"]),
        ("Section", feed["section"]),
        ("SourceDateEpoch", str(epoch)),
        ("Maintainer", feed["maintainer"]),
        ("Architecture", feed["arch"]),
        ("Installed-Size", str(installed_size)),
        ("Description", f"{feed['title']}\n {feed['description']}"),
    ]
    return "".join(f"{k}: {v}\n" for k, v in fields)


def build(out_dir, release="24.10", epoch=None, pkg_release=None, version=None, edit=None):
    """version: another version than this tree's; edit(tree): change files first (tests
    build broken releases of the same code)."""
    epoch = source_date_epoch(REPO) if epoch is None else epoch
    feed = read_feed(os.path.join(FEED, "Makefile"))
    feed["release"] = pkg_release or feed["release"]
    feed["version"] = version or feed["version"]
    tree = router_tree(RELEASES[release], version=version, edit=edit)
    files = tree.files()
    missing = [c for c in feed["conffiles"] if c.strip("/") not in tree.entries]
    if missing:
        raise SystemExit(f"conffiles not in the package: {missing}")
    data = tree_tar(tree, epoch)
    control = [("./", 0o755, None),
               ("./conffiles", 0o644, "".join(c + "\n" for c in feed["conffiles"]).encode()),
               ("./control", 0o644, control_text(feed, len(data), epoch).encode())]
    for name, body in sorted(feed["scripts"].items()):
        control.append((f"./{name}", 0o755, body.encode() + b"\n"))
    outer = tar_bytes([("./debian-binary", 0o644, b"2.0\n"),
                       ("./data.tar.gz", 0o644, gz(data)),
                       ("./control.tar.gz", 0o644, gz(tar_bytes(control, epoch)))], epoch)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{feed['name']}_{feed['version']}-r{feed['release']}_{feed['arch']}.ipk")
    with open(path + ".tmp", "wb") as f:
        f.write(gz(outer))
    os.replace(path + ".tmp", path)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=os.path.join(REPO, "dist"), help="output directory")
    ap.add_argument("--release", default="24.10", choices=sorted(RELEASES),
                    help="OpenWrt release (its python3 decides the byte code)")
    ap.add_argument("--pkg-release", default=None, help="override PKG_RELEASE (-rN)")
    a = ap.parse_args(argv)
    print(build(a.out, a.release, pkg_release=a.pkg_release))


if __name__ == "__main__":
    main()
