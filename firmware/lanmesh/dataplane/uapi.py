# The `uapi` backend: a userspace WireGuard (wireguard-go) driven over its UAPI socket
# /var/run/wireguard/<ifname>.sock, plus HostNet for addresses, routes and nft.
# We own the wireguard-go process: start it, watch its PID, restart it when it dies and
# re-apply the last state, stop it on close (which removes the tun link with it).
# Configuration is a diff: read `get=1`, send only what differs (see uapi_proto).
# wireguard-go writes to its own log file (<run_dir>/<ifname>.wireguard-go.log), never to a
# pipe of ours: after a daemon crash it would die of SIGPIPE at its next line, and the
# daemon that restarts and adopts it must find it alive.
import os
import signal
import socket
import struct
import time

from .. import spawn
from ..errors import BackendError, LanmeshError
from ..keys import from_hex, to_hex
from .endpoint import resolve
from .hostnet import HostNet
from .linkstate import PeerStatus
from .peerdiff import choose_endpoints
from .uapi_proto import counters_of, UapiError, build_set, check_errno, errno_text, norm_prefix, parse_get

SOCK_DIR = "/var/run/wireguard"
START_TIMEOUT = 5.0     # wireguard-go opens its socket in ~50 ms; allow for a slow router
STOP_TIMEOUT = 3.0      # SIGTERM → SIGKILL
IO_TIMEOUT = 5.0


class UapiBackend:
    def __init__(self, ifname, log=None, program="wireguard-go", run_dir=None):
        if log is None:
            from ..log import getLogger
            log = getLogger("lanmesh.dataplane")
        self.ifname = ifname
        self.log = log
        self.program = program
        self.sock_path = f"{SOCK_DIR}/{ifname}.sock"
        self.hostnet = HostNet(ifname, log=log, run_dir=run_dir)
        self.set_requests = 0       # `set=1` requests sent: 0 more after an unchanged apply
        self._proc = None           # spawn.Child: the wireguard-go we started
        self._adopted = None        # PID of one a previous lanmesh run left behind
        self._state = None          # last state asked for: re-applied after a restart
        self._endpoints = {}        # peer (hex) → endpoint we last set: what "unchanged" means
        self._out = _Output(os.path.join(run_dir or "/tmp", f"{ifname}.wireguard-go.log"))

    @property
    def pid(self):
        return self._proc.pid if self._proc else self._adopted

    # --- backend API ----------------------------------------------------------------------

    def apply(self, state):
        """Make wireguard-go and the host match `state`; returns the changes made."""
        if state.ifname != self.ifname:
            raise BackendError(f"state is for {state.ifname!r}, "
                               f"this backend drives {self.ifname!r}")
        desired = self._desired(state)      # bad input fails here, before anything changes
        self._state = state
        self._ensure_running()
        # Peers first: the first handshake starts ~0.3 s sooner than after the netlink helper.
        # (wireguard-go then logs "Failed to write packet to TUN device" into its own log
        # for what arrives before the link is up: harmless, and not in the daemon's log.)
        changes = self._configure(desired)
        return changes + self.hostnet.apply(state)

    def peers(self):
        if not self._alive():
            return {}
        dev = parse_get(self._request("get=1\n\n"))
        return {from_hex(pk): PeerStatus(from_hex(pk), p["endpoint"], p["last_handshake"],
                                         p["rx_bytes"], p["tx_bytes"], p["allowed_ips"])
                for pk, p in dev["peers"].items()}

    def counters(self):
        """{public_key: (rx_bytes, tx_bytes)}: one UAPI get (mesh/liveness.py)."""
        if not self._alive():
            return {}
        return {from_hex(pk): c for pk, c in counters_of(self._request("get=1\n\n")).items()}

    def supervise(self):
        """Restart a dead wireguard-go and re-apply the last state; True if it did. (A failed
        apply is retried by the daemon's applier, for every backend alike.)"""
        if self._state is None or self._alive():
            return False
        rc = self._proc.returncode if self._proc else None
        self.log.warning(f"{self.ifname}: wireguard-go (pid {self.pid}) is gone"
                         f"{'' if rc is None else f' (exit {rc})'}; restarting it")
        self._proc = self._adopted = None
        self.apply(self._state)
        return True

    def close(self):
        """Stop wireguard-go (its tun link goes with it) and undo HostNet's changes."""
        self._state = None
        try:
            self._stop()
        finally:
            self.hostnet.close()

    # --- desired state --------------------------------------------------------------------

    def _desired(self, state):
        peers = {}
        try:
            for b64, p in sorted(state.peers.items()):
                peers[to_hex(b64)] = {
                    "endpoint": resolve(p.endpoint, self.log, self.ifname) if p.endpoint else [],
                    "force": p.force_endpoint, "not_via": p.not_via,
                    "allowed_ips": tuple(sorted({norm_prefix(a) for a in p.allowed_ips})),
                    "keepalive": p.keepalive,
                }
            private = to_hex(state.private_key)
        except LanmeshError as exc:
            raise BackendError(f"{self.ifname}: {exc}") from None
        return {"private_key": private, "listen_port": state.listen_port, "peers": peers}

    def _configure(self, desired):
        current = parse_get(self._request("get=1\n\n"))
        chosen, keep = choose_endpoints(current["peers"], desired["peers"], self._endpoints)
        for pk, ep in chosen.items():
            desired["peers"][pk]["endpoint"] = ep
        request = build_set(current, desired)
        if request:
            self._set(request)
        self._endpoints = keep      # only after success: a failed set is redone next apply
        return _describe(request) if request else []

    # --- UAPI socket ----------------------------------------------------------------------

    def _request(self, text):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(IO_TIMEOUT)
        buf = b""
        try:
            s.connect(self.sock_path)
            s.sendall(text.encode())
            while not buf.endswith(b"\n\n"):
                chunk = s.recv(16384)
                if not chunk:
                    break
                buf += chunk
        except OSError as exc:
            raise BackendError(f"{self.ifname}: UAPI socket {self.sock_path}: "
                               f"{exc.strerror or exc}") from None
        finally:
            s.close()
        return buf.decode("utf-8", "replace")

    def _set(self, request):
        mark = self._out.mark()
        self.set_requests += 1
        try:
            check_errno(self._request(request))
        except UapiError as exc:
            why = self._out.error_since(mark) if exc.errno else None
            msg = f"{self.ifname}: configuring wireguard-go failed: " + (
                errno_text(exc.errno) if exc.errno else str(exc))
            raise UapiError(msg + (f" — {why}" if why else ""), exc.errno) from None

    def _socket_owner(self):
        """PID of the process listening on our UAPI socket, or None if nobody is."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.sock_path)
            cred = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            return struct.unpack("3i", cred)[0]
        except OSError:
            return None
        finally:
            s.close()

    # --- the wireguard-go process ---------------------------------------------------------

    def _alive(self):
        if self._proc is not None:
            return self._proc.poll() is None
        if self._adopted is not None:
            try:
                os.kill(self._adopted, 0)
                return True
            except ProcessLookupError:
                return False
        return False

    def _ensure_running(self):
        if self._alive():
            return
        self._proc = self._adopted = None
        owner = self._socket_owner()
        if owner:
            # Left by a previous lanmesh run: adopting it keeps its sessions up. The socket
            # path is shared by all namespaces, so make sure it is ours.
            if not _same_netns(owner):
                raise BackendError(f"{self.sock_path} belongs to pid {owner} in another network "
                                   f"namespace; choose another interface name")
            self.log.info(f"{self.ifname}: adopting running wireguard-go (pid {owner})")
            self._adopted = owner
            return
        self._start()

    def _start(self):
        env = dict(os.environ, WG_PROCESS_FOREGROUND="1")
        try:
            out = self._out.open()
            try:
                # Own process group, so a Ctrl-C meant for the daemon does not kill the
                # tunnel before close(). Not its own session: with sched_autogroup (on by
                # default) a session is a CPU-scheduling group, and a wireguard-go alone in
                # one got 0.83-0.87 of the throughput of one started from a shell, at
                # 1.15x the CPU per bit (bench/uapi_vs_hand.py --hand-setsid shows it).
                proc = spawn.start([self.program, "-f", self.ifname], env=env, stdout=out,
                                   stderr=out, own_group=True)
            finally:
                os.close(out)
        except OSError as exc:
            raise BackendError(f"{self.ifname}: cannot start {self.program}: "
                               f"{exc.strerror or exc}") from None
        self._proc = proc
        deadline = time.monotonic() + START_TIMEOUT
        while self._socket_owner() is None:
            if proc.poll() is not None:
                self._proc = None
                raise BackendError(f"{self.ifname}: {self.program} exited ({proc.returncode}): "
                                   f"{self._out.last() or 'no output'}")
            if time.monotonic() > deadline:
                self._stop()
                raise BackendError(f"{self.ifname}: {self.program} did not open {self.sock_path} "
                                   f"within {START_TIMEOUT:.0f} s")
            time.sleep(0.02)
        self.log.info(f"{self.ifname}: started {self.program} (pid {proc.pid})")

    def _stop(self):
        pid, proc = self.pid, self._proc
        self._proc = self._adopted = None
        if pid is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            if _wait_exit(pid, proc, STOP_TIMEOUT):
                break
            self.log.warning(f"{self.ifname}: wireguard-go (pid {pid}) ignored SIGTERM; killing it")
        if proc is not None:
            proc.wait()
        if os.path.exists(self.sock_path) and self._socket_owner() is None:
            try:
                os.unlink(self.sock_path)   # left behind by SIGKILL
            except FileNotFoundError:
                pass


class _Output:
    """wireguard-go's log file: truncated at each start, read back only to quote why it
    failed (the last line, or the IPC error it logs just before answering errno)."""

    def __init__(self, path):
        self.path = path

    def open(self):
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND |
                       os.O_CLOEXEC, 0o600)

    def _lines(self, start=0):
        try:
            with open(self.path, "rb") as f:
                f.seek(max(start, os.path.getsize(self.path) - 16384))
                return f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return []

    def mark(self):
        try:
            return os.path.getsize(self.path)
        except OSError:
            return 0

    def last(self):
        lines = self._lines()
        return lines[-1].strip() if lines else ""

    def error_since(self, mark, timeout=0.3):
        deadline = time.monotonic() + timeout
        while True:
            line = next((t for t in reversed(self._lines(mark)) if "IPC error" in t), None)
            if line or time.monotonic() >= deadline:
                return line.split(": ", 2)[-1] if line else None
            time.sleep(0.02)


def _describe(request):
    out, lines = [], request.split("\n")
    for i, line in enumerate(lines):
        key, _, value = line.partition("=")
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if key == "public_key":
            what = {"remove=true": "removed", "update_only=true": "updated"}.get(nxt, "added")
            out.append(f"peer {from_hex(value)[:8]}… {what}")
        elif key == "private_key":
            out.append("private key set")
        elif key == "listen_port":
            out.append(f"listen port set to {value}")
    return out


def _same_netns(pid):
    try:
        theirs, ours = os.stat(f"/proc/{pid}/ns/net"), os.stat("/proc/self/ns/net")
    except OSError:
        return False
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def _wait_exit(pid, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                return True
        else:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
        time.sleep(0.02)
    return False
