# Offline OpenWrt roots for installing lanmesh's packages with OpenWrt's real package
# tools (../shared/tools/openwrt: opkg, apk v3, uci), the way Image Builder and a router
# do: a status/index listing the release's feed packages (empty stubs at their versions),
# and, for the live case, a chroot with static busybox, the real uci and opkg.
import os
import shutil
import stat
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.normpath(os.path.join(REPO, "..", "shared", "tools", "openwrt"))

# What the 24.10 / 25.12 feeds have (versions from ../shared/openwrt/python3-subpackages.md
# for the libraries; interpreter and kernel versions of those releases). The old libraries
# are installed on purpose: the package must not pick them up.
_PY = {"24.10": "3.11.10-r1", "25.12": "3.13.8-r1"}


def feed(release):
    py = _PY[release]
    pkgs = {n: py for n in ("python3-light", "python3-logging", "python3-asyncio", "python3-codecs",
                            "python3-ctypes", "python3-openssl", "python3-urllib", "python3-email",
                            "python3-uuid", "python3-sqlite3", "python3-multiprocessing")}
    pkgs.update({"libsodium": "1.0.20-r1", "kmod-wireguard": "6.6.86-r1" if release == "24.10"
                 else "6.12.40-r1", "python3-paho-mqtt": "1.6.1-r1",
                 "python3-pyroute2": "0.7.9-r1", "python3-pyserial": "3.5-r1",
                 "libc": "1.2.5-r4"})
    return pkgs, {"nftables-json": ("1.1.1-r1", "nftables")}   # (version, provides)


def tool(name):
    p = os.path.join(TOOLS, name)
    return p if os.access(p, os.X_OK) else None


def missing_tools(*names):
    gone = [n for n in names if tool(n) is None]
    return f"OpenWrt's {', '.join(gone)} not at {TOOLS}" if gone else None


# --- opkg --------------------------------------------------------------------------------

def opkg_root(root, release="24.10", drop=()):
    """An offline root whose opkg status lists the feed's packages (minus `drop`)."""
    pkgs, provides = feed(release)
    os.makedirs(os.path.join(root, "usr/lib/opkg/info"), exist_ok=True)
    os.makedirs(os.path.join(root, "var/lock"), exist_ok=True)
    os.makedirs(os.path.join(root, "etc"), exist_ok=True)
    with open(os.path.join(root, "etc/opkg.conf"), "w") as f:
        f.write("dest root /\nlists_dir ext /var/opkg-lists\noption overlay_root /\n"
                "arch all 1\narch noarch 1\narch mips_24kc 10\n")
    entries = []
    for name, version in sorted(pkgs.items()):
        if name not in drop:
            entries.append(f"Package: {name}\nVersion: {version}\n")
    for name, (version, prov) in sorted(provides.items()):
        if name not in drop and prov not in drop:
            entries.append(f"Package: {name}\nVersion: {version}\nProvides: {prov}\n")
    with open(os.path.join(root, "usr/lib/opkg/status"), "w") as f:
        f.write("\n".join(e + "Status: install user installed\nArchitecture: mips_24kc\n"
                          for e in entries))
    return root


def opkg(root, *args, scripts=False, chroot=False):
    if chroot:          # a live router: opkg inside the root, scripts run for real
        cmd = ["chroot", root, "/bin/opkg", "-f", "/etc/opkg.conf"] + list(args)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    else:               # Image Builder: offline root
        cmd = [tool("opkg"), "-o", root, "-f", os.path.join(root, "etc/opkg.conf")] + list(args)
        env = dict(os.environ, IPKG_INSTROOT=root, **({} if scripts else {"IPKG_NO_SCRIPT": "1"}))
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


# --- apk ---------------------------------------------------------------------------------

def apk_repo(repo, release="25.12", drop=(), extra=()):
    """A local repository: stub packages for the feed (minus `drop`) plus `extra` files,
    indexed; returns the index path."""
    pkgs, provides = feed(release)
    os.makedirs(repo, exist_ok=True)
    empty = os.path.join(repo, ".empty")
    os.makedirs(empty, exist_ok=True)
    items = [(n, v, None) for n, v in pkgs.items()] + [(n, v, p) for n, (v, p) in provides.items()]
    for name, version, prov in sorted(items):
        if name in drop or prov in drop:
            continue
        cmd = [tool("apk"), "mkpkg", "--info", f"name:{name}", "--info", f"version:{version}",
               "--info", "arch:noarch", "--files", empty,
               "--output", os.path.join(repo, f"{name}-{version}.apk")]
        if prov:
            cmd[2:2] = ["--info", f"provides:{prov}={version}"]
        subprocess.run(cmd, check=True, capture_output=True)
    for path in extra:
        shutil.copy(path, repo)
    index = os.path.join(repo, "packages.adb")
    apks = sorted(os.path.join(repo, n) for n in os.listdir(repo) if n.endswith(".apk"))
    subprocess.run([tool("apk"), "mkndx", "--allow-untrusted", "--output", index] + apks,
                   check=True, capture_output=True)
    return index


def apk(root, index, *args, scripts=False):
    cmd = [tool("apk"), "--root", root, "--allow-untrusted", "--no-network",
           "--repository", index] + (["--initdb"] if not os.path.isdir(os.path.join(root, "lib/apk/db"))
                                     else []) + ([] if scripts else ["--no-scripts"]) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


# --- a live root for maintainer scripts ----------------------------------------------------

RC_COMMON = """#!/bin/sh
# the test root's /etc/rc.common: enable/disable manage rc.d links; the rest is a no-op
initscript=$1
action=$2
name=$(basename "$initscript")
. "$initscript"
case "$action" in
enable) mkdir -p /etc/rc.d
	ln -sf "../init.d/$name" "/etc/rc.d/S$START$name"
	ln -sf "../init.d/$name" "/etc/rc.d/K$STOP$name" ;;
disable) rm -f /etc/rc.d/S*"$name" /etc/rc.d/K*"$name" ;;
esac
exit 0
"""


def live_root(root, network, firewall):
    """A chroot-able root: static busybox as the shell and tools, OpenWrt's uci and opkg
    (with the glibc they need), an rc.common, and the router's network/firewall config."""
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc/config", "etc/init.d", "tmp", "var/run",
              "lib64", "lib/x86_64-linux-gnu"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    os.makedirs(os.path.join(root, "dev"), exist_ok=True)
    os.mknod(os.path.join(root, "dev/null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    shutil.copy(shutil.which("busybox"), os.path.join(root, "bin/busybox"))
    subprocess.run(["chroot", root, "/bin/busybox", "--install", "-s", "/bin"], check=True)
    shutil.copy(tool("uci"), os.path.join(root, "sbin/uci"))
    shutil.copy(tool("opkg"), os.path.join(root, "bin/opkg"))
    for lib in ("/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/libc.so.6"):
        shutil.copy(os.path.realpath(lib), os.path.join(root, lib.lstrip("/")))
    with open(os.path.join(root, "etc/rc.common"), "w") as f:
        f.write(RC_COMMON)
    os.chmod(os.path.join(root, "etc/rc.common"), 0o755)
    for name, text in (("network", network), ("firewall", firewall)):
        with open(os.path.join(root, "etc/config", name), "w") as f:
            f.write(text)
    return root


def uci(root, *args):
    r = subprocess.run(["chroot", root, "/sbin/uci"] + list(args), capture_output=True, text=True,
                       env={"PATH": "/sbin:/bin"})
    return r.stdout.strip() if r.returncode == 0 else None


def files_under(root, skip=()):
    out = set()
    for d, dirs, files in os.walk(root):
        rel = os.path.relpath(d, root)
        if any(rel == s or rel.startswith(s + "/") for s in skip):
            dirs[:] = []
            continue
        out.update(os.path.normpath(os.path.join(rel, f)) for f in files)
    return out
