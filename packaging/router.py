#!/usr/bin/env python3
# What an OpenWrt router gets, decided in this one place: `make ipk` (24.10), `make apk`
# (25.x) and the feed Makefile (`router.py stage DIR`) all build their package from
# router_tree(), and the tests check the packages against it.
#
# Layout: /usr/lib/lanmesh/lanmesh, put first on sys.path by /usr/bin/lanmesh. The router
# needs no third-party Python library: its MQTT client and netlink codec are lanmesh's
# own (paho-mqtt and pyroute2 cost ~4 and ~24 MB RSS, and the feeds' copies are too old),
# so nothing is vendored; VENDOR stays the place for a pure-Python library if one is ever
# needed.
# Byte code: built for the release's Python when this interpreter is that version (the
# .pyc replaces the .py, as OpenWrt's Py3Package ships it: half the flash); otherwise the
# .py ships and the package's post-install script compiles it (removed with the package).
import argparse
import os
import py_compile
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wheels  # noqa: E402
from archive import Tree  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEED = os.path.join(REPO, "openwrt", "lanmesh")
LIB = "usr/lib/lanmesh"
HOST_ONLY = ("operator",)           # controller, registry, broker config, provisioning
VENDOR = []                         # pinned wheels (packaging/wheels.py) unpacked into vendor/
VENDOR_SKIP = ()
RELEASES = {"24.10": "3.11", "25.12": "3.13"}     # OpenWrt release -> its python3

# (source under openwrt/lanmesh/files or packaging/, destination, mode)
FILES = [
    ("packaging/launcher", "usr/bin/lanmesh", 0o755),
    ("openwrt/lanmesh/files/lanmesh.init", "etc/init.d/lanmesh", 0o755),
    ("openwrt/lanmesh/files/lanmesh.config", "etc/config/lanmesh", 0o600),
    ("openwrt/lanmesh/files/lanmesh.uci-defaults", "etc/uci-defaults/90-lanmesh", 0o755),
    ("openwrt/lanmesh/files/lanmesh.keep", "lib/upgrade/keep.d/lanmesh", 0o644),
]
DIRS = [("etc/lanmesh", 0o700)]     # keys and state; kept by sysupgrade (keep.d)


def _keep_vendor(name):
    top = name.split("/", 1)[0]
    if top.endswith(".dist-info"):  # the licence travels with the code; the rest is pip's
        return "/licenses/" in name or name.rsplit("/", 1)[-1].startswith("LICENSE")
    return name not in VENDOR_SKIP


def compile_in_place(tree, lib=LIB):
    """Replace each .py under `lib` by its sourceless .pyc (this interpreter's version).
    Hash-based, unchecked: no source mtime in the header, so builds are reproducible.
    optimize=2 drops docstrings (flash and RAM; nothing reads them, and the code has no
    asserts, which it would drop too)."""
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted(tree.files()):
            if not (path.startswith(lib + "/") and path.endswith(".py")):
                continue
            mode, data = tree.entries.pop(path)
            src, out = os.path.join(tmp, "m.py"), os.path.join(tmp, "m.pyc")
            with open(src, "wb") as f:
                f.write(data)
            py_compile.compile(src, cfile=out, dfile="/" + path, doraise=True, optimize=2,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
            with open(out, "rb") as f:
                tree.add_file(path + "c", f.read(), 0o644)


def set_version(tree, version, lib=LIB):
    """The package's lanmesh says it is `version` (tests build the next release of this tree)."""
    init = f"{lib}/lanmesh/__init__.py"
    mode, data = tree.entries[init]
    old = data.split(b'__version__ = "', 1)[1].split(b'"', 1)[0]
    tree.entries[init] = (mode, data.replace(b'__version__ = "' + old,
                                             b'__version__ = "' + version.encode(), 1))


def router_tree(python_version, cache=None, version=None, edit=None):
    """The installed files of the router package (a Tree). version: another version than
    this tree's, edit(tree): change its files, sources included (tests build the next
    release of the same code, and broken ones)."""
    tree = Tree()
    tree.add_source_tree(os.path.join(REPO, "firmware", "lanmesh"), f"{LIB}/lanmesh",
                         skip_dirs=("__pycache__",) + HOST_ONLY)
    boards = os.path.join(REPO, "board-configs")
    for n in sorted(os.listdir(boards)):
        if n.endswith(".json") and n != "schema.json":
            with open(os.path.join(boards, n), "rb") as f:
                tree.add_file(f"{LIB}/lanmesh/boards/{n}", f.read())
    for w in wheels.fetch(VENDOR, cache or wheels.default_cache(REPO)):
        wheels.add_wheel(tree, w, f"{LIB}/vendor", keep=_keep_vendor)
    if version is not None:
        set_version(tree, version)
    for src, dest, mode in FILES:
        with open(os.path.join(REPO, src), "rb") as f:
            tree.add_file(dest, f.read(), mode)
    for d, mode in DIRS:
        tree.add_dir(d, mode)
    if edit is not None:
        edit(tree)
    if python_version == "%d.%d" % sys.version_info[:2]:
        compile_in_place(tree)
    return tree


def install(root, python_version=None, mtime=1700000000):
    """The router package installed under `root` (as opkg/apk would lay it out), for tests
    and benchmarks on this machine; → how its /usr/bin/lanmesh runs (its #! line is
    `python3 -S`). python_version: byte code for this Python unless another is named."""
    router_tree(python_version or "%d.%d" % sys.version_info[:2]).write_to(root, mtime)
    return [sys.executable, "-S", os.path.join(root, "usr/bin/lanmesh")]


def main(argv=None):
    ap = argparse.ArgumentParser(description="stage the router package's files")
    ap.add_argument("command", choices=["stage", "list"])
    ap.add_argument("dest", nargs="?", help="stage: directory to write the files into")
    ap.add_argument("--python", default=RELEASES["24.10"], help="the router's python3 X.Y")
    a = ap.parse_args(argv)
    tree = router_tree(a.python)
    if a.command == "list":
        for path in sorted(tree.files()):
            print("/" + path)
    else:
        from archive import source_date_epoch
        tree.write_to(a.dest, source_date_epoch(REPO))


if __name__ == "__main__":
    main()
