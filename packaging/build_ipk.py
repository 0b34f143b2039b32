#!/usr/bin/env python3
# `make ipk`: build lanmesh_<version>_all.ipk for OpenWrt 24.10 (opkg) without the SDK.
# Same layout as OpenWrt's scripts/ipkg-build: a gzip'd GNU tar holding ./debian-binary,
# ./data.tar.gz, ./control.tar.gz in that order; byte-reproducible (SOURCE_DATE_EPOCH).
# Dependencies, conffiles and installed files come from openwrt/lanmesh/Makefile. Unlike
# the SDK build it ships .py sources, not byte code (arch-independent, reproducible).
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from archive import Tree, gz, source_date_epoch, tar_bytes, tree_tar  # noqa: E402
from feed import read_feed  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEED = os.path.join(REPO, "openwrt", "lanmesh")
# Not shipped to routers: the operator's tools (the test bed lives outside the package).
SKIP_DIRS = ("__pycache__", "operator")


def package_tree(repo, feed, python_version):
    """The lanmesh package + board configs (package data), as installed on a device."""
    tree = Tree()
    site = f"usr/lib/python{python_version}/site-packages/lanmesh"
    tree.add_source_tree(os.path.join(repo, "firmware", "lanmesh"), site, skip_dirs=SKIP_DIRS)
    boards = os.path.join(repo, "board-configs")
    for n in sorted(os.listdir(boards)):
        if n.endswith(".json") and n != "schema.json":
            with open(os.path.join(boards, n), "rb") as f:
                tree.add_file(f"{site}/boards/{n}", f.read())
    for src, dest, mode in feed["files"]:
        with open(os.path.join(FEED, src), "rb") as f:
            tree.add_file(dest, f.read(), mode)
    for d in feed["dirs"]:
        tree.add_dir(d, feed["dir_modes"].get(d, 0o755))
    return tree


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


def build(out_dir, python_version="3.11", epoch=None):
    epoch = source_date_epoch(REPO) if epoch is None else epoch
    feed = read_feed(os.path.join(FEED, "Makefile"))
    tree = package_tree(REPO, feed, python_version)
    files = tree.files()
    missing = [c for c in feed["conffiles"] if c.strip("/") not in files]
    if missing:
        raise SystemExit(f"conffiles not in the package: {missing}")
    data = tree_tar(tree, epoch)
    control = [("./", 0o755, None),
               ("./conffiles", 0o644, "".join(c + "\n" for c in feed["conffiles"]).encode()),
               ("./control", 0o644, control_text(feed, len(data), epoch).encode())]
    for script in ("postinst", "prerm"):
        with open(os.path.join(REPO, "packaging", "ipk", script), "rb") as f:
            control.append((f"./{script}", 0o755, f.read()))
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
    ap.add_argument("--python-version", default="3.11",
                    help="the target's python3 (site-packages path); OpenWrt 24.10: 3.11")
    a = ap.parse_args(argv)
    print(build(a.out, a.python_version))


if __name__ == "__main__":
    main()
