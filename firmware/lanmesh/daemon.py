# The one loop (DESIGN §2.2): owns the tasks and lifetimes. Everything that decides lives
# in pure cores (netdoc, desired, mesh, fleet sync); everything that touches the OS lives in
# backends and adapters. This file only wires facts to cores and effects to edges.
from .log import getLogger
import binascii
import os
import signal
import sys
import threading
import time

from . import aio, desired, netdoc, runlock
from .adapters import control
from .applier import Applier
from .dataplane import make_backend
from .adapters.udp import ifindex
from .errors import BackendError, DocumentError, LanmeshError
from .keys import read_private_key, pubkey

PREVIOUS_KEY = ".prev"   # beside the key file: the key a console rekey replaced
HOLD_S = 10              # a peer back from a relay: its direct endpoint is held this long
RESOLVE_S = 60           # endpoint names are looked up again this often for path probes
SUPERVISE_MS = 1000      # document-file watch and mesh socket check (the applier supervises
                         # the backend itself, off the loop)
log = getLogger("lanmesh")


class Daemon:
    """backend: a data-plane backend to use instead of the configured one; mesh_socket: a
    factory (address, port, ifname) -> socket for the mesh (tests run whole daemons in one
    process with fakes there, beside real sockets)."""

    def __init__(self, cfg, backend=None, mesh_socket=None, load_config=None):
        self.cfg = cfg
        self.load_config = load_config      # re-reads the node config (UCI) on SIGHUP
        self._firewall_ports = None         # the ports fw4's rules were last set to
        self.mesh_socket = mesh_socket
        self._keys = {}                # public -> private: the keys this node may run with
        self._configured = None        # the public key in the configured key file
        self.private_key = self._load_keys(cfg)     # an unreadable key file: exit, said why
        self.public_key = self._configured
        self.document = None
        self.backend = backend
        self.link_state = None
        self._plan = None              # the mesh core's routing plan (None: direct full mesh)
        self._plan_doc = None          # the document _plan is for
        self._relay_maps = ()          # what this node forwards as a blind relay (mesh core)
        self._learned = {}             # peer -> underlay IP its authenticated probes come from
        self._resolved = {}            # endpoint name -> (IPv4 or None, when looked up)
        self._back = {}                # peer -> when it came back from a relay (HOLD_S)
        self.started = time.time()
        self.rejected = []             # reasons of the last rejected local document
        self.document_applies = 0      # documents applied (mesh route changes not counted)
        self._stop = None
        self._wake = None
        self._tasks = None             # the loop's tasks, while running
        self._mesh_task = None         # the one task running the mesh core
        self._reload = False
        self._doc_stamp = None
        self.mesh = None
        self.fleet = None
        self._lock = None              # the per-interface run lock (runlock), once started
        self._first = None             # the document start() found, applied when the loop runs
        self.applier = None            # runs every data-plane change off the loop (applier)

    # -- documents ------------------------------------------------------------------------
    def initial_document(self):
        """The local document, or the persisted last good fleet document when newer. None
        when a fleet router has neither (freshly provisioned): it waits for the fleet's."""
        doc, err = None, None
        try:
            doc = netdoc.load(self.cfg.document)
        except DocumentError as e:
            err = e
        if self.cfg.fleet:
            from .fleet.agent import load_last_good
            good = load_last_good(self.cfg, log)
            if good is not None and (doc is None or good.version > doc.version):
                log.info("starting on the last good fleet document v%d", good.version)
                doc = good
        if doc is None:
            if not self.cfg.fleet:
                raise err
            local = "" if not os.path.exists(self.cfg.document) else " (%s)" % "; ".join(err.problems)
            log.warning("no network document yet%s; waiting for fleet %s's from %s",
                        local, self.cfg.fleet["name"], self.cfg.fleet["broker"])
        return doc

    # -- keys -----------------------------------------------------------------------------
    def _load_keys(self, cfg):
        """The configured key, and the one a console rekey replaced (<key file>.prev): the
        node runs with whichever its document names, so a rekey never strands the site on
        its last good document; the old key goes once a document with the new one is good."""
        key = read_private_key(cfg.private_key_file)
        self._configured = pubkey(key)
        self._keys[self._configured] = key
        try:
            prev = read_private_key(cfg.private_key_file + PREVIOUS_KEY)
            self._keys.setdefault(pubkey(prev), prev)
        except LanmeshError:
            pass                            # none (the usual case), or unusable: not ours
        self.cfg.private_key_file = cfg.private_key_file
        return key

    def _key_for(self, doc):
        me = doc.node(self.cfg.name)
        if me.public_key not in self._keys:
            # Rekeyed while running (the console committed a new key): read the config again.
            try:
                self._load_keys(self.load_config() if self.load_config else self.cfg)
            except LanmeshError as e:
                log.warning("re-reading the node's keys: %s", e)
        return self._keys.get(me.public_key)

    def retire_previous_key(self):
        """The document that names this node's new key is good (confirmed): the key it
        replaced is not needed any more."""
        if self.public_key != self._configured or len(self._keys) == 1:
            return
        self._keys = {self.public_key: self.private_key}
        old = self.cfg.private_key_file + PREVIOUS_KEY
        try:
            os.unlink(old)
            log.info("rekey complete: the previous key %s is removed", old)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("cannot remove the previous key %s: %s", old, e.strerror)

    def check_document(self, doc):
        """→ the private key this node runs `doc` with; DocumentError if it has none."""
        if doc.node(self.cfg.name) is None:
            raise DocumentError([f"node {self.cfg.name!r} is not in the document "
                                 f"(nodes: {', '.join(sorted(doc.nodes))})"])
        key = self._key_for(doc)
        if key is None:
            raise DocumentError([f"node {self.cfg.name!r}: the document's public_key "
                                 f"{doc.node(self.cfg.name).public_key} is not this node's "
                                 f"(its key file {self.cfg.private_key_file} has {self.public_key})"])
        return key

    async def apply_document(self, doc):
        """Reconcile the data plane and the mesh to `doc`, all or nothing: the mesh socket
        the document needs is bound first where it can be, the data plane is applied off the
        loop (the applier), and on any failure the previous document, data plane and socket
        stay (as far as the OS lets us); the error is raised."""
        key = self.check_document(doc)
        sock = self.mesh.socket_for(doc) if self.mesh is not None else None
        previous, previous_key = self.document, self.private_key
        self.document = doc
        self._use_key(key)
        try:
            try:
                await self._reconcile()
            except BackendError as e:
                # The first document, and the tunnel is up but something around it failed (a
                # route someone else owns, nft): nothing to roll back to, so keep what works,
                # run the mesh, and let the applier retry until it all applies (status says why).
                if previous is not None or ifindex(self.cfg.interface) is None:
                    raise
                log.error("the data plane is only partly set up, retrying until it is: %s", e)
            if self.mesh is None:
                self._start_mesh()          # the first socket needs the tunnel device
        except LanmeshError:
            self.document = previous
            self._use_key(previous_key)
            if sock is not None and sock is not self.mesh.sock:
                sock.close()
            if previous is not None:
                try:
                    await self._reconcile()
                except LanmeshError as e:
                    log.error("restoring the previous state failed too: %s", e)
            else:
                self._withdraw()
            raise
        self.mesh.document_changed(doc, sock)
        self.document_applies += 1
        if not self.cfg.fleet:
            self.retire_previous_key()      # a local document takes effect as written
        log.info("applied document %s v%d [%s]: %d peers", doc.fleet, doc.version,
                 _document_id(doc), len(doc.nodes) - 1)
        if getattr(self.cfg, "openwrt", False):
            self._firewall_follows(doc)

    def _use_key(self, key):
        if key == self.private_key:
            return
        self.private_key, self.public_key = key, pubkey(key)
        log.info("running with key %s (the one the document names for this node)", self.public_key)
        if self.mesh is not None:
            self.mesh.keys.use(key)

    def _firewall_follows(self, doc):
        """OpenWrt: fw4's rules for our ports follow the document (off the loop: uci and a
        firewall reload take a second)."""
        ports = {"listen_port": self.cfg.listen_port or doc.settings["listen_port"],
                 "mesh_port": doc.settings["mesh_port"], "path_port": doc.settings["path_port"]}
        if ports == self._firewall_ports:
            return
        self._firewall_ports = ports

        def work():
            from .adapters import openwrt_firewall
            try:
                changes = openwrt_firewall.reconcile(ports)
            except OSError as e:              # spawn.Failed and spawn.Timeout too
                log.error("firewall: could not open the document's ports: %s", e)
                self._firewall_ports = None         # the next document tries again
                return
            for c in changes:
                log.info("firewall: %s (fw4 reloaded)", c)
        threading.Thread(target=work, name="lanmesh-firewall", daemon=True).start()

    def _withdraw(self):
        """A first document failed half-way: take the data plane down again."""
        self.applier.forget()
        try:
            self.backend.close()
        except LanmeshError as e:
            log.error("removing the half-applied data plane failed: %s", e)
        self.link_state = None

    def set_plan(self, plan):
        """The mesh core's routes changed (its RoutesChanged, for the current document): hand
        the new state to the applier and return at once (a newer change replaces it if it has
        not started; failures are retried there)."""
        relayed_before = self._plan.relayed if self._plan is not None else {}
        now = time.monotonic()
        for name in set(relayed_before) - set(plan.relayed):
            self._back[name] = now
        self._plan, self._plan_doc = plan, self.document
        self._resubmit()
        if plan.relayed != relayed_before and self._tasks is not None:
            # While both ends move onto the relay, a packet still arriving over the direct
            # path makes WireGuard roam back to it: set the relay's port again shortly.
            aio.create_task(self._hold_relays())

    def set_relays(self, maps):
        self._relay_maps = maps
        self._resubmit()

    def peer_address(self, peer, addr):
        if self._learned.get(peer) != addr[0]:
            self._learned[peer] = addr[0]
            self._resubmit()

    def _resubmit(self):
        """Hand the desired state to the applier if it changed. → True if it did."""
        state = self._desired()
        if state is None or state == self.link_state:
            return False
        self.link_state = state
        self.applier.submit(state)
        return True

    def underlay(self, peer, port_key):
        """(ip, port) of `peer` on the underlay: the address its authenticated path probes
        come from, else its document endpoint's IP; port: a document setting's name, or a
        number. None if neither is known (a name that needs DNS: known once it probes)."""
        doc = self.document
        n = doc.node(peer) if doc is not None else None
        if n is None:
            return None
        ip = self._learned.get(peer) or desired.endpoint_ip(n)
        if ip is None and n.endpoints:
            ip = self._lookup(desired.endpoint_host(n))
        if ip is None:
            return None
        return ip, doc.settings[port_key] if isinstance(port_key, str) else port_key

    def _lookup(self, host):
        """A name's IPv4 for path probes, looked up off the loop (a slow resolver must not
        stall it): None until the answer is in; asked again every RESOLVE_S."""
        got = self._resolved.get(host)
        now = time.monotonic()
        if got is not None and now - got[1] < RESOLVE_S:
            return got[0]
        self._resolved[host] = (got[0] if got else None, now)

        def work():
            import socket
            from .adapters import dns
            try:
                ip = dns.getaddrinfo(host, 0, socket.SOCK_DGRAM)
                ip = next((a[4][0] for a in ip if a[0] == socket.AF_INET), None)
            except OSError:
                ip = None
            self._resolved[host] = (ip, time.monotonic())
        threading.Thread(target=work, name="lanmesh-path-dns", daemon=True).start()
        return got[0] if got else None

    async def _hold_relays(self):
        for delay in (0.5, 1.5, 3.0, HOLD_S - 4.5):
            await aio.sleep(delay)
            if self.applier is not None and not self._resubmit() and self.link_state is not None:
                self.applier.submit(self.link_state)    # the same state: the backends diff
                                                        # it against the OS, roaming included

    def plan_for(self, doc):
        """The routing plan for `doc`: the mesh core's own while it is for this document;
        after a document change, its next hops carried over to the new document (computed
        once) until the core sends the plan it computed for it."""
        if self._plan_doc is not doc:
            hops = self._plan.next_hops if self._plan is not None else None
            self._plan, self._plan_doc = desired.plan(doc, self.cfg.name, hops), doc
        return self._plan

    def _desired(self):
        if self.document is None:
            return None
        now = time.monotonic()
        self._back = {n: t for n, t in self._back.items() if now - t < HOLD_S}
        return desired.link_state(self.cfg, self.document, self.private_key,
                                  self.plan_for(self.document), self.underlay, self._relay_maps,
                                  hold=set(self._back))

    async def _reconcile(self):
        state = self._desired()
        if state == self.link_state:
            return
        err = await self.applier.wait(self.applier.submit(state))
        if err is not None:
            raise err
        self.link_state = state

    async def reload_config(self):
        """SIGHUP (`uci commit lanmesh` + reload_config, `service lanmesh reload`): re-read
        the node config and apply what can change without a restart, keeping every
        WireGuard session; the rest is named and waits for the next start."""
        if self.load_config is None:
            return
        try:
            new = self.load_config()
        except LanmeshError as e:
            log.error("config reload: %s; the running config stays", e)
            return
        changed = sorted(k for k in set(new.raw) | set(self.cfg.raw)
                         if new.raw.get(k) != self.cfg.raw.get(k))
        if not changed:
            return
        later = [k for k in changed if k not in LIVE_CONFIG]
        if later:
            log.warning("config: %s changed; applied at the next start "
                        "(service lanmesh restart)", ", ".join(later))
        now = [k for k in changed if k in LIVE_CONFIG]
        for k in now:
            setattr(self.cfg, k, getattr(new, k))
            self.cfg.raw[k] = new.raw.get(k)
        if now:
            log.info("config: %s applied", ", ".join(now))
        if "log_level" in now:
            from . import log as logmod
            logmod.configure(self.cfg.log_level, prefix=self.cfg.name)
        if "listen_port" in now and self.document is not None:
            try:
                await self._reconcile()
            except LanmeshError as e:
                log.error("config: listen port change not applied: %s", e)

    async def reload_local(self):
        """SIGHUP or the document file changed: apply it if valid and different."""
        if self.cfg.fleet and not os.path.exists(self.cfg.document):
            return                  # a fleet router normally has no local document
        try:
            doc = netdoc.load(self.cfg.document)
            self.check_document(doc)
        except DocumentError as e:
            self.rejected = list(e.problems)
            for p in e.problems:
                log.error("document rejected, mesh unchanged: %s", p)
            return
        self.rejected = []
        if doc == self.document:
            log.info("document unchanged")
            return
        if self.cfg.fleet and self.document is not None and doc.version <= self.document.version:
            log.info("local document v%d is not newer than the applied v%d", doc.version,
                     self.document.version)
            return
        try:
            await self.apply_document(doc)
        except LanmeshError as e:
            self.rejected = [f"apply of v{doc.version} failed, previous state kept: {e}"]
            log.error("%s", self.rejected[0])

    def _document_stamp(self):
        try:
            st = os.stat(self.cfg.document)
            return (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            return None

    # -- status ---------------------------------------------------------------------------
    def links_up(self):
        """(links up, links) as the mesh's probes see them (the fleet's commit check)."""
        return self.mesh.links_up() if self.mesh is not None else (0, 0)

    def status(self):
        doc = self.document
        now = time.time()
        mesh = self.mesh.status() if self.mesh is not None else {"links": [], "counters": {},
                                                                  "lsdb": {}}
        names = {n.public_key: n.name for n in doc.nodes.values()} if doc else {}
        peers = []
        for key, p in sorted(self.backend.peers().items(), key=lambda kv: names.get(kv[0], kv[0])):
            peers.append({
                "name": names.get(key, "?"), "public_key": key, "endpoint": p.endpoint,
                "last_handshake_age": round(now - p.last_handshake, 1) if p.last_handshake else None,
                "rx": p.rx_bytes, "tx": p.tx_bytes, "allowed_ips": list(p.allowed_ips)})
        routes = []
        if doc is not None:
            hops = self.plan_for(doc).next_hops
            for dest, n in sorted(doc.nodes.items()):
                if dest == self.cfg.name:
                    continue
                for prefix in (n.ipv4,) + n.lan:
                    routes.append({"prefix": prefix, "node": dest, "via": hops.get(dest)})
        return {
            "node": self.cfg.name, "interface": self.cfg.interface,
            "backend": getattr(self.backend, "kind", "?"), "public_key": self.public_key,
            "fleet": doc.fleet if doc else None, "version": doc.version if doc else None,
            "document_id": _document_id(doc),
            "uptime": round(now - self.started, 1), "peers": peers,
            "links": mesh["links"], "mesh": mesh["counters"], "lsdb": mesh["lsdb"],
            "relay": mesh.get("relay"),
            "routes": routes, "rejected": self.rejected, "document_applies": self.document_applies,
            "fleet_state": self.fleet.state() if self.fleet is not None else None,
            "dataplane": {"apply_failures": self.applier.failures,
                          "last_error": self.applier.last_error,
                          "longest_apply_ms": round(self.applier.longest_apply_s * 1000, 1),
                          "last_submit_to_applied_ms": None if self.applier.last_latency_s is None
                          else round(self.applier.last_latency_s * 1000, 1)}
            if self.applier is not None else None,
            "process": _process(),
        }

    def _control(self, req):
        if req.get("cmd", "status") == "status":
            return self.status()
        return {"error": "unknown command (known: status)"}

    # -- the loop -------------------------------------------------------------------------
    def start(self):
        """Synchronous part of start-up: errors here exit non-zero with the message."""
        self._lock = runlock.acquire(self.cfg.run_dir, self.cfg.interface)   # before anything
        doc = self.initial_document()
        if doc is not None:
            try:
                self._use_key(self.check_document(doc))
            except DocumentError as e:
                # Never a crash loop over a document that disagrees with the key (a rekey
                # half done, a copied config): run, say why, and take the next good one.
                self.rejected = [f"v{doc.version} not applied: {p}" for p in e.problems]
                for p in self.rejected:
                    log.error("%s; waiting for a document that names this node's key", p)
                doc = None
        if self.backend is None:
            self.backend = make_backend(self.cfg.backend, self.cfg.interface, log=log,
                                        run_dir=self.cfg.run_dir)
        self._first = doc
        self._doc_stamp = self._document_stamp()

    def _start_mesh(self):
        """With the first applied document: the mesh core, and its task once running."""
        from .routing import MeshRouting
        self.mesh = MeshRouting(self)       # LanmeshError if its socket cannot be bound
        self.mesh.on_routes = self.set_plan
        self.mesh.on_relays = self.set_relays
        self.mesh.on_address = self.peer_address
        if self.fleet is not None:
            self.mesh.on_links = self.fleet.links_counted
        if self._tasks is not None:
            self._mesh_task = aio.create_task(self.mesh.run(self._stop))
            self._tasks.append(self._mesh_task)

    def request_reload(self):
        self._reload = True
        if self._wake is not None:
            self._wake.set()

    def request_stop(self):
        if self._stop is not None:
            self._stop.set()
            self._wake.set()

    async def _supervise(self):
        while not self._stop.is_set():
            if self.mesh is not None:
                self.mesh.check_device()
            stamp = self._document_stamp()
            if stamp != self._doc_stamp:
                self._doc_stamp = stamp
                if stamp is not None:
                    self.request_reload()
            await self._wake.wait_ms(SUPERVISE_MS)
            if self._reload:
                self._reload = False
                await self.reload_config()
                await self.reload_local()

    async def run(self):
        self._stop = aio.Event()
        self._wake = aio.Signal()
        self.applier = Applier(self.backend, log)
        server = None
        tasks = self._tasks = []
        try:
            if self._first is not None:
                await self.apply_document(self._first)   # errors exit non-zero, cleaned up
            server = control.listen(self.cfg.control_socket)
            tasks += [aio.create_task(self._supervise()),
                      aio.create_task(control.serve(server, self._control, self._stop))]
            if self.mesh is not None and self._mesh_task is None:   # mesh made before run()
                self._mesh_task = aio.create_task(self.mesh.run(self._stop))
                tasks.append(self._mesh_task)
            if self.cfg.fleet:
                from .fleet.agent import FleetAgent
                self.fleet = FleetAgent(self.cfg, self, log,
                                        keepalive=self.cfg.fleet.get("keepalive") or 30)
                if self.mesh is not None:
                    self.mesh.on_links = self.fleet.links_counted
                tasks.append(aio.create_task(self.fleet.run()))
            if self.mesh_socket is None:        # a real daemon: the process is ours
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, lambda *_: self.request_stop())
                signal.signal(signal.SIGHUP, lambda *_: self.request_reload())
            log.info("running: node %s on %s (%s backend), control %s", self.cfg.name,
                     self.cfg.interface, getattr(self.backend, "kind", "?"), self.cfg.control_socket)
            await self._stop.wait()
        finally:
            if self.mesh_socket is None:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, _stop_now)   # a second signal while cleaning up: cleanup goes on
            for t in tasks:
                t.cancel()
            if self.fleet is not None:
                self.fleet.close()
            if server is not None:
                server.close()
            if self.mesh is not None:
                self.mesh.close()
            try:
                os.unlink(self.cfg.control_socket)
            except OSError:
                pass
            self.applier.close()
            self.backend.close()
            if self._lock is not None:
                os.close(self._lock)        # the interface is free again (a restart in-process)
                self._lock = None
            log.info("stopped; interface %s removed", self.cfg.interface)


class Stopped(SystemExit):
    """SIGTERM/SIGINT during start-up or shut-down: unwind, clean up, exit."""


def _stop_now(signum, frame):
    raise Stopped(128 + signum)


# Node config keys a running daemon takes on SIGHUP; the others (name, key, interface,
# backend, directories, fleet) need a restart.
LIVE_CONFIG = ("log_level", "listen_port", "document")


def run(cfg, load_config=None):
    d = Daemon(cfg, load_config=load_config)
    # Until the loop runs (it installs its own handlers), a stop signal unwinds start(),
    # whose cleanup below removes whatever it had set up: wireguard-go, link, nft, sysctls.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop_now)
    try:
        d.start()
        aio.run(d.run())
    except BaseException:
        if d.backend is not None:
            try:
                d.backend.close()           # idempotent: nothing left to do after a clean stop
            except LanmeshError as e:
                log.error("cleaning up after a failed start: %s", e)
        raise


def _document_id(doc):
    """A short fingerprint of the document's content: a local document edited without a
    new version still shows that it changed (crc32: not a security check, and free)."""
    if doc is None:
        return None
    return "%08x" % binascii.crc32(netdoc.canonical(doc.raw))


def _process():
    """This daemon's footprint, for operators and benchmarks: RSS (from /proc) and how many
    modules it has imported."""
    rss = threads = None
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("Threads:"):
                    threads = int(line.split()[1])
    except OSError:
        pass
    heavy = sorted({m.partition(".")[0] for m in sys.modules} & HEAVY_MODULES)
    return {"pid": os.getpid(), "rss_kb": rss, "threads": threads, "modules": len(sys.modules),
            "heavy": heavy}


# Libraries a router daemon should not need, each several MB of RSS: status names any
# that got loaded (tests/test_rss.py checks the production configuration has none).
HEAVY_MODULES = {"asyncio", "ssl", "pyroute2", "paho", "cryptography", "urllib", "email",
                 "subprocess", "base64",     # these two: ~0.4 MB together (spawn, keys.b64*)
                 "ipaddress"}                # lanmesh.inet does the daemon's part of it
