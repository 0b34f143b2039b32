"""Issue 12: flash. The router package's installed size per OpenWrt release (what the
package adds on top of python3-light), and an estimate of everything it needs on a 16 MB
ath79 router's overlay.

    .venv/bin/python bench/flash_budget.py

Exact: the package's own files (24.10: sourceless byte code built here; 25.12: source,
compiled at install: the .pyc are estimated as this build's 3.11 byte code). Estimated:
the dependencies, from the same files of this x86-64 CPython 3.11 and Debian libraries
stripped as OpenWrt installs them (MIPS code is of similar size; JFFS2/UBIFS compression
is ignored, so real use is lower),
plus the python3 interpreter figure measured on ath79 in issue 12 (~5.9 MB).
"""
import glob
import os
import sys
import sysconfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "packaging"))
from feed import read_feed  # noqa: E402
from openwrt_python import SUBPACKAGES  # noqa: E402
from router import compile_in_place, router_tree  # noqa: E402

STDLIB = sysconfig.get_paths()["stdlib"]
DYNLOAD = os.path.join(STDLIB, "lib-dynload")
INTERPRETER_ATH79_MB = 5.9          # python3-base + python3-light on ath79 (issue 12)
LIBS = {"libsodium": "libsodium.so.2*", "libopenssl": "libssl.so.3", "libopenssl-crypto": "libcrypto.so.3",
        "libffi": "libffi.so.8"}


def stripped_kb(path):
    """A shared object's size stripped, as OpenWrt installs it (this Python's may not be)."""
    import shutil
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "x.so")
        shutil.copy(path, copy)
        if shutil.which("strip"):
            subprocess.run(["strip", "--strip-unneeded", copy], capture_output=True)
        return os.path.getsize(copy) / 1024


def tree_kb(tree):
    return sum(len(d) for d in (e[1] for e in tree.entries.values()) if d is not None) / 1024


def pyc_kb(path):
    """A module or package as byte code (what OpenWrt ships), from this Python's cache."""
    total = 0
    for f in glob.glob(os.path.join(path, "**", "*.py"), recursive=True) if os.path.isdir(path) \
            else [path + ".py"]:
        if "/test/" in f or "/tests/" in f:      # OpenWrt's python3 drops the test suites
            continue
        d, name = os.path.split(f)
        cached = glob.glob(os.path.join(d, "__pycache__", name[:-3] + ".cpython-*.pyc"))
        total += os.path.getsize(cached[0]) if cached else os.path.getsize(f)
    return total / 1024


def subpackage_kb(name):
    kb = 0
    for mod in SUBPACKAGES["24.10"][name]:
        so = glob.glob(os.path.join(DYNLOAD, mod + ".*.so"))
        if so:
            kb += sum(stripped_kb(p) for p in so)
        elif os.path.exists(os.path.join(STDLIB, mod)) or os.path.exists(os.path.join(STDLIB, mod + ".py")):
            kb += pyc_kb(os.path.join(STDLIB, mod))
    return kb


def lib_kb(pattern):
    for d in ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu"):
        hits = sorted(glob.glob(os.path.join(d, pattern)))
        if hits:
            return stripped_kb(os.path.realpath(hits[0]))
    return None


def main():
    feed = read_feed(os.path.join(ROOT, "openwrt", "lanmesh", "Makefile"))
    t2410 = router_tree("3.11")
    t2512 = router_tree("3.13")
    src = tree_kb(t2512)
    compile_in_place(t2512)     # the .pyc post-install writes (3.11's as a stand-in for 3.13)
    pyc = tree_kb(t2512)
    print("lanmesh package, installed (KiB):")
    print(f"  OpenWrt 24.10 ipk (byte code only)          {tree_kb(t2410):8.0f}")
    print(f"  OpenWrt 25.12 apk (source {src:.0f} + byte code ~{pyc:.0f} compiled at install) "
          f"{src + pyc:8.0f}")
    print("\ndependencies (estimated from this machine's x86-64 files, KiB):")
    total = 0.0
    for dep in feed["depends"]:
        if dep in SUBPACKAGES["24.10"]:
            kb = subpackage_kb(dep)
        elif dep in LIBS or dep == "libsodium":
            kb = lib_kb(LIBS[dep])
        else:
            kb = None
        note = {"python3-light": "interpreter + light stdlib: issue 12's ath79 figure",
                "kmod-wireguard": "in the kernel package set; ~100 KiB on ath79",
                "nftables": "fw4's, already in every 24.10 image",
                "python3-openssl": "+ libopenssl (Debian's full build: an upper bound); not in "
                                   "24.10's default (mbedTLS) image"}.get(dep, "")
        if dep == "python3-light":
            kb = INTERPRETER_ATH79_MB * 1024
        if dep == "python3-openssl":
            kb = (kb or 0) + (lib_kb(LIBS["libopenssl"]) or 0) + (lib_kb(LIBS["libopenssl-crypto"]) or 0)
        if dep == "python3-ctypes":
            kb = (kb or 0) + (lib_kb(LIBS["libffi"]) or 0)
            note = "+ libffi"
        if dep in ("kmod-wireguard", "nftables"):
            kb = 100 if dep == "kmod-wireguard" else 0
        total += kb or 0
        print(f"  {dep:24} {kb if kb is not None else 0:8.0f}  {note}")
    ours = tree_kb(t2410)
    print(f"\n24.10 on ath79: lanmesh {ours:.0f} KiB + dependencies ~{total:.0f} KiB "
          f"= ~{(ours + total) / 1024:.1f} MiB of the overlay (~10-11 MiB free on a 16 MB router)")


if __name__ == "__main__":
    main()
