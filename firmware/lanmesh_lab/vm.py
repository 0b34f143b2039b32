# Run a command on a real Linux kernel with WireGuard, under qemu (KERNEL-VM.md). The test
# machines' own kernel has no WireGuard module; Debian's has. The guest sees the host's root
# read-only (checkout, venv, ip, wg, nft are all there) and writes only to tmpfs /run, /tmp
# or to the writable shares asked for. qemu exits 0 whatever the guest did, so the guest's
# /init prints a marker with the exit status and we read it from the serial console.
#
#   run_in_vm(["python", "-c", "print(1)"], env={"X": "1"}, timeout=300) -> VmResult
#   python -m lanmesh_lab.vm [--timeout S] [--rw DIR] -- <cmd…>
import codecs
import io
import os
import re
import selectors
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

from . import vm_image

QEMU = "qemu-system-x86_64"
_EXIT = re.compile(r"LANMESH-VM-EXIT=(\d+)")
_START = "LANMESH-VM-START"
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class VmResult:
    __slots__ = ("returncode", "output", "wall_seconds", "boot_seconds", "console", "timed_out")

    def __init__(self, returncode, output, wall_seconds, boot_seconds=None, console="",
                 timed_out=False):
        self.returncode = returncode      # the guest command's exit status; None if it never ended
        self.output = output              # what the command printed (console between markers)
        self.wall_seconds = wall_seconds  # qemu start → qemu exit
        self.boot_seconds = boot_seconds  # qemu start → command start (None if never started)
        self.console = console            # the whole console, kernel messages included
        self.timed_out = timed_out

    def __repr__(self):
        return (f"VmResult(rc={self.returncode}, wall={self.wall_seconds:.1f}s, "
                f"boot={self.boot_seconds}, timed_out={self.timed_out})")


def vm_unavailable_reason():
    """None when run_in_vm can work here; otherwise why not (tests skip with it)."""
    if not shutil.which(QEMU):
        return f"{QEMU} not installed (apt-get install --no-install-recommends qemu-system-x86)"
    try:
        devs = subprocess.run([QEMU, "-M", "microvm", "-device", "help"], capture_output=True,
                              text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{QEMU} does not start: {e}"
    if "virtio-9p-device" not in devs:
        return f"{QEMU} has no virtio-9p-device (needed to share the host root)"
    try:
        img = vm_image.image_for()
    except vm_image.ImageError as e:
        return str(e)
    if img.exists():
        return None
    try:        # "no download possible" is only known by trying (once: it is cached after)
        vm_image.ensure_image(log=_stderr_log)
    except (vm_image.ImageError, OSError) as e:
        return f"cannot build the VM image: {e}"
    return None


def run_in_vm(cmd, timeout=300, env=None, cwd=None, rw=(), memory_mb=1024, cpus=2,
              modules=vm_image.DEFAULT_MODULES, stream=None, log=None):
    """Boot the VM, run `cmd` (argv list or shell script text) as root, power off.

    env: extra environment; cwd: working directory (default /tmp); rw: host directories
    the guest may write, mounted at the same path; stream: a file to copy the console to
    as it arrives. Builds/downloads the image on first use (cached afterwards).
    """
    img = vm_image.ensure_image(modules=modules, log=log or _stderr_log)
    job = tempfile.mkdtemp(prefix="lanmesh-vm-job-")
    try:
        with open(os.path.join(job, "cmd.sh"), "w") as f:
            f.write(_cmd_script(cmd, env, cwd))
        argv = _qemu_argv(img, job, rw, memory_mb, cpus)
        if rw:
            with open(os.path.join(job, "setup.sh"), "w") as f:
                # mkdir: a share under /tmp or /run sits on the guest's fresh tmpfs
                f.write("".join(
                    f"mkdir -p /host{_q(p)} && mount -t 9p -o trans=virtio,version=9p2000.L,"
                    f"msize=512000,cache=none rw{i} /host{_q(p)} || fail 'cannot mount {p}'\n"
                    for i, p in enumerate(rw)))
        return _boot(argv, timeout, stream)
    finally:
        shutil.rmtree(job, ignore_errors=True)


def _cmd_script(cmd, env, cwd):
    lines = ["#!/bin/sh",
             f"export PATH={_PATH} HOME=/tmp PYTHONDONTWRITEBYTECODE=1 WG_COLOR_MODE=never"]
    lines += [f"export {k}={shlex.quote(str(v))}" for k, v in (env or {}).items()]
    cwd = shlex.quote(cwd or "/tmp")
    lines.append(f'cd {cwd} || {{ echo "lanmesh-vm: no directory {cwd} in the guest"; exit 126; }}')
    lines.append("exec " + shlex.join(cmd) if isinstance(cmd, (list, tuple)) else cmd)
    return "\n".join(lines) + "\n"


def _qemu_argv(img, job, rw, memory_mb, cpus):
    argv = [QEMU, "-accel", "tcg", "-cpu", "qemu64", "-M", "microvm", "-m", str(memory_mb),
            "-smp", str(cpus), "-display", "none", "-monitor", "none", "-serial", "stdio",
            "-no-reboot", "-kernel", img.vmlinux, "-initrd", img.initrd,
            "-fsdev", "local,id=fs0,path=/,security_model=none,readonly=on,multidevs=remap",
            "-device", "virtio-9p-device,fsdev=fs0,mount_tag=hostroot"]
    for i, path in enumerate(rw):
        argv += ["-fsdev", f"local,id=rw{i},path={os.path.abspath(path)},security_model=none",
                 "-device", f"virtio-9p-device,fsdev=rw{i},mount_tag=rw{i}"]
    # quiet + loglevel: kernel chatter stays out of the command's output. The guest has no
    # HPET/PM timer to calibrate its TSC against; on a busy host the PIT calibration fails and
    # boot hangs, so we tell it the rate (TCG's TSC is the host's) and trust it.
    tsc = _host_tsc_khz()
    clock = f"tsc_early_khz={tsc} tsc=reliable " if tsc else ""
    argv += ["-append", f"console=ttyS0 panic=-1 quiet loglevel=3 {clock}lanmesh.job={job}"]
    return argv


def _host_tsc_khz():
    """The host's TSC rate in kHz (None if unknown): measured with rdtsc, else cpuinfo."""
    if os.environ.get("LANMESH_VM_TSC_KHZ"):
        return int(os.environ["LANMESH_VM_TSC_KHZ"])
    try:
        return _measure_tsc_khz()
    except (OSError, ValueError, AttributeError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return int(float(line.split(":")[1]) * 1000)
    except (OSError, ValueError):
        pass
    return None


def _measure_tsc_khz():
    import ctypes
    import mmap
    import platform
    if platform.machine() not in ("x86_64", "AMD64"):
        raise ValueError("no rdtsc")
    # rdtsc; shl rdx,32; or rax,rdx; ret
    code = b"\x0f\x31\x48\xc1\xe2\x20\x48\x09\xd0\xc3"
    buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    buf.write(code)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    rdtsc = ctypes.CFUNCTYPE(ctypes.c_uint64)(addr)
    rates = []
    for _ in range(3):
        t0, c0 = time.perf_counter_ns(), rdtsc()
        time.sleep(0.03)
        c1, t1 = rdtsc(), time.perf_counter_ns()
        rates.append((c1 - c0) * 1_000_000 // (t1 - t0))
    del rdtsc, addr
    return sorted(rates)[1]


def _boot(argv, timeout, stream):
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    console, tail, boot, timed_out = io.StringIO(), "", None, False
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while True:
            left = t0 + timeout - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            if not sel.select(min(left, 1.0)):
                continue
            data = os.read(proc.stdout.fileno(), 65536)
            if not data:
                break
            # The serial port often delivers a byte per read: decode incrementally and
            # look for the marker in a rolling tail, not in single reads.
            text = decoder.decode(data).replace("\r", "")
            console.write(text)
            if stream is not None:
                stream.write(text)
                stream.flush()
            tail = (tail + text)[-2 * len(_START):]
            if boot is None and _START in tail:
                boot = time.monotonic() - t0
    finally:
        sel.close()
        if proc.poll() is None:
            proc.kill()         # our own qemu, by its Popen handle
        proc.wait()
        proc.stdout.close()
    wall = time.monotonic() - t0
    console = console.getvalue()
    start = console.find(_START)                        # /init prints it before the command
    ends = list(_EXIT.finditer(console, max(start, 0)))
    m = ends[-1] if ends else None                      # ... and this one last of all
    output = console[start + len(_START) + 1:m.start() if m else len(console)] if start >= 0 else ""
    return VmResult(int(m.group(1)) if m else None, output, wall, boot, console, timed_out)


def _q(path):
    return shlex.quote(os.path.abspath(path))


def _stderr_log(msg):
    print(msg, file=sys.stderr, flush=True)


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(prog="python -m lanmesh_lab.vm", description=(
        "Run a command as root on a WireGuard-capable kernel under qemu; the host's / is "
        "read-only in the guest, /tmp and /run are fresh tmpfs."))
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--rw", action="append", default=[], help="host dir the guest may write")
    ap.add_argument("--cwd", default=os.getcwd())
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("give a command after --")
    reason = vm_unavailable_reason()
    if reason:
        _stderr_log(f"lanmesh-vm: cannot run: {reason}")
        return 2
    env = dict(kv.split("=", 1) for kv in a.env)
    res = run_in_vm(cmd, timeout=a.timeout, env=env, cwd=a.cwd, rw=a.rw, stream=sys.stdout)
    _stderr_log(f"lanmesh-vm: exit {res.returncode}, boot {res.boot_seconds or 0:.1f} s, "
                f"wall {res.wall_seconds:.1f} s{' (timed out)' if res.timed_out else ''}")
    return 124 if res.returncode is None else res.returncode


if __name__ == "__main__":
    sys.exit(main())
