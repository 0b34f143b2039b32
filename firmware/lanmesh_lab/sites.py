# The multi-site test bed (DESIGN §8): N sites, each a router namespace and a LAN-host
# namespace, all routers joined through one WAN namespace that routes between them (so a
# single site-to-site path can be cut or slowed there). Used by tests, bench and the demo.
#
#   host-a (198.19.1.2) ── lan0 │ router-a │ wan0 (198.18.1.2) ── s1 │      │
#   host-b (198.19.2.2) ── lan0 │ router-b │ wan0 (198.18.2.2) ── s2 │ wan  │ …
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from lanmesh.adapters import control
from lanmesh.atomic import write_atomic
from lanmesh.keys import genkey, pubkey, write_private_key
from .netns import Namespaces

OVERLAY4, OVERLAY6 = "100.64.0.0/10", "fd00:6c6d::/64"


class Site:
    def __init__(self, lab, i):
        self.i = i
        self.letter = "abcdefghijklmnopqrstuvwxyz"[i - 1] if i <= 26 else f"n{i}"
        self.name = f"site-{self.letter}"
        self.router = f"{lab.ns.prefix}-r{self.letter}"
        self.host = f"{lab.ns.prefix}-h{self.letter}"
        self.ifname = f"{lab.ns.prefix}{self.letter}"
        self.wan_ip = f"198.18.{i}.2"
        self.lan4, self.lan6 = f"198.19.{i}.0/24", f"fd00:19:{i}::/64"
        self.host4, self.host6 = f"198.19.{i}.2", f"fd00:19:{i}::2"
        self.overlay4, self.overlay6 = f"100.64.0.{i}", f"fd00:6c6d::{i}"
        self.dir = os.path.join(lab.workdir, self.name)
        self.private_key = genkey()
        self.public_key = pubkey(self.private_key)
        self.backend = lab.backend_for(i)
        self.relay = True
        self.endpoints = [f"{self.wan_ip}:51820"]   # what the document lists (a name, or none)
        self.proc = None

    @property
    def config_path(self):
        return os.path.join(self.dir, "node.json")

    @property
    def control_socket(self):
        return os.path.join(self.dir, "run", self.ifname + ".sock")

    def node_entry(self):
        return {"name": self.name, "public_key": self.public_key,
                "address": [self.overlay4 + "/32", self.overlay6 + "/128"],
                "lan": [self.lan4, self.lan6], "endpoints": list(self.endpoints),
                "relay": self.relay}


class Lab:
    def __init__(self, n_sites, backend=None, prefix=None, settings=None, log=None):
        # backend: one name for every site, or a list/tuple giving site 1, 2, …'s backend
        # (sites past its end take its last entry); default: env LANMESH_LAB_BACKEND or uapi
        self.ns = Namespaces(prefix)
        if backend is None:
            backend = os.environ.get("LANMESH_LAB_BACKEND") or "uapi"
        self.backend = list(backend) if isinstance(backend, (list, tuple)) else backend
        self.settings = dict(settings or {})
        self.version = 0
        self.workdir = tempfile.mkdtemp(prefix=self.ns.prefix + "-")
        self.log = log or (lambda msg: None)
        self.sites = []
        self.wan = None
        self.netns_etc = []             # /etc/netns/<ns> directories made for this run
        self._cuts = set()
        self._n = n_sites
        self._wanem = None

    def backend_for(self, i):
        """The backend of site i (1-based)."""
        if isinstance(self.backend, list):
            return self.backend[min(i, len(self.backend)) - 1]
        return self.backend

    # -- topology -------------------------------------------------------------------------
    def __enter__(self):
        try:
            self.wan = self.ns.add("wan")
            self.ns.exec(self.wan, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            for _ in range(self._n):
                self.add_site()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def add_site(self):
        s = Site(self, len(self.sites) + 1)
        self.ns.add("r" + s.letter)
        self.ns.add("h" + s.letter)
        self.ns.veth(s.router, "wan0", self.wan, f"s{s.i}")
        self.ns.exec(self.wan, "ip", "addr", "add", f"198.18.{s.i}.1/24", "dev", f"s{s.i}")
        self.ns.exec(s.router, "ip", "addr", "add", f"{s.wan_ip}/24", "dev", "wan0")
        self.ns.exec(s.router, "ip", "route", "add", "default", "via", f"198.18.{s.i}.1")
        self.ns.veth(s.router, "lan0", s.host, "eth0")
        self.ns.exec(s.router, "ip", "addr", "add", f"198.19.{s.i}.1/24", "dev", "lan0")
        self.ns.exec(s.router, "ip", "-6", "addr", "add", f"fd00:19:{s.i}::1/64", "dev", "lan0", "nodad")
        self.ns.exec(s.host, "ip", "addr", "add", f"{s.host4}/24", "dev", "eth0")
        self.ns.exec(s.host, "ip", "-6", "addr", "add", f"{s.host6}/64", "dev", "eth0", "nodad")
        self.ns.exec(s.host, "ip", "route", "add", "default", "via", f"198.19.{s.i}.1")
        self.ns.exec(s.host, "ip", "-6", "route", "add", "default", "via", f"fd00:19:{s.i}::1")
        os.makedirs(s.dir, exist_ok=True)
        write_private_key(os.path.join(s.dir, "private.key"), s.private_key)
        self.write_config(s)
        self.sites.append(s)
        return s

    def write_config(self, s, **extra):
        """The site's node.json; `extra` adds settings such as a `fleet` section."""
        cfg = {"name": s.name, "interface": s.ifname, "backend": s.backend,
               "private_key_file": "private.key", "document": "network.json",
               "state_dir": "state", "run_dir": "run"}
        cfg.update(extra)
        write_atomic(s.config_path, json.dumps(cfg, indent=2))

    def close(self):
        if self._wanem is not None:
            self._wanem.close()
            self._wanem = None
        self.ns.teardown()
        for d in self.netns_etc:
            shutil.rmtree(d, ignore_errors=True)
        self.netns_etc = []
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- documents ------------------------------------------------------------------------
    def document(self, sites=None, **settings):
        self.version += 1
        sites = self.sites if sites is None else sites
        return {"fleet": "lab", "version": self.version,
                "overlay": {"ipv4": OVERLAY4, "ipv6": OVERLAY6},
                "settings": dict(self.settings, **settings),
                "nodes": [s.node_entry() for s in sites]}

    def write_document(self, doc, sites=None):
        data = json.dumps(doc, indent=2)
        for s in (self.sites if sites is None else sites):
            write_atomic(os.path.join(s.dir, "network.json"), data)

    # -- daemons --------------------------------------------------------------------------
    def start(self, s, wait=True, extra_env=None, command=None):
        """command: how to invoke lanmesh (default this interpreter, -m lanmesh.cli), e.g. an
        installed package's launcher."""
        env = dict(os.environ, **(extra_env or {}))
        logf = open(os.path.join(s.dir, "daemon.log"), "ab")
        argv = (command or [sys.executable, "-m", "lanmesh.cli"]) + ["run", "--config", s.config_path]
        s.proc = self.ns.popen(s.router, argv, stdout=logf, stderr=subprocess.STDOUT, env=env)
        logf.close()
        if wait:
            self.wait_ready(s)
        return s.proc

    def start_all(self, doc=None, timeout=15, extra_env=None):
        """Write `doc` (default: a new document of every site) and start every site's
        daemon, all at once, then wait until each answers. Returns the document.
        extra_env: e.g. {"PYTHONPATH": another revision's firmware/} (bench/revisions.py)."""
        if doc is None:
            doc = self.document()
        self.write_document(doc)
        for s in self.sites:
            self.start(s, wait=False, extra_env=extra_env)
        for s in self.sites:
            self.wait_ready(s, timeout)
        return doc

    def wait_ready(self, s, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if s.proc.poll() is not None:
                raise RuntimeError(f"{s.name} daemon exited {s.proc.returncode}:\n{self.daemon_log(s)}")
            try:
                return self.status(s)
            except (OSError, ValueError):
                time.sleep(0.05)
        raise TimeoutError(f"{s.name} daemon not ready after {timeout}s:\n{self.daemon_log(s)}")

    def stop(self, s, sig=signal.SIGTERM, timeout=10):
        if s.proc is None:
            return None
        s.proc.send_signal(sig)
        try:
            rc = s.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            s.proc.kill()
            rc = s.proc.wait()
        s.proc = None
        return rc

    def routes(self, s, retry_s=0):
        """{destination node: next hop or None} as the daemon routes now."""
        return {r["node"]: r["via"] for r in self.status(s, retry_s)["routes"]}

    def wait_routes(self, s, want, timeout=15):
        """Wait until s routes each destination in `want` {node: next hop} that way."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                got = self.routes(s, retry_s=deadline - time.monotonic())
            except TimeoutError:
                return False
            if all(got.get(d) == v for d, v in want.items()):
                return True
            time.sleep(0.05)
        return False

    def wait_direct(self, sites=None, timeout=15):
        """Wait until every site routes every other site directly (a converged full mesh)."""
        sites = self.sites if sites is None else sites
        return all(self.wait_routes(s, {d.name: d.name for d in sites if d is not s}, timeout)
                   for s in sites)

    def reload(self, s):
        s.proc.send_signal(signal.SIGHUP)

    def status(self, s, retry_s=0):
        """The daemon's status. A daemon starved of CPU (the TCG-emulated VM) may answer
        later than the 5 s a request waits: it is asked again for up to retry_s."""
        deadline = time.monotonic() + retry_s
        while True:
            try:
                return control.request(s.control_socket, {"cmd": "status"}, timeout=5)
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise

    def daemon_log(self, s):
        """The log's last 4000 characters (for assertion messages)."""
        return self.daemon_log_full(s)[-4000:]

    def daemon_log_full(self, s):
        try:
            with open(os.path.join(s.dir, "daemon.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    # -- traffic --------------------------------------------------------------------------
    def ping(self, src, dst, family=4, count=1, wait_s=1, interval=None):
        """Ping dst's LAN host from src's LAN host; returns (ok, output)."""
        target = dst.host4 if family == 4 else dst.host6
        argv = ["ping", "-n", f"-{family}", "-c", str(count), "-W", str(wait_s)]
        if interval is not None:
            argv += ["-i", str(interval)]
        r = self.ns.exec(src.host, *argv, target, check=False, timeout=count * 2 + wait_s + 10)
        return r.returncode == 0, r.stdout

    def unreachable_pairs(self):
        """[(source host, target)]: every site's LAN host pings every other site's LAN host
        once, each source's pings in parallel."""
        bad = []
        for s in self.sites:
            targets = " ".join(d.host4 for d in self.sites if d is not s)
            out = self.ns.exec(s.host, "sh", "-c", f"for t in {targets}; do (ping -n -c1 -W2 $t "
                               ">/dev/null 2>&1 || echo $t) & done; wait", timeout=30).stdout
            bad += [(s.host4, t) for t in out.split()]
        return bad

    def wait_ping(self, src, dst, family=4, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok, _ = self.ping(src, dst, family)
            if ok:
                return True
        return False

    # -- WAN impairment -------------------------------------------------------------------
    def cut(self, a, b):
        self._cuts.add(frozenset((a.i, b.i)))
        self._load_wan_rules()

    def restore(self, a, b):
        self._cuts.discard(frozenset((a.i, b.i)))
        self._load_wan_rules()

    def impair(self, a, b, delay_ms=0, jitter_ms=0, loss_pct=0):
        """Per-direction delay/jitter/loss on the a↔b WAN path (NFQUEUE stage, lab/wanem)."""
        if self._wanem is None:
            from .wanem import WanEmulator
            self._wanem = WanEmulator(self.ns, self.wan)
        self._wanem.set_link(a.wan_ip, b.wan_ip, delay_ms=delay_ms, jitter_ms=jitter_ms, loss_pct=loss_pct)

    def unimpair(self, a, b):
        if self._wanem is not None:
            self._wanem.clear_link(a.wan_ip, b.wan_ip)

    def ttl_exceeded(self):
        """ICMP time-exceeded messages sent by all routers so far (a loop would make them)."""
        total = 0
        for s in self.sites:
            snmp = self.ns.exec(s.router, "cat", "/proc/net/snmp").stdout.splitlines()
            hdr = [l for l in snmp if l.startswith("Icmp:")]
            if len(hdr) >= 2:
                names, vals = hdr[0].split()[1:], hdr[1].split()[1:]
                total += int(dict(zip(names, vals)).get("OutTimeExcds", 0))
            for line in self.ns.exec(s.router, "cat", "/proc/net/snmp6").stdout.splitlines():
                k, _, v = line.partition(" ")
                if k == "Icmp6OutTimeExcds":
                    total += int(v.strip() or 0)
        return total

    def _load_wan_rules(self):
        rules = []
        for pair in sorted(tuple(sorted(p)) for p in self._cuts):
            x, y = pair
            rules.append(f"ip saddr 198.18.{x}.2 ip daddr 198.18.{y}.2 drop")
            rules.append(f"ip saddr 198.18.{y}.2 ip daddr 198.18.{x}.2 drop")
        body = "\n".join("    " + r for r in rules)
        script = ("table inet lab_wan\ndelete table inet lab_wan\n"
                  "table inet lab_wan {\n  chain forward {\n"
                  "    type filter hook forward priority 0; policy accept;\n" + body + "\n  }\n}\n")
        self.ns.exec(self.wan, "nft", "-f", "-", input=script)
