# The boot image of the test VM (KERNEL-VM.md): Debian's kernel as a plain vmlinux plus a
# busybox initramfs holding the modules we need and an /init that runs one job in a chroot
# of the host's root (shared read-only over 9p). Built once per kernel version and module
# set into a cache dir; builds happen in a temp dir and are renamed into place, so a crash
# or a concurrent build never leaves a half-written image behind.
import fcntl
import hashlib
import lzma
import os
import re
import shutil
import stat
import subprocess
import tempfile

# Loaded in this order by /init (modprobe --show-depends adds what they need).
# nf_tables/nft_* and sch_netem are for the host-net rules and the lab's WAN emulation.
DEFAULT_MODULES = ("virtio_mmio", "9pnet_virtio", "9p", "wireguard", "veth", "tun", "dummy",
                   "nf_tables", "nft_ct", "nft_chain_nat", "nft_nat", "nft_masq",
                   "nft_reject_inet", "nft_fib_inet", "sch_netem")

BUSYBOX = "/bin/busybox"   # busybox-static: runs with no libraries in the initramfs

INIT = r"""#!/bin/busybox sh
# /init of the lanmesh test VM: load modules, mount the host root read-only, run the job
# chrooted into it, print its exit status as a marker line (qemu itself always exits 0).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# A module for a CPU feature qemu64 lacks (crc32c-intel) fails harmlessly: record, don't print.
while read -r mod args; do
    insmod "$mod" $args 2>/dev/null || echo "$mod" >> /insmod-failed
done < /modules.list
ip link set lo up
hostname lanmesh-vm
fail() { echo "lanmesh-vm: $*"; echo "LANMESH-VM-EXIT=125"; poweroff -f; }
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /host \
    || fail "cannot mount the host root over 9p"
job=
for p in $(cat /proc/cmdline); do
    case "$p" in lanmesh.job=*) job="${p#lanmesh.job=}" ;; esac
done
[ -n "$job" ] || fail "no lanmesh.job= on the kernel command line"
# Copy the job before tmpfs hides the host's /tmp, where it usually lives.
mkdir -p /job && cp "/host$job/"* /job/ || fail "cannot read job dir $job"
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs devtmpfs /host/dev
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts
mount -t tmpfs -o mode=1777 shm /host/dev/shm
mount -t tmpfs -o mode=755 run /host/run
mount -t tmpfs -o mode=1777 tmp /host/tmp
[ -L /host/var/run ] || mount --bind /host/run /host/var/run
mkdir -p /host/run/lanmesh-vm && cp /job/* /host/run/lanmesh-vm/
[ -f /insmod-failed ] && cp /insmod-failed /host/run/lanmesh-vm/
[ -f /job/setup.sh ] && . /job/setup.sh
echo "LANMESH-VM-START"
chroot /host /bin/sh /run/lanmesh-vm/cmd.sh
rc=$?
sync
echo "LANMESH-VM-EXIT=$rc"
poweroff -f
"""


class ImageError(Exception):
    """The VM image cannot be built (no apt, no such kernel, missing tool)."""


class Image:
    __slots__ = ("kernel_version", "vmlinux", "initrd", "dir")

    def __init__(self, kernel_version, d):
        self.kernel_version = kernel_version
        self.dir = d
        self.vmlinux = os.path.join(d, "vmlinux")
        self.initrd = os.path.join(d, "initrd.cpio")

    def exists(self):
        return os.path.exists(self.vmlinux) and os.path.exists(self.initrd)


def cache_root():
    return os.environ.get("LANMESH_VM_CACHE") or "/var/cache/lanmesh-vm"


def kernel_version():
    """The Debian kernel ABI to boot, e.g. '6.1.0-56-amd64' (env LANMESH_VM_KERNEL pins it)."""
    pinned = os.environ.get("LANMESH_VM_KERNEL")
    if pinned:
        return pinned
    if _found:      # apt-cache takes ~1 s: ask once per process
        return _found[0]
    _found.append(_kernel_version())
    return _found[0]


_found = []


def _kernel_version():
    try:
        out = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True,
                             text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    for line in out.splitlines():
        dep = line.strip().partition("Depends:")[2].strip()
        if dep.startswith("linux-image-"):
            return dep[len("linux-image-"):]
    # No apt (or no index): use the newest image already built, if any.
    cached = _cached_versions()
    if cached:
        return cached[-1]
    raise ImageError("cannot find a Debian kernel: `apt-cache depends linux-image-amd64` "
                     "names none (run apt-get update) and no image is cached")


def image_for(version=None, modules=DEFAULT_MODULES):
    """The Image for this kernel and module set, whether or not it is built yet."""
    version = version or kernel_version()
    digest = hashlib.sha256(repr((tuple(modules), INIT)).encode()).hexdigest()[:10]
    return Image(version, os.path.join(cache_root(), f"{version}--{digest}"))


def ensure_image(version=None, modules=DEFAULT_MODULES, log=None):
    """Build the image if it is not cached; return it. Serialised by a lock in the cache dir."""
    log = log or (lambda msg: None)
    img = image_for(version, modules)
    if img.exists():
        return img
    os.makedirs(cache_root(), exist_ok=True)
    with open(os.path.join(cache_root(), ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)    # a concurrent build finishes first, then we reuse it
        if img.exists():
            return img
        try:
            _build(img, modules, log)
        except ImageError as exc:
            # apt knows a newer kernel than it can fetch (offline): an older image will do.
            older = [image_for(v, modules) for v in _cached_versions()]
            older = [o for o in older if o.exists()]
            if version or os.environ.get("LANMESH_VM_KERNEL") or not older:
                raise
            log(f"lanmesh-vm: {exc}; using the cached {older[-1].kernel_version} instead")
            return older[-1]
    return img


def _cached_versions():
    """Kernel versions with an image in the cache, oldest first."""
    def natural(v):
        return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", v)]
    names = {n.split("--")[0] for n in _listdir(cache_root()) if "--" in n}
    return sorted(names, key=natural)


def _build(img, modules, log):
    for tool in ("apt-get", "dpkg-deb", "depmod", "modprobe"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            raise ImageError(f"building the VM image needs `{tool}` (not found)")
    if not os.path.exists(BUSYBOX):
        raise ImageError(f"{BUSYBOX} missing: apt-get install --no-install-recommends busybox-static")
    with open(BUSYBOX, "rb") as f:
        if b"ld-linux" in f.read(8192):     # its ELF interpreter: useless with no libc around
            raise ImageError(f"{BUSYBOX} is dynamically linked: install busybox-static")
    tmp = tempfile.mkdtemp(prefix=".build-", dir=cache_root())
    try:
        ver = img.kernel_version
        log(f"lanmesh-vm: downloading linux-image-{ver}")
        r = subprocess.run(["apt-get", "download", f"linux-image-{ver}"], cwd=tmp,
                           capture_output=True, text=True, timeout=600)
        debs = [n for n in os.listdir(tmp) if n.endswith(".deb")]
        if r.returncode != 0 or not debs:
            raise ImageError(f"apt-get download linux-image-{ver} failed: {r.stderr.strip()[-300:]}")
        kroot = os.path.join(tmp, "kroot")
        _run(["dpkg-deb", "-x", os.path.join(tmp, debs[0]), kroot])
        os.unlink(os.path.join(tmp, debs[0]))
        out = os.path.join(tmp, "image")
        os.mkdir(out)
        with open(os.path.join(kroot, "boot", f"vmlinuz-{ver}"), "rb") as f:
            vmlinux = unpack_vmlinuz(f.read())
        with open(os.path.join(out, "vmlinux"), "wb") as f:
            f.write(vmlinux)
        mods = module_load_list(kroot, ver, modules)
        with open(os.path.join(out, "initrd.cpio"), "wb") as f:
            f.write(initramfs(kroot, ver, mods))
        with open(os.path.join(out, "modules.txt"), "w") as f:
            f.write("".join(f"{path} {args}\n" for path, args in mods))
        os.replace(out, img.dir)            # atomic: the image appears complete or not at all
        log(f"lanmesh-vm: image ready in {img.dir}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def unpack_vmlinuz(data):
    """bzImage → the ELF vmlinux inside it (microvm boots it directly via PVH)."""
    for magic, fmt in ((b"\xfd7zXZ\x00", lzma.FORMAT_XZ), (b"\x5d\x00\x00", lzma.FORMAT_ALONE)):
        off = data.find(magic)
        while off >= 0:
            try:
                out = lzma.LZMADecompressor(fmt).decompress(data[off:])
            except lzma.LZMAError:
                out = b""
            if out.startswith(b"\x7fELF"):
                return out
            off = data.find(magic, off + 1)
    raise ImageError("no xz/lzma-compressed ELF kernel found in vmlinuz")


def module_load_list(kroot, ver, modules):
    """[(path relative to the module dir, params)] in load order, deduplicated."""
    _run(["depmod", "-b", kroot, ver])
    base = os.path.join(kroot, "lib", "modules", ver) + "/"
    seen, order = set(), []
    for name in modules:
        r = subprocess.run(["modprobe", "-d", kroot, "-S", ver, "--show-depends", name],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise ImageError(f"kernel {ver} has no module {name!r}: {r.stderr.strip()}")
        for line in r.stdout.splitlines():
            parts = line.split(None, 2)
            if len(parts) < 2 or parts[0] != "insmod":      # "builtin x" needs nothing
                continue
            rel = parts[1][len(base):] if parts[1].startswith(base) else parts[1]
            if rel not in seen:
                seen.add(rel)
                order.append((rel, parts[2].strip() if len(parts) > 2 else ""))
    return order


def initramfs(kroot, ver, mods):
    """A newc cpio archive (built here: the cpio tool is often not installed)."""
    cpio = Cpio()
    for d in ("bin", "dev", "proc", "sys", "host", "job", "mods"):
        cpio.add_dir(d)
    cpio.add_node("dev/console", stat.S_IFCHR | 0o600, 5, 1)   # init's stdio before devtmpfs
    with open(BUSYBOX, "rb") as f:
        cpio.add_file("bin/busybox", f.read(), 0o755)
    cpio.add_file("init", INIT.encode(), 0o755)
    lines = []
    base = os.path.join(kroot, "lib", "modules", ver)
    for rel, args in mods:
        with open(os.path.join(base, rel), "rb") as f:
            data = f.read()
        if rel.endswith(".xz"):          # busybox insmod wants plain .ko files
            data, rel = lzma.decompress(data), rel[:-3]
        name = "mods/" + rel.replace("/", "_")
        cpio.add_file(name, data, 0o644)
        lines.append(f"/{name} {args}".rstrip() + "\n")
    cpio.add_file("modules.list", "".join(lines).encode(), 0o644)
    return cpio.finish()


class Cpio:
    """Minimal SVR4 'newc' writer: what the kernel's initramfs unpacker reads."""

    def __init__(self):
        self.parts, self.ino = [], 1

    def _entry(self, name, mode, data=b"", rdev=(0, 0)):
        name_b = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, 0, len(data),
                  0, 0, rdev[0], rdev[1], len(name_b), 0)
        self.ino += 1
        hdr = b"070701" + b"".join(b"%08X" % v for v in fields)
        self.parts += [hdr, name_b, _pad(len(hdr) + len(name_b)), data, _pad(len(data))]

    def add_dir(self, name):
        self._entry(name, stat.S_IFDIR | 0o755)

    def add_file(self, name, data, perm):
        self._entry(name, stat.S_IFREG | perm, data)

    def add_node(self, name, mode, major, minor):
        self._entry(name, mode, rdev=(major, minor))

    def finish(self):
        self._entry("TRAILER!!!", 0)
        return b"".join(self.parts)


def _pad(n):
    return b"\0" * (-n % 4)


def _run(argv):
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        raise ImageError(f"{' '.join(argv)} failed: {r.stderr.strip()[-300:]}")
    return r.stdout


def _listdir(d):
    try:
        return os.listdir(d)
    except OSError:
        return []
