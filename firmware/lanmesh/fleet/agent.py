# Node-side fleet runtime: glues the broker session (adapters.mqtt), signature checks
# (fleet.signing), the pure sync core (fleet.sync) and the daemon, which executes its Apply
# and RollBack effects (apply_document) and tells it when links change (links_counted, fed
# by the mesh's LinkChanged: no polling). Owns no policy of its own: the core decides what
# to apply, confirm or roll back; this file only carries facts and effects.
import json
import time

from .. import boundjson
from ..atomic import write_atomic
from ..errors import DocumentError, LanmeshError
from ..ticks import ticks_add, ticks_diff, ticks_ms
from . import signing, sync, topics

REPORT_EVERY_MS = 30000    # refresh `reported` (links, last seen) this often (default)
REPORT_GAP_MS = 2000       # a change is reported at once, but not more often than this
ECHO_MS = 3000             # our own `online` must come back this soon after a connect


def _last_good_bytes(cfg):
    """The bytes of <state_dir>/last-good.json, or None if absent."""
    try:
        with open(cfg.last_good_document, "rb") as f:
            return f.read(signing.MAX_ENVELOPE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise DocumentError([f"{cfg.last_good_document}: cannot read: {e.strerror}"]) from None


def _read_last_good(cfg, data=None):
    """(NetworkDocument, envelope bytes) from <state_dir>/last-good.json (or `data`, its
    bytes), verified again with the fleet key; None if absent."""
    data = _last_good_bytes(cfg) if data is None else data
    if data is None:
        return None
    doc = signing.verify_document(data, cfg.fleet["public_key"])
    if doc.fleet != cfg.fleet["name"]:
        raise DocumentError([f"{cfg.last_good_document}: document is for fleet {doc.fleet!r}"])
    return doc, data


def load_last_good(cfg, log=None):
    """The persisted last good fleet document, or None (absent or unusable). One that no
    longer verifies with the configured fleet key or name (the config was changed: a
    mistake, or a fleet moved) is still run, with a warning: it is this router's own file,
    verified when it was stored, and dropping it would take the site off the mesh."""
    try:
        data = _last_good_bytes(cfg)
        if data is None:
            return None
    except LanmeshError as e:
        if log is not None:
            log.warning("last good document ignored: %s", e)
        return None
    try:
        return _read_last_good(cfg, data)[0]
    except LanmeshError as e:
        try:
            doc = signing.stored_document(data)
        except LanmeshError as again:
            if log is not None:
                log.warning("last good document ignored: %s", again)
            return None
        if log is not None:
            log.warning("last good document v%d no longer verifies for fleet %s (%s): running "
                        "on it until a document that does arrives", doc.version,
                        cfg.fleet["name"], e)
        return doc


def _envelope(payload):
    try:
        return boundjson.loads(payload, signing.MAX_ENVELOPE_BYTES)
    except ValueError:
        return None


def _digest(envelope_bytes):
    # Ed25519 signatures are deterministic: the signature names the exact signed document.
    env = _envelope(envelope_bytes)
    return env.get("sig") if isinstance(env, dict) else None


def _version_in(payload):
    env = _envelope(payload)
    doc = env.get("doc") if isinstance(env, dict) else None
    v = doc.get("version") if isinstance(doc, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) else None


class Signed:
    """The payload the sync core carries without looking in: the parsed document and the
    signed envelope it came in (None for a local, unsigned document)."""
    __slots__ = ("doc", "envelope")

    def __init__(self, doc, envelope):
        self.doc, self.envelope = doc, envelope

    def __eq__(self, other):
        return isinstance(other, Signed) and (self.doc, self.envelope) == (other.doc, other.envelope)


class FleetAgent:
    """node: the router this agent serves, with .document, async .apply_document(doc),
    .links_up(), .status() and .retire_previous_key() (the Daemon; in benchmarks a
    stand-in). It executes the core's Apply/RollBack there and reads links and status for
    reports; nothing else."""

    def __init__(self, cfg, node, log, keepalive=30, settle_ms=2000,
                 report_every_ms=None, backoff=(1, 30)):
        self.cfg = cfg
        self.node = node
        self.log = log
        self.fleet = cfg.fleet
        self.prefix = self.fleet.get("topic_prefix") or topics.prefix_for(self.fleet["name"])
        self.keepalive = keepalive
        self.report_every_ms = report_every_ms or (
            (self.fleet.get("report_interval") or REPORT_EVERY_MS // 1000) * 1000)
        self._reported_at = None        # when `reported` was last published
        self._reported_links = None     # the links it said
        self._echo_by = None            # deadline for our own `online` to come back
        self.topic_problem = None       # connected, but the broker drops our topics
        self.last_failure = None        # (reason, unix time): the last broker failure
        self.backoff = backoff
        self.started = time.time()
        self.link = None
        self._closed = False
        self._probe_mids = set()
        self._next_report = None
        self._facts = []                # pushed from the loop (links_counted), handled in run()
        self.core = sync.NodeSync(self.fleet["name"], self._current(), settle_ms=settle_ms,
                                  floor=self._floor())
        from .updates import Updater
        self.updater = Updater(cfg, self.prefix, log, links_up=node.links_up)
        self._reported_update = None    # the update state last published

    def _floor(self):
        """The persisted highest verified version, and fleet.min_version (provisioning):
        a fresh router refuses documents older than it was enrolled with."""
        floor = (self.fleet.get("min_version") or 1) - 1
        try:
            with open(self.cfg.version_floor) as f:
                text = f.read(32).strip()
            floor = max(floor, int(text)) if text.isdigit() else floor
        except OSError:
            pass
        return floor

    def _current(self):
        """What the router runs now, as the core's (version, payload, digest)."""
        doc = self.node.document
        if doc is None:
            return None
        try:
            good = _read_last_good(self.cfg)
        except LanmeshError:
            good = None
        if good is not None and good[0] == doc:
            return (doc.version, Signed(doc, good[1]), _digest(good[1]))
        return (doc.version, Signed(doc, None), None)   # a local, unsigned document

    def state(self):
        """For `lanmesh status`."""
        s = self.core.reported()
        s["connected"] = self.core.connected
        s["broker"] = self.fleet.get("broker")
        link = self.link
        s["broker_error"] = link and (link.last_error or link.subscribe_error or
                                      self.topic_problem) or None
        return s

    # -- the loop -------------------------------------------------------------------------
    async def run(self):
        f = self.fleet
        from ..adapters.mqtt import MqttLink, read_secret
        name = self.cfg.name
        try:
            path = f.get("password_file")
            password = None
            if path:
                read_secret(path)           # unreadable now: fleet off, said once, below
                password = lambda: read_secret(path)   # noqa: E731 - re-read per connect
            self.link = MqttLink(f["broker"], "lanmesh-" + name, ca_file=f.get("ca_file"),
                                 username=f.get("username") or name, password=password,
                                 cert_file=f.get("cert_file"), key_file=f.get("key_file"),
                                 will=(topics.state(self.prefix, name), topics.STATE_LOST),
                                 keepalive=self.keepalive, backoff=self.backoff,
                                 log=self.log)
            self.link.subscribe(topics.net(self.prefix))
            self.link.subscribe(topics.cmd(self.prefix, name))
            # Our own `online` coming back proves the broker lets us write and read our
            # topics: an ACL-denied (or wrong fleet name's) session is otherwise silent.
            self.link.subscribe(topics.state(self.prefix, name))
            self.updater.start(self.link)
            self.link.start()
        except LanmeshError as e:
            # The mesh keeps routing on what it has (DESIGN §2.3); only fleet control is off.
            self.log.error("fleet: disabled, cannot set up the broker session: %s", e)
            self.link = None
            return
        self.log.info("fleet %s: connecting to %s as %s", f["name"], f["broker"], name)
        now = ticks_ms()
        self._next_report = now
        while not self._closed:
            ev = await self.link.next_event(self._wait_ms(ticks_ms()))
            if self._closed:
                break
            now = ticks_ms()
            effects = []
            facts, self._facts = self._facts, []
            for f in facts:
                effects += self.core.handle(f, now)
            if ev is not None:
                effects += self._on_event(ev, now)
            effects += self.core.tick(now)
            self.updater.tick(now)
            self._update_news(now)
            self._check_echo(now)
            await self._run_effects(effects, now)
            if ticks_diff(now, self._next_report) >= 0:
                await self._run_effects(self._count_links(now) + [sync.Report()], now)

    def _wait_ms(self, now):
        waits = [ticks_diff(self._next_report, now)]
        if self._echo_by is not None:
            waits.append(ticks_diff(self._echo_by, now))
        for d in (self.core.next_deadline(), self.updater.next_deadline()):
            if d is not None:
                waits.append(ticks_diff(d, now))
        return max(0, min(waits))

    def links_counted(self, up, total):
        """The mesh's links changed (called on the loop): a fact for the core, and news for
        the operator (reported soon, at most every REPORT_GAP_MS)."""
        self._facts.append(sync.LinksCounted(up, total))
        if (up, total) != self._reported_links:
            self._report_soon(ticks_ms())
        if self.link is not None:
            self.link.wake()

    def _report_soon(self, now):
        """News for the operator: reported at once, but at most every REPORT_GAP_MS."""
        if self._next_report is None:
            return
        soonest = now if self._reported_at is None else ticks_add(self._reported_at, REPORT_GAP_MS)
        if ticks_diff(self._next_report, soonest) > 0:
            self._next_report = soonest

    def _update_news(self, now):
        u = self.updater.reported()
        if (u["state"], u.get("reason")) != self._reported_update:
            self._report_soon(now)

    def _check_echo(self, now):
        if self._echo_by is None or ticks_diff(now, self._echo_by) < 0:
            return
        self._echo_by = None
        t = topics.state(self.prefix, self.cfg.name)
        self.topic_problem = (
            f"connected, but the broker does not deliver this node's own messages back "
            f"(published {t}, never received): it drops them. Check the fleet name "
            f"({self.fleet['name']}: topics under {self.prefix}) and the broker's ACL for "
            f"user {self.fleet.get('username') or self.cfg.name}")
        self.log.warning("fleet: %s", self.topic_problem)

    def close(self):
        if self._closed:
            return
        self._closed = True
        if self.link is not None:
            self.link.close(final=(topics.state(self.prefix, self.cfg.name), topics.STATE_OFFLINE))
            self.link.wake()

    # -- facts in -------------------------------------------------------------------------
    def _on_event(self, ev, now):
        from ..adapters import mqtt
        kind = ev[0]
        if kind == mqtt.CONNECTED:
            self.log.info("fleet: broker connected")
            self.link.publish(topics.state(self.prefix, self.cfg.name), topics.STATE_ONLINE,
                              qos=1, retain=True)
            self._echo_by = ticks_add(now, ECHO_MS)
            self.updater.on_connected(now)
            return self.core.handle(sync.BrokerConnected(), now)
        if kind == mqtt.LOST:
            was = self.core.connected
            self.last_failure = (ev[1], int(time.time()))
            self._echo_by = None
            if was:
                self.log.warning("fleet: broker connection lost (%s); retrying with backoff", ev[1])
            else:
                self.log.warning("fleet: cannot connect to %s: %s (retrying with backoff)",
                                 self.fleet["broker"], ev[1])
            return self.core.handle(sync.BrokerLost(), now)
        if kind == mqtt.ACKED:
            if ev[1] in self._probe_mids:
                self._probe_mids.discard(ev[1])
                return self.core.handle(sync.BrokerAcked(), now)
            return []
        topic, payload = ev[1], ev[2]
        if topic == topics.net(self.prefix):
            return self._on_document(payload, now)
        if topic == self.updater.topic():
            self.updater.on_manifest(bytes(payload), now)
            return []
        if topic == self.updater.rollback_topic():
            self.updater.on_rollback_manifest(bytes(payload), now)
            return []
        chunk = topics.parse_chunk(self.prefix, topic)
        if chunk is not None:
            self.updater.on_chunk(*chunk, payload, now)
            return []
        if topic == topics.state(self.prefix, self.cfg.name):
            if payload == topics.STATE_ONLINE.encode() and not ev[3]:   # live, not retained
                self._echo_by = None
                if self.topic_problem:
                    self.log.info("fleet: the broker delivers this node's messages again")
                self.topic_problem = None
            return []
        parsed = topics.parse_node_topic(self.prefix, topic)
        if parsed and parsed[1].startswith("cmd/"):
            # Signed commands arrive in a later issue; answer so the operator is not left waiting.
            cid = parsed[1][4:]
            self.link.publish(topics.resp(self.prefix, self.cfg.name, cid), json.dumps(
                {"ok": False, "error": "commands are not supported by this node yet"}), qos=1)
        return []

    def _on_document(self, payload, now):
        if not payload:
            return []    # retained document cleared by the operator: nothing to do
        try:
            doc = signing.verify_document(payload, self.fleet["public_key"])
        except signing.SignatureError as e:
            return self._refused(str(e), None, now)
        except DocumentError as e:
            return self._refused("invalid document: " + "; ".join(e.problems[:5]),
                                 _version_in(payload), now)
        digest = _digest(payload)
        effects = self._count_links(now)
        return effects + self.core.handle(sync.DocumentArrived(
            doc.fleet, doc.version, Signed(doc, bytes(payload)), digest,
            doc.settings["confirm_window"] * 1000), now)

    def _refused(self, reason, version, now):
        self.log.warning("fleet: network document rejected, nothing changed: %s", reason)
        return self.core.handle(sync.DocumentRefused(reason, version), now)

    def _count_links(self, now):
        """The links as they are now: when a document arrives and once it is applied (after
        that, links_counted keeps the core up to date)."""
        try:
            up, total = self.node.links_up()
        except LanmeshError:
            return []
        return self.core.handle(sync.LinksCounted(up, total), now)

    # -- effects out ----------------------------------------------------------------------
    async def _run_effects(self, effects, now):
        while effects:
            e = effects.pop(0)
            t = type(e)
            if t is sync.Apply:
                effects += await self._apply(e, now)
            elif t is sync.RollBack:
                self.log.warning("fleet: rolling back to v%s: %s", e.version, e.reason)
                try:
                    await self.node.apply_document(e.payload.doc)
                except LanmeshError as err:
                    self.log.error("fleet: rollback failed: %s", err)
                    effects += self.core.handle(sync.RollbackFailed(str(err)), now)
            elif t is sync.SaveFloor:
                write_atomic(self.cfg.version_floor, "%d\n" % e.version, mode=0o600)
            elif t is sync.SaveLastGood:
                write_atomic(self.cfg.last_good_document, e.payload.envelope, mode=0o600)
                self.log.info("fleet: v%d confirmed and saved as last good", e.version)
                self.node.retire_previous_key()
            elif t is sync.Report:
                self._report(now)

    async def _apply(self, e, now):
        self.log.info("fleet: applying v%d (commit-confirmed)", e.version)
        try:
            await self.node.apply_document(e.payload.doc)
        except LanmeshError as err:
            self.log.error("fleet: apply of v%d failed, previous state kept: %s", e.version, err)
            return self.core.handle(sync.ApplyFailed(e.version, str(err)), now)
        return self.core.handle(sync.ApplySucceeded(e.version), now) + self._count_links(now)

    def reported(self):
        r = {"node": self.cfg.name, "fleet": self.fleet["name"], "time": int(time.time()),
             "software": self.updater.running, "uptime": int(time.time() - self.started),
             "report_interval": self.report_every_ms // 1000,
             "broker_last_error": self.last_failure and {"reason": self.last_failure[0],
                                                         "at": self.last_failure[1]}}
        r.update(self.core.reported())
        try:
            st = self.node.status()
        except LanmeshError as err:
            st = {"error": str(err)}
        r["links"] = st.get("links", [])
        r["routes"] = st.get("routes", [])
        r["links_up"] = list(self.core.links)
        r["update"] = self.updater.reported()
        return r

    def _report(self, now):
        self._next_report = ticks_add(now, self.report_every_ms)
        if self.link is None:
            return
        self._reported_at, self._reported_links = now, self.core.links
        u = self.updater.reported()
        self._reported_update = (u["state"], u.get("reason"))
        mid = self.link.publish(topics.reported(self.prefix, self.cfg.name),
                                json.dumps(self.reported(), separators=(",", ":")),
                                qos=1, retain=True)
        p = self.core.pending
        if p is not None and p.applied_at is not None:
            self._probe_mids.add(mid)   # its PUBACK proves the broker is reachable after apply
