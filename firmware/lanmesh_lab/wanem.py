# WAN emulator for the namespace test bed: the kernel here has no sch_netem, so delay and
# jitter come from a userspace stage on NFQUEUE (this module run as a process inside the WAN
# namespace) and loss from nftables `numgen random`. WanEmulator is the API tests, benchmarks
# and the demo use; it owns the iptables/nft rules and the stage process (by PID).
#
# Semantics (per direction, like netem on each side of a link):
#   set_link(a, b, delay_ms=40)  → a→b and b→a each wait 40 ms ± jitter: ping RTT ≈ 80 ms.
#   loss_pct applies to each direction on its own: a ping (two crossings) is lost with
#   1-(1-p)²; pass both_ways=False to impair a→b only.
#   Order: FIFO per direction (a packet never leaves before one queued earlier on the same
#   direction, so jitter is clamped upwards under load); reorder=True lets jitter reorder.
# Failure policy: rules use --queue-bypass, so if the stage dies the WAN stays up, unimpaired
#   (fail-open); packets it was holding are dropped by the kernel. A full queue (maxlen) is a
#   full router buffer: tail drop, unless overflow_accept=True (kernel fail-open flag).
import argparse
import heapq
import ipaddress
import json
import os
import random
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from . import nfqueue

CHAIN = "LANMESH_WANEM"          # iptables user chain in table mangle, jumped to from FORWARD
NFT_TABLE = "lanmesh_wanem"      # nft table holding the loss rules (before mangle: lost
LOSS_PRIORITY = -200             # packets never reach the queue)


# ---------------------------------------------------------------------------- the stage --
class _Path:
    __slots__ = ("delay", "jitter", "reorder", "last_due", "packets")

    def __init__(self, delay_ms, jitter_ms, reorder):
        self.delay, self.jitter, self.reorder = delay_ms / 1000, jitter_ms / 1000, reorder
        self.last_due = 0.0
        self.packets = 0


class _Stop(Exception):
    pass


class Stage:
    """Holds each queued packet for its direction's delay ± uniform jitter, then accepts it."""

    def __init__(self, qs, control_path, seed=None):
        self.qs = qs
        self.rng = random.Random(seed)
        self.paths = {}          # (src bytes, dst bytes) → _Path
        self.heap = []           # (due, seq, packet id)
        self.seq = 0
        self.c = dict(received=0, released=0, unclassified=0, held_max=0, control_errors=0)
        self.late_sum = self.late_max = 0.0
        self.ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ctl.bind(control_path)
        self.ctl.listen(8)
        self.ctl.setblocking(False)

    def run(self):
        # select(), not epoll: its timeout has microsecond resolution where epoll rounds
        # up to whole milliseconds, which showed as ~0.6 ms mean lateness per crossing
        qfd, cfd = self.qs.fileno(), self.ctl.fileno()
        try:
            while True:
                self._release(time.monotonic())
                timeout = max(0.0, self.heap[0][0] - time.monotonic()) if self.heap else 1.0
                ready, _, _ = select.select([qfd, cfd], [], [], timeout)
                if qfd in ready:
                    self._receive(time.monotonic())
                if cfd in ready:
                    self._control()
        except _Stop:
            pass
        finally:
            # leaving: let everything we hold go now rather than have the kernel drop it
            self.qs.accept(pid for _, _, pid in self.heap)
            self.heap = []
            self.qs.close()
            self.ctl.close()

    def _receive(self, now):
        for pid, head in self.qs.recv():
            self.c["received"] += 1
            pair = nfqueue.ip_pair(head)
            path = self.paths.get(pair) if pair else None
            if path is None:             # rule/config race or odd packet: pass it on at once
                self.c["unclassified"] += 1
                due = now
            else:
                path.packets += 1
                due = now + path.delay
                if path.jitter:
                    due += self.rng.uniform(-path.jitter, path.jitter)
                if not path.reorder:
                    due = max(due, path.last_due)
                path.last_due = due
            self.seq += 1
            heapq.heappush(self.heap, (due, self.seq, pid))
        self.c["held_max"] = max(self.c["held_max"], len(self.heap))

    def _release(self, now):
        due_ids = []
        while self.heap and self.heap[0][0] <= now:
            due, _, pid = heapq.heappop(self.heap)
            late = now - due
            self.late_sum += late
            self.late_max = max(self.late_max, late)
            due_ids.append(pid)
        if due_ids:
            self.qs.accept(due_ids)
            self.c["released"] += len(due_ids)

    def _control(self):
        try:
            conn, _ = self.ctl.accept()
        except BlockingIOError:
            return
        with conn:
            # requests are one short line from a local client that writes it right away,
            # so a brief blocking read does not stall the packet path noticeably
            conn.settimeout(1)
            try:
                reply = self.handle(json.loads(conn.makefile("rb").readline()))
            except _Stop:
                conn.sendall(b'{"ok": true}\n')
                raise
            except (OSError, ValueError, KeyError, TypeError) as e:
                self.c["control_errors"] += 1
                reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            try:
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except OSError:
                pass

    def handle(self, req):
        cmd = req["cmd"]
        if cmd == "set":
            key = (_packed(req["src"]), _packed(req["dst"]))
            old = self.paths.get(key)
            self.paths[key] = p = _Path(float(req["delay_ms"]), float(req.get("jitter_ms", 0)),
                                        bool(req.get("reorder", False)))
            if old:              # keep FIFO across a change: nothing overtakes what is held
                p.last_due, p.packets = old.last_due, old.packets
            return {"ok": True}
        if cmd == "clear":
            self.paths.pop((_packed(req["src"]), _packed(req["dst"])), None)
            return {"ok": True}
        if cmd == "stats":
            return {"ok": True, "stats": self.stats()}
        if cmd == "quit":
            raise _Stop()
        raise ValueError(f"unknown command {cmd!r}")

    def stats(self):
        ru = resource.getrusage(resource.RUSAGE_SELF)
        n = self.c["released"]
        return dict(self.c, held=len(self.heap), malformed=self.qs.malformed,
                    enobufs=self.qs.enobufs, verdict_errors=self.qs.verdict_errors,
                    late_ms_mean=round(self.late_sum / n * 1000, 3) if n else 0.0,
                    late_ms_max=round(self.late_max * 1000, 3),
                    cpu_s=round(ru.ru_utime + ru.ru_stime, 3),
                    paths={f"{_text(s)}>{_text(d)}": p.packets for (s, d), p in self.paths.items()})


_packed = lambda ip: ipaddress.ip_address(ip).packed      # noqa: E731
_text = lambda b: str(ipaddress.ip_address(b))             # noqa: E731


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m lanmesh_lab.wanem",
                                 description="NFQUEUE delay/jitter stage (run inside the WAN namespace)")
    ap.add_argument("--queue", type=int, default=0)
    ap.add_argument("--control", required=True, help="unix socket path for JSON-line commands")
    ap.add_argument("--maxlen", type=int, default=4096, help="kernel queue length (packets)")
    ap.add_argument("--overflow-accept", action="store_true",
                    help="on a full queue accept packets undelayed instead of dropping them")
    ap.add_argument("--copy-range", type=int, default=40, help="bytes of each packet copied (headers)")
    ap.add_argument("--seed", type=int)
    a = ap.parse_args(argv)

    def stop(signum, frame):
        raise _Stop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    qs = nfqueue.QueueSocket(a.queue, a.copy_range, a.maxlen, a.overflow_accept)
    Stage(qs, a.control, a.seed).run()


# ------------------------------------------------------------------------- controller --
def _ip(x):
    """An IPv4 address string (the lab WAN is IPv4 only), or anything with a .wan_ip (a Site)."""
    return str(ipaddress.IPv4Address(getattr(x, "wan_ip", x)))


class WanEmulator:
    """Per-site-pair delay, jitter and loss in the WAN namespace `wan` of Namespaces `ns`."""

    def __init__(self, ns, wan, queue=0, maxlen=4096, overflow_accept=False, seed=None):
        self.ns, self.wan, self.queue = ns, wan, queue
        self.paths = {}                  # (src, dst) → dict(delay_ms, jitter_ms, loss_pct, reorder)
        self.dir = tempfile.mkdtemp(prefix=f"{ns.prefix}-wanem-")
        self.control_path = os.path.join(self.dir, "ctl.sock")
        self.log_path = os.path.join(self.dir, "stage.log")
        self.proc = self.ipt = None
        self._own_mangle = False
        try:
            self.ipt = self._pick_iptables()
            argv = [sys.executable, "-m", "lanmesh_lab.wanem", "--queue", str(queue),
                    "--control", self.control_path, "--maxlen", str(maxlen)]
            argv += ["--overflow-accept"] if overflow_accept else []
            argv += ["--seed", str(seed)] if seed is not None else []
            with open(self.log_path, "ab") as log:
                self.proc = ns.popen(wan, argv, stdout=log, stderr=subprocess.STDOUT)
            self._wait_ready()
            self._load_loss()
        except BaseException:
            self.close()
            raise

    # -- public API -----------------------------------------------------------------------
    def set_link(self, a, b, delay_ms=0, jitter_ms=0, loss_pct=0, reorder=False, both_ways=True):
        """Impair a→b (and b→a unless both_ways=False); changes apply at once, no restart."""
        if delay_ms < 0 or jitter_ms < 0 or not 0 <= loss_pct <= 100:
            raise ValueError("delay/jitter must be ≥ 0 and loss in 0..100")
        a, b = _ip(a), _ip(b)
        conf = dict(delay_ms=delay_ms, jitter_ms=jitter_ms, loss_pct=loss_pct, reorder=reorder)
        dirs = [(a, b), (b, a)] if both_ways else [(a, b)]
        if not both_ways:
            self.paths.pop((b, a), None)
        for src, dst in dirs:
            self.paths[src, dst] = conf
            # the stage learns the path before the rule sends it packets
            self.request(dict(cmd="set", src=src, dst=dst, **conf))
        self._apply()
        if not both_ways:
            self.request(dict(cmd="clear", src=b, dst=a))

    def clear_link(self, a, b):
        a, b = _ip(a), _ip(b)
        self._clear([k for k in ((a, b), (b, a)) if k in self.paths])

    def clear_all(self):
        self._clear(list(self.paths))

    def _clear(self, keys):
        for k in keys:
            del self.paths[k]
        self._apply()                    # rules go first, so nothing new reaches the stage
        for src, dst in keys:
            self.request(dict(cmd="clear", src=src, dst=dst))

    def stats(self):
        """The stage's counters: received/released/held, malformed, enobufs, lateness, cpu_s;
        plus the kernel's view of the queue (queue_dropped, user_dropped)."""
        s = self.request({"cmd": "stats"})["stats"]
        s.update(self.kernel_queue() or {})
        return s

    def kernel_queue(self):
        """The kernel's counters for our queue, read in the WAN namespace."""
        r = self.ns.exec(self.wan, "cat", "/proc/net/netfilter/nfnetlink_queue", check=False)
        return nfqueue.proc_stats(r.stdout, self.queue)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def request(self, req, timeout=5):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(self.control_path)
            s.sendall(json.dumps(req).encode() + b"\n")
            reply = json.loads(s.makefile("rb").readline())
        if not reply.get("ok"):
            raise RuntimeError(f"wanem stage: {reply.get('error')}")
        return reply

    def close(self):
        """Remove every rule, stop the stage by PID (it releases what it holds), clean up."""
        if self.ipt:
            for op in ("-D FORWARD -j", "-F", "-X"):
                self._ipt("-t", "mangle", *op.split(), CHAIN, check=False)
            # iptables-nft made table ip mangle for us: drop it too if nobody else uses it
            left = self._ipt("-t", "mangle", "-S", check=False).stdout.split("\n")
            if self.ipt == "iptables-nft" and self._own_mangle and all(x.startswith("-P") for x in left if x):
                self.ns.exec(self.wan, "nft", "delete", "table", "ip", "mangle", check=False)
            self.ipt = None
        self.ns.exec(self.wan, "nft", "delete", "table", "inet", NFT_TABLE, check=False)
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            if self.proc in self.ns.procs:
                self.ns.procs.remove(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- rules ----------------------------------------------------------------------------
    def _ipt(self, *args, check=True):
        return self.ns.exec(self.wan, self.ipt, *args, check=check)

    def _pick_iptables(self):
        # iptables-nft first: its xt NFQUEUE rules live in the same nftables ruleset as the
        # loss table and Lab's cut table (one engine, one `nft list ruleset`); legacy only as
        # a fallback for kernels without nft compat.
        errors = []
        for tool in ("iptables-nft", "iptables-legacy"):
            if not shutil.which(tool):
                errors.append(f"{tool}: not installed")
                continue
            self.ipt = tool
            self._own_mangle = self.ns.exec(self.wan, "nft", "list", "table", "ip", "mangle",
                                            check=False).returncode != 0
            r = self._ipt("-t", "mangle", "-N", CHAIN, check=False)
            if r.returncode == 0:
                self._ipt("-t", "mangle", "-A", "FORWARD", "-j", CHAIN)
                probe = ["-t", "mangle", "-A", CHAIN, "-s", "198.18.255.254", "-j", "NFQUEUE",
                         "--queue-num", str(self.queue), "--queue-bypass"]
                if self._ipt(*probe, check=False).returncode == 0:
                    self._ipt("-t", "mangle", "-F", CHAIN)
                    return tool
                self._ipt("-t", "mangle", "-D", "FORWARD", "-j", CHAIN, check=False)
                self._ipt("-t", "mangle", "-X", CHAIN, check=False)
            errors.append(f"{tool}: {r.stderr.strip() or 'NFQUEUE target refused'}")
            self.ipt = None
        raise RuntimeError("no usable iptables with NFQUEUE (apt-get install iptables): " + "; ".join(errors))

    def _apply(self):
        """Rewrite the queue chain and the loss table, each in one atomic transaction."""
        lines = ["*mangle", f":{CHAIN} - [0:0]"]          # declaring the chain flushes it
        for (src, dst), c in sorted(self.paths.items()):
            if c["delay_ms"] > 0 or c["jitter_ms"] > 0:
                lines.append(f"-A {CHAIN} -s {src}/32 -d {dst}/32 -j NFQUEUE "
                             f"--queue-num {self.queue} --queue-bypass")
        lines.append("COMMIT\n")
        self.ns.exec(self.wan, f"{self.ipt}-restore", "--noflush", input="\n".join(lines))
        self._load_loss()

    def _load_loss(self):
        rules = []
        for (src, dst), c in sorted(self.paths.items()):
            permille = round(c["loss_pct"] * 10)
            if permille > 0:
                rules.append(f"ip saddr {src} ip daddr {dst} numgen random mod 1000 < {permille} "
                             "counter drop")
        script = (f"table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n"
                  f"table inet {NFT_TABLE} {{\n  chain loss {{\n"
                  f"    type filter hook forward priority {LOSS_PRIORITY}; policy accept;\n"
                  + "".join(f"    {r}\n" for r in rules) + "  }\n}\n")
        self.ns.exec(self.wan, "nft", "-f", "-", input=script)

    def _wait_ready(self, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"wanem stage exited {self.proc.returncode}: {self._log_tail()}")
            try:
                return self.request({"cmd": "stats"}, timeout=1)
            except (OSError, ValueError):
                time.sleep(0.05)
        raise TimeoutError(f"wanem stage not ready after {timeout}s: {self._log_tail()}")

    def _log_tail(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return ""


if __name__ == "__main__":
    main()
