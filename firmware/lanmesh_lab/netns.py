# Network namespaces for the test bed: create, run commands in, and always tear down.
# Every name carries a per-run prefix; teardown kills only processes inside namespaces this
# run created (by PID), then deletes the namespaces — also at interpreter exit.
import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import time
import uuid

_live = []           # (Namespaces) still to tear down at exit


def cpu_ticks(pid):
    """User + system CPU clock ticks of a process so far (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def sh(*argv, check=True, input=None, timeout=30):
    r = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
    return r


CLONE_NEWNET = 0x40000000
_libc = None


@contextlib.contextmanager
def entered(name):
    """Run the block with this thread inside namespace `name` (setns; os.setns needs 3.12),
    so in-process code such as a backend works there exactly as it would on a router."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name} failed")
        yield
    finally:
        _libc.setns(home, CLONE_NEWNET)
        os.close(fd)
        os.close(home)


def run_prefix():
    """'lm' + 4 hex digits: short, because interface names derived from it have 15 chars max."""
    return "lm" + uuid.uuid4().hex[:4]


class Namespaces:
    def __init__(self, prefix=None):
        self.prefix = prefix or run_prefix()
        self.names = []
        self.procs = []
        _live.append(self)

    def add(self, short):
        name = f"{self.prefix}-{short}"
        sh("ip", "netns", "add", name)
        self.names.append(name)
        self.exec(name, "ip", "link", "set", "lo", "up")
        # Relayed traffic can arrive on an interface its source is not routed out of:
        # strict reverse-path filtering would drop it.
        self.exec(name, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
        return name

    def exec(self, ns, *argv, check=True, timeout=30, input=None):
        return sh("ip", "netns", "exec", ns, *argv, check=check, timeout=timeout, input=input)

    def popen(self, ns, argv, **kw):
        p = subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kw)
        self.procs.append(p)
        return p

    def veth(self, ns_a, name_a, ns_b, name_b, mtu=1500):
        # unique temporary names in the root namespace, then moved and renamed
        tmp_a = f"v{uuid.uuid4().hex[:10]}"
        tmp_b = f"v{uuid.uuid4().hex[:10]}"
        sh("ip", "link", "add", tmp_a, "mtu", str(mtu), "type", "veth", "peer", "name", tmp_b, "mtu", str(mtu))
        sh("ip", "link", "set", tmp_a, "netns", ns_a, "name", name_a)
        sh("ip", "link", "set", tmp_b, "netns", ns_b, "name", name_b)
        self.exec(ns_a, "ip", "link", "set", name_a, "up")
        self.exec(ns_b, "ip", "link", "set", name_b, "up")

    def pids(self, ns):
        r = sh("ip", "netns", "pids", ns, check=False)
        return [int(x) for x in r.stdout.split()]

    def teardown(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 5
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        # Whatever still runs inside our namespaces was started by this run (daemons'
        # children such as wireguard-go, iperf3 servers): stop those PIDs.
        for ns in self.names:
            for pid in self.pids(ns):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for ns in reversed(self.names):
            sh("ip", "netns", "del", ns, check=False)
        self.names = []
        if self in _live:
            _live.remove(self)


def _teardown_all():
    for n in list(_live):
        n.teardown()


def _on_signal(signum, frame):
    _teardown_all()
    raise SystemExit(128 + signum)


atexit.register(_teardown_all)
for _s in (signal.SIGTERM, signal.SIGHUP):
    if signal.getsignal(_s) in (signal.SIG_DFL, None):
        signal.signal(_s, _on_signal)
