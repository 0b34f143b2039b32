# The operator's side: a fleet directory (signing key, registry, controller broker
# password), publishing the next signed document retained on `net`, and reading every
# node's retained `state` and `reported` back into one status view.
import json
import os
import threading
import time

from .. import boundjson
from ..atomic import write_atomic
from ..errors import LanmeshError
from ..fleet import signing, topics
from . import registry
from .brokerconf import controller_url, new_password

BROKER_KEYS = ("broker", "ca_file", "username", "password_file")


def default_dir(fleet):
    return os.path.join(os.path.expanduser("~"), ".lanmesh", fleet)


class FleetDir:
    """<dir>/registry.sqlite, signing.key (0600), signing.pub, controller.pass (0600)."""

    def __init__(self, path):
        self.path = path
        self.registry_path = os.path.join(path, "registry.sqlite")
        self.key_path = os.path.join(path, "signing.key")
        self.pub_path = os.path.join(path, "signing.pub")
        self.password_path = os.path.join(path, "controller.pass")
        self._default_broker_dir = os.path.join(path, "broker")
        self._reg = None

    @classmethod
    def init(cls, path, fleet, overlay4=registry.DEFAULT_OVERLAY4, overlay6=None, **broker):
        fd = cls(path)
        if os.path.exists(fd.registry_path) or os.path.exists(fd.key_path):
            raise LanmeshError(f"{path}: fleet already initialised (remove it to start over)")
        os.makedirs(path, mode=0o700, exist_ok=True)
        reg = registry.Registry.create(fd.registry_path, fleet, overlay4, overlay6)
        key = signing.generate_key()
        signing.write_key(fd.key_path, key)
        write_atomic(fd.pub_path, signing.public_key(key) + "\n")
        write_atomic(fd.password_path, new_password() + "\n", mode=0o600)
        reg.set("topic_prefix", topics.prefix_for(fleet))
        for k, v in broker.items():
            if k in BROKER_KEYS and v:
                reg.set(k, os.path.abspath(v) if k.endswith("_file") else v)
        fd._reg = reg
        return fd

    @property
    def broker_dir(self):
        """Where `fleet broker-config` last wrote the broker's files (default <dir>/broker)."""
        try:
            return self.registry.get("broker_dir") or self._default_broker_dir
        except LanmeshError:
            return self._default_broker_dir

    @property
    def registry(self):
        if self._reg is None:
            self._reg = registry.Registry.open(self.registry_path)
        return self._reg

    def public_key(self):
        return signing.read_public_key(self.pub_path)

    def broker_options(self, **overrides):
        """Stored broker settings with command-line overrides; controller defaults. `broker`
        is the URL the nodes use; the controller connects to its own listener, the port after
        it (brokerconf), unless `controller_broker` names another."""
        reg = self.registry
        o = {k: reg.get(k) for k in BROKER_KEYS}
        o.update({k: v for k, v in overrides.items() if v})
        o["username"] = o.get("username") or registry.CONTROLLER_USER
        o["password_file"] = o.get("password_file") or self.password_path
        if not o.get("broker"):
            raise LanmeshError("no broker: pass --broker mqtts://host:port, or store it once "
                               "with `lanmesh fleet config broker=mqtts://host:port ca=FILE`")
        o["broker"] = (reg.get("controller_broker") if not overrides.get("broker") else None) \
            or controller_url(o["broker"])
        return o

    def prefix(self):
        return self.registry.get("topic_prefix") or topics.prefix_for(self.registry.fleet)


class BrokerSession:
    """A short blocking session for the CLI (the node side uses adapters.mqtt.MqttLink)."""

    def __init__(self, opts, client_id=None, timeout=10.0):
        from ..adapters.mqtt import read_secret
        from .paho_client import make_client
        pw = read_secret(opts["password_file"]) if opts.get("password_file") else None
        cid = client_id or "lanmesh-ctl-" + os.urandom(4).hex()
        self.client = make_client(opts["broker"], cid, ca_file=opts.get("ca_file"),
                                  username=opts.get("username"), password=pw)
        self.url = opts["broker"]
        self.timeout = timeout
        self.messages = {}          # topic → payload (last one wins)
        self.changed = threading.Event()
        self._connected = threading.Event()
        self._refused = None
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, rc, props):
        if rc.is_failure:
            self._refused = str(rc)
        self._connected.set()

    def _on_message(self, client, userdata, msg):
        self.messages[msg.topic] = msg.payload
        self.changed.set()

    def __enter__(self):
        host, port = self.client._lanmesh_addr
        try:
            self.client.connect(host, port, keepalive=30)
        except (OSError, ValueError) as e:
            raise LanmeshError(f"broker {self.url}: {e}") from None
        self.client.loop_start()
        if not self._connected.wait(self.timeout):
            self.close()
            raise LanmeshError(f"broker {self.url}: no answer within {self.timeout:.0f}s")
        if self._refused:
            self.close()
            raise LanmeshError(f"broker {self.url}: connection refused: {self._refused}")
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic, payload, retain=False):
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        try:
            info.wait_for_publish(self.timeout)
        except (RuntimeError, ValueError) as e:
            raise LanmeshError(f"broker {self.url}: publish to {topic} failed: {e}") from None
        if not info.is_published():
            raise LanmeshError(f"broker {self.url}: publish to {topic} was not acknowledged")

    def gather(self, subscriptions, quiet=0.5, limit=3.0):
        """Subscribe and collect retained messages until `quiet` seconds pass without one."""
        for t in subscriptions:
            self.client.subscribe(t, 1)
        end = time.monotonic() + limit
        while time.monotonic() < end:
            self.changed.clear()
            if not self.changed.wait(quiet):
                break
        return self.messages


def prepare(fd):
    """(doc, envelope bytes, diff lines, last published doc or None) for the next version."""
    reg = fd.registry
    doc = reg.next_document()
    last = reg.last_published()
    old = json.loads(last[1])["doc"] if last else None
    env = signing.envelope_bytes(signing.sign(doc, signing.read_key(fd.key_path)))
    return doc, env, registry.diff(old, doc), old


def publish(fd, envelope, version, opts):
    """Publish retained on `net`; then clear what removed nodes left retained on the broker
    (a revoked router must not show in `fleet status` for ever). → the purged node names."""
    with BrokerSession(opts) as s:
        s.publish(topics.net(fd.prefix()), envelope, retain=True)
        fd.registry.record_published(version, envelope)
        return purge_removed(fd, s)


def purge_removed(fd, session, quiet=0.3):
    """Clear the retained state/reported of nodes not in the registry (on this session)."""
    prefix = fd.prefix()
    msgs = session.gather([topics.all_states(prefix), topics.all_reported(prefix)], quiet)
    names = {n["name"] for n in fd.registry.nodes()}
    gone = set()
    for topic, payload in list(msgs.items()):
        parsed = topics.parse_node_topic(prefix, topic)
        if parsed and parsed[0] not in names and payload:
            session.publish(topic, b"", retain=True)     # an empty retained message clears it
            gone.add(parsed[0])
    return sorted(gone)


def collect_status(fd, opts, session=None, quiet=0.5):
    """Rows for `fleet status`, one per registered node (plus unknown reporters)."""
    prefix = fd.prefix()
    if session is None:
        with BrokerSession(opts) as s:
            msgs = dict(s.gather(status_topics(prefix), quiet))
    else:
        msgs = dict(session.messages)
    return status_rows(fd, msgs, time.time())


def status_topics(prefix):
    return [topics.all_states(prefix), topics.all_reported(prefix), topics.net(prefix)]


STALE_REPORTS = 3        # a node whose report is this many intervals old is `stale`


def held_version(msgs, prefix):
    """The version of the document the broker holds retained on `net`: None when it holds
    none (a broker restarted without persistence), "?" when it is not one of ours."""
    payload = msgs.get(topics.net(prefix))
    if not payload:
        return None
    try:
        env = boundjson.loads(payload, signing.MAX_ENVELOPE_BYTES, "net")
        return _count(env["doc"]["version"]) or "?"
    except (boundjson.JsonError, KeyError, TypeError):
        return "?"


def status_rows(fd, msgs, now):
    prefix = fd.prefix()
    last = fd.registry.last_published()
    published = last[0] if last else None
    held = held_version(msgs, prefix)
    seen = {}
    for topic, payload in msgs.items():
        parsed = topics.parse_node_topic(prefix, topic)
        if parsed and parsed[1] in ("state", "reported"):
            seen.setdefault(parsed[0], {})[parsed[1]] = payload
    names = sorted(n["name"] for n in fd.registry.nodes())     # stable rows: by name
    rows = []
    for name in names + sorted(set(seen) - set(names)):
        got = seen.get(name, {})
        rep = _reported(got.get("reported"))
        up = _links(rep)
        when = rep.get("time")
        state = printable((got.get("state") or b"never seen").decode("utf-8", "replace"), 16)
        every = _count(rep.get("report_interval")) or 30
        age = now - when if _is_count(when) else None
        if state == "online" and age is not None and age > STALE_REPORTS * every:
            # The broker may not notice a silently dead router (no keepalive enforced, a
            # half-open TCP session): its own reports say how often it should be heard.
            state = "stale"
        rows.append({
            "node": printable(name), "registered": name in names, "state": state,
            "applied_version": _count(rep.get("applied_version")),
            "pending_version": _count(rep.get("pending_version")),
            "rollback": _entry(rep.get("rollback")),
            "rejected": [e for e in map(_entry, _list(rep.get("rejected"))[-5:]) if e],
            "links_up": up[0], "links_total": up[1],
            "last_seen": round(age, 1) if age is not None else None,
            "report_interval": every,
            "published_version": published, "broker_version": held,
            "broker_last_error": _entry_at(rep.get("broker_last_error")),
            "software": printable(rep["software"], 32) if isinstance(rep.get("software"), str) else None,
            "update": _update(rep.get("update")),
        })
        if "error" in rep:
            rows[-1]["error"] = rep["error"]
    return rows


# A node's `reported` is outside input to the operator's terminal: bounded, type-checked
# field by field, control characters removed. One bad node never breaks the fleet's view.
MAX_REPORTED = 64 * 1024


def printable(text, limit=200):
    text = "".join(c for c in str(text) if c.isprintable())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _is_count(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 2 ** 53


def _count(v):
    return int(v) if _is_count(v) and v == int(v) else None


def _list(v):
    return v if isinstance(v, list) else []


def _entry(v):
    """A {"version", "reason"} of rollback/rejected, cleaned; None if it is not one."""
    if not isinstance(v, dict) or not isinstance(v.get("reason"), str):
        return None
    return {"version": _count(v.get("version")), "reason": printable(v["reason"])}


def _update(v):
    """A node's update state, as far as it is well formed: state, version, chunks, reason."""
    if not isinstance(v, dict) or not isinstance(v.get("state"), str):
        return None
    out = {"state": printable(v["state"], 16)}
    for k in ("version", "running", "format"):
        if isinstance(v.get(k), str):
            out[k] = printable(v[k], 32)
    c = v.get("chunks")
    if isinstance(c, list) and len(c) == 2 and all(_is_count(x) for x in c):
        out["chunks"] = c
    if isinstance(v.get("reason"), str):
        out["reason"] = printable(v["reason"])
    return out


def _links(rep):
    """[up, total] from the node's own list of links (what it said last), else its count."""
    links = rep.get("links")
    if isinstance(links, list) and all(isinstance(x, dict) for x in links) and links:
        return [sum(1 for x in links if x.get("up") is True), len(links)]
    up = rep.get("links_up")
    return up if isinstance(up, list) and len(up) == 2 and all(map(_is_count, up)) else [None, None]


def _entry_at(v):
    if not isinstance(v, dict) or not isinstance(v.get("reason"), str):
        return None
    return {"reason": printable(v["reason"]), "at": _count(v.get("at"))}


def _reported(payload):
    if not payload:
        return {}
    try:
        rep = boundjson.loads(payload, MAX_REPORTED, "reported")
    except boundjson.JsonError as e:
        return {"error": printable(e)}
    return rep if isinstance(rep, dict) else {"error": "reported is not a JSON object"}


NOTE_WIDTH = 48          # the reason column of the narrow view (--wide: all of it)


def format_table(rows, wide=False):
    head = ("NODE", "STATE", "APPLIED", "PENDING/ROLLED BACK/REJECTED", "LINKS", "LAST SEEN")
    out = [head]
    cut = False
    for r in rows:
        applied = "-" if r["applied_version"] is None else f"v{r['applied_version']}"
        note = "-"
        if r["pending_version"] is not None:
            note = f"pending v{r['pending_version']}"
        elif r["rollback"]:
            note = f"rolled back v{r['rollback']['version']}: {r['rollback']['reason']}"
        elif r["rejected"]:
            e = r["rejected"][-1]
            note = f"rejected{'' if e['version'] is None else ' v%d' % e['version']}: {e['reason']}"
        elif r.get("error"):
            note = f"unreadable report: {r['error']}"
        if not r["registered"]:
            note = "NOT IN REGISTRY; " + note
        if wide and r.get("broker_last_error"):
            note += f" (last broker problem: {r['broker_last_error']['reason']})"
        if not wide and len(note) > NOTE_WIDTH:
            note, cut = note[:NOTE_WIDTH - 1] + "…", True
        links = "-" if r["links_total"] is None else f"{r['links_up']}/{r['links_total']} up"
        seen = "-" if r["last_seen"] is None else _age(r["last_seen"])
        out.append((r["node"], r["state"], applied, note, links, seen))
    widths = [max(len(row[i]) for row in out) for i in range(len(head) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1] for row in out]
    lines += warnings(rows)
    if cut:
        lines.append("(reasons cut short: --wide shows them whole)")
    return "\n".join(lines)


def warnings(rows):
    """What the operator should act on, with the command that heals it."""
    out = []
    if not rows:
        return out
    published, held = rows[0]["published_version"], rows[0]["broker_version"]
    if published is not None and held is None:
        out.append(f"! broker holds no document (published v{published} is gone: a broker "
                   f"without persistence restarted?). Heal: lanmesh fleet publish")
    elif published is not None and held != published:
        out.append(f"! broker holds v{held}, the registry last published v{published}. "
                   f"Heal: lanmesh fleet publish")
    live = [r for r in rows if r["registered"] and r["state"] == "online"]
    versions = {r["applied_version"] for r in live if r["applied_version"] is not None}
    back = [r for r in live if r["rollback"]]
    if len(versions) > 1 or back:
        on = ", ".join(f"{r['node']} v{r['applied_version']}" for r in live
                       if r["applied_version"] is not None)
        why = "; ".join(f"{r['node']} rolled back v{r['rollback']['version']}: "
                        f"{r['rollback']['reason']}" for r in back)
        nxt = (published or 0) + 1
        out.append(f"! fleet split: {on}" + (f" ({why})" if why else "") +
                   f". Fix the cause, then `lanmesh fleet publish` (v{nxt}): versions only move "
                   f"forward, so every node takes v{nxt}")
    return out


def _age(s):
    s = max(0, s)
    if s < 120:
        return f"{s:.0f}s ago"
    if s < 7200:
        return f"{s / 60:.0f}m ago"
    return f"{s / 3600:.0f}h ago"
