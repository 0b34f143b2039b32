# The controller's registry (SQLite): the fleet's settings, its nodes with their stably
# allocated overlay addresses, and every published document. Address index N gives
# overlay4[N] and overlay6[N]; indexes are never reused, not even after a node is removed,
# so a revoked node's address cannot silently land on a new one.
import ipaddress
import json
import os
import sqlite3
import time

from .. import inet, netdoc
from ..errors import LanmeshError
from ..keys import is_key

CONTROLLER_USER = "controller"    # broker account of the operator; no node may take it
DEFAULT_OVERLAY4 = "100.64.0.0/10"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
  name TEXT PRIMARY KEY, idx INTEGER UNIQUE NOT NULL, public_key TEXT UNIQUE NOT NULL,
  lan TEXT NOT NULL, endpoints TEXT NOT NULL, relay INTEGER NOT NULL, added REAL NOT NULL);
CREATE TABLE IF NOT EXISTS removed (
  name TEXT NOT NULL, idx INTEGER NOT NULL, public_key TEXT NOT NULL, removed REAL NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
  version INTEGER PRIMARY KEY, envelope BLOB NOT NULL, published REAL NOT NULL);
"""


class RegistryError(LanmeshError):
    pass


def random_ula64():
    """A fleet's own RFC 4193 prefix (fd + 40 random bits), first /64 of it."""
    g = os.urandom(5)
    return str(ipaddress.ip_network((b"\xfd" + g + b"\0" * 10, 64)))


class Registry:
    def __init__(self, db):
        self.db = db

    @classmethod
    def create(cls, path, fleet, overlay4=DEFAULT_OVERLAY4, overlay6=None, settings=None):
        if os.path.exists(path):
            raise RegistryError(f"{path}: a registry already exists")
        if not netdoc.NAME_RE.match(fleet or ""):
            raise RegistryError(f"fleet name {fleet!r}: a-z, 0-9, '-', up to 31 characters")
        overlay6 = overlay6 or random_ula64()
        probe = {"fleet": fleet, "version": 1, "overlay": {"ipv4": overlay4, "ipv6": overlay6},
                 "settings": settings or {}, "nodes": []}
        problems = [p for p in netdoc.validate(probe) if not p.startswith("nodes")]
        if problems:
            raise RegistryError("; ".join(problems))
        db = sqlite3.connect(path)
        os.chmod(path, 0o600)
        with db:
            db.executescript(_SCHEMA)
            for k, v in (("fleet", fleet), ("overlay4", overlay4), ("overlay6", overlay6),
                         ("settings", json.dumps(settings or {})), ("next_index", "1")):
                db.execute("INSERT INTO meta VALUES (?, ?)", (k, v))
        return cls(db)

    @classmethod
    def open(cls, path):
        if not os.path.exists(path):
            raise RegistryError(f"{path}: no registry here (run `lanmesh fleet init NAME`)")
        db = sqlite3.connect(path)
        try:
            db.execute("SELECT value FROM meta WHERE key = 'fleet'").fetchone()
        except sqlite3.DatabaseError as e:
            raise RegistryError(f"{path}: not a lanmesh registry ({e})") from None
        return cls(db)

    def close(self):
        self.db.close()

    # -- meta -----------------------------------------------------------------------------
    def get(self, key, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set(self, key, value):
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    @property
    def fleet(self):
        return self.get("fleet")

    def settings(self):
        return json.loads(self.get("settings", "{}"))

    def set_settings(self, changes):
        """changes: {key: int}; validated the way nodes will validate them."""
        s = dict(self.settings(), **changes)
        problems = [p for p in netdoc.validate({"settings": s}) if p.startswith("settings")]
        if problems:
            raise RegistryError("; ".join(problems))
        self.set("settings", json.dumps(s, sort_keys=True))

    # -- nodes ----------------------------------------------------------------------------
    def _address(self, idx):
        n4 = ipaddress.ip_network(self.get("overlay4"))
        n6 = ipaddress.ip_network(self.get("overlay6"))
        if idx >= n4.num_addresses - 1 or idx >= n6.num_addresses:
            raise RegistryError(f"overlay {n4} is full")
        return [f"{n4.network_address + idx}/32", f"{n6.network_address + idx}/128"]

    def nodes(self):
        """Current nodes in document form, by allocation order (stable documents)."""
        rows = self.db.execute("SELECT name, idx, public_key, lan, endpoints, relay "
                               "FROM nodes ORDER BY idx").fetchall()
        return [{"name": r[0], "public_key": r[2], "address": self._address(r[1]),
                 "lan": json.loads(r[3]), "endpoints": json.loads(r[4]), "relay": bool(r[5])}
                for r in rows]

    def node(self, name):
        return next((n for n in self.nodes() if n["name"] == name), None)

    def add_node(self, name, public_key, lan=(), endpoints=(), relay=False):
        """Validate against the whole fleet first; nothing is written on error."""
        if name == CONTROLLER_USER:
            raise RegistryError(f"node name {name!r} is reserved for the controller's broker account")
        if not isinstance(public_key, str) or not is_key(public_key):
            raise RegistryError(f"node {name!r}: the public key is not a WireGuard public key "
                                f"(44 base64 characters)")
        idx = int(self.get("next_index"))
        entry = {"name": name, "public_key": public_key, "address": self._address(idx),
                 "lan": list(lan), "endpoints": list(endpoints), "relay": bool(relay)}
        self._check(self.nodes() + [entry], name)
        with self.db:
            self.db.execute("INSERT INTO nodes VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (name, idx, public_key, json.dumps(entry["lan"]),
                             json.dumps(entry["endpoints"]), int(relay), time.time()))
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'next_index'", (str(idx + 1),))
        return entry

    def set_node(self, name, public_key=None, lan=None, endpoints=None, relay=None):
        """Change a node in place: its overlay addresses stay (a new LAN, endpoint or key
        must not renumber the site). → (old entry, new entry)."""
        nodes = self.nodes()
        old = next((n for n in nodes if n["name"] == name), None)
        if old is None:
            raise RegistryError(f"no node {name!r} in fleet {self.fleet!r}")
        if public_key is not None and not is_key(public_key):
            raise RegistryError(f"node {name!r}: the public key is not a WireGuard public key "
                                f"(44 base64 characters)")
        new = dict(old)
        for k, v in (("public_key", public_key), ("lan", lan), ("endpoints", endpoints),
                     ("relay", relay)):
            if v is not None:
                new[k] = list(v) if isinstance(v, (list, tuple)) else v
        self._check([new if n["name"] == name else n for n in nodes], name)
        with self.db:
            self.db.execute("UPDATE nodes SET public_key = ?, lan = ?, endpoints = ?, relay = ? "
                            "WHERE name = ?", (new["public_key"], json.dumps(new["lan"]),
                                               json.dumps(new["endpoints"]), int(new["relay"]), name))
        return old, new

    def _check(self, nodes, name):
        """The fleet with `nodes` makes a valid document, and no LAN swallows what the
        mesh itself needs to reach outside the tunnel: an endpoint, or the broker."""
        doc = self._document(1, nodes)
        i = next(j for j, n in enumerate(nodes) if n["name"] == name)
        problems = [p.replace(f"nodes[{i}]", f"node {name!r}") for p in netdoc.validate(doc)]
        if not problems:
            problems = self.lan_conflicts(nodes)
        if problems:
            raise RegistryError("; ".join(problems))

    def lan_conflicts(self, nodes):
        from ..prefix import parse_endpoint, parse_prefix
        outside = []                        # (what, ip address) that must stay outside LANs
        for n in nodes:
            for ep in n["endpoints"]:
                host = parse_endpoint(ep)[0]
                outside.append((f"node {n['name']!r}'s endpoint {ep}", host))
        host_site = self.get("broker_site")     # a site whose LAN hosts the broker
        for key in ("broker", "controller_broker"):
            url = self.get(key)
            if url:
                from ..adapters.mqtt import parse_broker
                outside.append((f"the broker {url}", parse_broker(url)[1]))
        ips = []
        for what, host in outside:
            try:
                ips.append((what, inet.ip_address(host.strip("[]"))))
            except ValueError:
                pass                        # a name: resolved by the routers, not here
        out = []
        for n in nodes:
            for pre in n["lan"]:
                net = parse_prefix(pre)
                for what, ip in ips:
                    if ip.version != net.version or ip not in net:
                        continue
                    if what.startswith("the broker") and n["name"] == host_site:
                        continue    # declared: the others reach it through the mesh
                    hint = (f" (if the broker really sits on {n['name']}'s LAN: `lanmesh fleet "
                            f"config broker_site={n['name']}`)" if what.startswith("the broker")
                            else "")
                    out.append(f"node {n['name']!r}: LAN {pre} contains {what}: its traffic "
                               f"would be routed into the mesh it carries{hint}")
        return out

    def remove_node(self, name):
        """Revocation: the next published document no longer has the node."""
        row = self.db.execute("SELECT name, idx, public_key FROM nodes WHERE name = ?",
                              (name,)).fetchone()
        if row is None:
            raise RegistryError(f"no node {name!r} in fleet {self.fleet!r}")
        with self.db:
            self.db.execute("DELETE FROM nodes WHERE name = ?", (name,))
            self.db.execute("INSERT INTO removed VALUES (?, ?, ?, ?)", row + (time.time(),))

    # -- documents ------------------------------------------------------------------------
    def _document(self, version, nodes):
        doc = {"fleet": self.fleet, "version": version,
               "overlay": {"ipv4": self.get("overlay4"), "ipv6": self.get("overlay6")},
               "nodes": nodes}
        s = self.settings()
        if s:
            doc["settings"] = s
        return doc

    def next_document(self):
        """The document the next publish would sign (version = last published + 1)."""
        last = self.last_published()
        version = (last[0] if last else 0) + 1
        doc = self._document(version, self.nodes())
        problems = netdoc.validate(doc)
        if problems:
            raise RegistryError("the registry does not make a valid document: " + "; ".join(problems))
        return doc

    def last_published(self):
        """(version, envelope bytes) of the newest published document, or None."""
        row = self.db.execute("SELECT version, envelope FROM documents "
                              "ORDER BY version DESC LIMIT 1").fetchone()
        return (row[0], bytes(row[1])) if row else None

    def record_published(self, version, envelope):
        with self.db:
            self.db.execute("INSERT INTO documents VALUES (?, ?, ?)", (version, envelope, time.time()))


def diff(old, new):
    """Lines describing what changes from document old (dict or None) to new."""
    out = []
    if old is None:
        out.append(f"+ first document: {len(new['nodes'])} nodes")
        for n in new["nodes"]:
            out.append(f"+ node {n['name']}: {', '.join(n['address'])} lan {', '.join(n['lan']) or '-'}")
        return out
    on = {n["name"]: n for n in old["nodes"]}
    nn = {n["name"]: n for n in new["nodes"]}
    for name in sorted(set(on) - set(nn)):
        out.append(f"- node {name} (revoked: no longer in the document)")
    for name in sorted(set(nn) - set(on)):
        n = nn[name]
        out.append(f"+ node {name}: {', '.join(n['address'])} lan {', '.join(n['lan']) or '-'}")
    for name in sorted(set(on) & set(nn)):
        a, b = on[name], nn[name]
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                out.append(f"~ node {name}.{k}: {json.dumps(a.get(k))} -> {json.dumps(b.get(k))}")
    for key in ("overlay", "settings"):
        if old.get(key) != new.get(key):
            out.append(f"~ {key}: {json.dumps(old.get(key))} -> {json.dumps(new.get(key))}")
    return out
