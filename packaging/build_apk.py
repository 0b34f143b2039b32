#!/usr/bin/env python3
# `make apk`: build lanmesh-<version>.apk (apk v3) for OpenWrt 25.x, from the same files
# (packaging/router.py), dependencies, conffiles and maintainer scripts (the feed
# Makefile) as the ipk, with apk-tools' own `apk mkpkg`, as OpenWrt's package-pack.mk
# does with CONFIG_USE_APK. Byte-reproducible: the staged tree has fixed modes and
# mtimes (SOURCE_DATE_EPOCH), and so has every build input.
import argparse
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from archive import source_date_epoch, staged  # noqa: E402
from feed import read_feed  # noqa: E402
from router import RELEASES, router_tree  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEED = os.path.join(REPO, "openwrt", "lanmesh")
SHARED_APK = os.path.join(REPO, "..", "shared", "tools", "openwrt", "apk")
# apk has no conffiles list: /etc is protected, and an edited file is kept (the new one
# is written beside it as *.apk-new). The scripts map onto apk's hooks.
SCRIPTS = {"post-install": "postinst", "post-upgrade": "postinst",
           "pre-deinstall": "prerm", "post-deinstall": "postrm"}


def find_apk():
    """apk-tools v3: $APK, ../shared/tools/openwrt/apk, or `apk` on PATH if it is v3."""
    for cand in (os.environ.get("APK"), SHARED_APK, shutil.which("apk")):
        if cand and os.access(cand, os.X_OK):
            out = subprocess.run([cand, "--version"], capture_output=True, text=True).stdout
            if out.startswith("apk-tools 3."):
                return cand
    return None


def build(out_dir, release="25.12", epoch=None, apk=None, pkg_release=None, version=None,
          edit=None):
    """version: another version than this tree's; edit(tree): change its files first (tests
    build the next release of the same code, and broken ones)."""
    apk = apk or find_apk()
    if apk is None:
        raise SystemExit("make apk needs apk-tools v3 (`apk --version` 3.x; Debian's apk-tools "
                         "is v2): set APK=/path/to/apk")
    epoch = source_date_epoch(REPO) if epoch is None else epoch
    feed = read_feed(os.path.join(FEED, "Makefile"))
    feed["release"] = pkg_release or feed["release"]
    feed["version"] = version or feed["version"]
    tree = router_tree(RELEASES[release], version=version, edit=edit)
    version = f"{feed['version']}-r{feed['release']}"
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{feed['name']}-{version}.apk")
    with staged(tree, epoch) as (tmp, root):
        cmd = [apk, "mkpkg", "--files", root, "--output", path + ".tmp"]
        for k, v in (("name", feed["name"]), ("version", version), ("arch", "noarch"),
                     ("description", feed["title"]), ("license", feed["license"]),
                     ("origin", feed["name"]), ("maintainer", feed["maintainer"]),
                     ("url", "https://example.invalid/lanmesh"),
                     ("depends", " ".join(feed["depends"])), ("build-time", str(epoch))):
            cmd += ["--info", f"{k}:{v}"]
        for hook, name in sorted(SCRIPTS.items()):
            script = os.path.join(tmp, hook)
            with open(script, "w") as f:
                f.write(feed["scripts"][name] + "\n")
            os.chmod(script, 0o755)
            os.utime(script, (epoch, epoch))
            cmd += ["--script", f"{hook}:{script}"]
        subprocess.run(cmd, check=True, env=dict(os.environ, SOURCE_DATE_EPOCH=str(epoch)))
    os.replace(path + ".tmp", path)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description="build the OpenWrt 25.x apk")
    ap.add_argument("--out", default=os.path.join(REPO, "dist"), help="output directory")
    ap.add_argument("--release", default="25.12", choices=sorted(RELEASES))
    ap.add_argument("--pkg-release", default=None, help="override PKG_RELEASE (-rN)")
    a = ap.parse_args(argv)
    print(build(a.out, a.release, pkg_release=a.pkg_release))


if __name__ == "__main__":
    main()
