# Console session core (sans-IO, MicroPython-compatible): what the device agent does
# with each request line. Owns the command grammar, the staged values and their
# validation, the mode (plain for people, machine for tools), the secret-next-line rule
# and the replay cache that makes retransmitted requests harmless. I/O (key generation,
# the atomic commit, reboot, the tty) is asked for with `Perform`/`SetMode`/`SetEcho`.
import json

from .. import boundjson
from .protocol import (VERSION, MAX_LINE, REQ, REP, LineBuffer, frame, unframe,
                       Write, SetMode, SetEcho, Perform, Exit)

PROMPT = "lanmesh> "
HEX = "0123456789abcdef"
MAX_VALUE = 16384      # bytes per staged value (a CA bundle fits)
SECRET_KEYS = ("password",)
APPEND_KEYS = ("ca",)


# Value validation (no ipaddress on MicroPython).

def _v4(addr):
    parts = addr.split(".")
    if len(parts) != 4:
        return None
    n = 0
    for p in parts:
        if not p.isdigit() or len(p) > 3 or int(p) > 255:
            return None
        n = n << 8 | int(p)
    return n


def _v6(addr):
    head, sep, tail = addr.partition("::")
    if "::" in tail:
        return None
    hs = head.split(":") if head else []
    ts = tail.split(":") if tail else []
    groups = hs + ts
    if sep:
        if len(groups) > 7:
            return None
        groups = hs + ["0"] * (8 - len(groups)) + ts
    if len(groups) != 8:
        return None
    n = 0
    for g in groups:
        g = g.lower()
        if not 1 <= len(g) <= 4 or [c for c in g if c not in HEX]:
            return None
        n = n << 16 | int(g, 16)
    return n


def is_prefix(text):
    addr, sep, plen = text.partition("/")
    if not sep or not plen.isdigit() or len(plen) > 3:
        return False
    plen = int(plen)
    if ":" in addr:
        n, bits = _v6(addr), 128
    else:
        n, bits = _v4(addr), 32
    return n is not None and plen <= bits and n & ((1 << (bits - plen)) - 1) == 0


def _is_name(v):
    return 0 < len(v) <= 31 and v[0] in "abcdefghijklmnopqrstuvwxyz0123456789" and \
        not [c for c in v if c not in "abcdefghijklmnopqrstuvwxyz0123456789-"]


def _is_b64_key(v):
    b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    return len(v) == 44 and v[43] == "=" and not [c for c in v[:43] if c not in b64]


def _check(key, v):
    """None when value `v` is acceptable for `key`, else the reason."""
    if key == "lan":
        bad = [p for p in v if not is_prefix(p)]
        return "%r is not an IP prefix" % bad[0] if bad else None
    if not isinstance(v, str) or not v:
        return "must be a non-empty string"
    if key in ("name", "fleet") and not _is_name(v):
        return "%r is not a name (a-z, 0-9, '-', up to 31)" % v
    if key == "fleet-key" and not _is_b64_key(v):
        return "is not a base64 Ed25519 public key (44 characters)"
    if key == "broker" and not (v.startswith("mqtt://") or v.startswith("mqtts://")) or \
            key == "broker" and len(v.split("://", 1)[1]) == 0:
        return "%r is not an mqtt:// or mqtts:// URL" % v
    if key == "username" and (len(v) > 64 or " " in v):
        return "must be up to 64 characters without spaces"
    if len(v) > MAX_VALUE:
        return "is longer than %d bytes" % MAX_VALUE
    return None


KEYS = ("name", "lan", "fleet", "fleet-key", "broker", "ca", "username", "password")
FLEET_REQUIRED = ("fleet", "fleet-key", "broker")


def parse_value(key, text):
    """Typed text -> value: JSON when it starts with '"' or '[', else the raw text; `lan`
    also takes comma/space separated prefixes. Raises ValueError with the reason."""
    text = text.strip()
    if text[:1] in ('"', "["):
        try:
            v = boundjson.loads(text, MAX_VALUE + 64, "value", max_depth=2)
        except ValueError:
            raise ValueError("is not valid JSON")
    else:
        v = text
    if key == "lan":
        if isinstance(v, str):
            v = [p for p in v.replace(",", " ").split() if p]
        if not isinstance(v, list) or not v or [p for p in v if not isinstance(p, str)]:
            raise ValueError("must be a list of IP prefixes")
    reason = _check(key, v)
    if reason:
        raise ValueError(reason)
    return v


def _redact(values):
    out = {}
    for k, v in values.items():
        if k in SECRET_KEYS:
            v = "(secret)" if v else None
        elif k == "ca" and v and not v.startswith("(PEM, "):   # idempotent: the agent's
            v = "(PEM, %d bytes)" % len(v)                        # summary is redacted already
        out[k] = v
    return out


def _merge(a, b):
    out = dict(a)
    out.update(b)
    return out


def _ok(data):
    return ("ok", data)


def _err(code, message):
    return ("err", code, message)


class Console:
    """Device end. receive_data(bytes) -> effects; after a Perform, call done(result) or
    failed(code, message) -> effects. `committed` summarises the committed state (no
    secrets): the KEYS values (ca/password redacted) plus "public_key"."""

    def __init__(self, committed=None, info=None, machine=False):
        self.committed = dict(committed or {})
        self.info = info or {}
        self.machine = machine
        self.staged = {}
        self.key = None          # public half of a new, uncommitted key (private: agent)
        self.awaiting = None     # key whose secret value is the next line
        self.last = None         # (seq, reply frame) replayed for a repeated seq
        self.lines = LineBuffer(MAX_LINE)
        self.queue = []
        self.pending = None      # (seq, action) while a Perform is out
        self.closed = False

    def provisioned(self):
        return bool(self.committed.get("name") and self.committed.get("public_key"))

    def receive_data(self, data):
        self.queue.extend(self.lines.feed(data))
        return self._drain()

    def _drain(self):
        out = []
        while self.queue and self.pending is None and not self.closed:
            out.extend(self._line(*self.queue.pop(0)))
        return out

    def _line(self, kind, raw):
        if kind == "long":
            return self._cancel_secret() + self._reply(
                0 if self.machine else None, _err("too-long", "line longer than %d bytes" % MAX_LINE))
        f = unframe(REQ, raw)
        if f is None and self.machine:
            return self._reply(0, _err("no-frame", "machine mode expects '#>SEQ REQUEST CRC32' lines"))
        if f == "crc":
            return self._reply(0, _err("bad-crc", "damaged frame"))
        out = []
        seq = None
        if f is not None:
            seq, raw = f
            if self.last and self.last[0] == seq:
                return [Write(self.last[1])]
            if not self.machine:
                self.machine = True
                out.append(SetMode("machine"))
        try:
            text = raw.decode()
        except UnicodeError:
            return out + self._cancel_secret() + self._reply(seq, _err("bad-utf8", "request is not UTF-8"))
        if self.awaiting:
            return out + self._secret(seq, text)
        return out + self._request(seq, text)

    def _cancel_secret(self):
        out = [SetEcho(True)] if self.awaiting and not self.machine else []
        self.awaiting = None
        return out

    def _secret(self, seq, text):
        key, self.awaiting = self.awaiting, None
        out = [] if self.machine else [SetEcho(True)]
        try:
            self.staged[key] = parse_value("password", text) if text[:1] == '"' else text
        except ValueError:
            return out + self._reply(seq, _err("bad-value", key + ": is not a valid JSON string"))
        return out + self._reply(seq, _ok({"set": key}))

    def _request(self, seq, text):
        words = text.strip().split(None, 1)
        if not words:
            return [] if self.machine else [Write(PROMPT.encode())]
        handler = COMMANDS.get(words[0])
        if handler is None:
            # Never echo the request: a secret sent out of turn would come straight back.
            result = _err("unknown-command", "unknown command; try 'help'")
        else:
            result = handler(self, words[1].strip() if len(words) > 1 else "")
        if result[0] == "perform":
            self.pending = (seq, result[1])
            return [Perform(result[1], result[2])]
        out = self._reply(seq, result)
        if len(result) > 2 and result[0] == "ok":
            out = out + result[2]  # effects that follow the reply (mode change, exit)
        return out

    def _reply(self, seq, result):
        if result[0] == "ok":
            line = "OK " + json.dumps(result[1], separators=(",", ":"))
        else:
            line = "ERR %s %s" % (result[1], result[2])
        pre = []
        if len(result) > 3:
            pre = result[3]  # effects that precede the reply (echo off before a secret)
        if self.machine or seq is not None:
            data = frame(REP, seq or 0, line)
            if seq:
                self.last = (seq, data)
        else:
            data = (line + "\r\n" + PROMPT).encode()
        return pre + [Write(data)]

    def done(self, result):
        seq, action = self.pending
        self.pending = None
        if action == "keygen":
            self.key = result["public_key"]
            reply = {"public_key": self.key, "new": True}
        elif action == "commit":
            old = self.committed.get("public_key")
            rekeyed = bool(old) and self.key is not None and self.key != old
            self.committed = dict(result["committed"])
            self.staged, self.key = {}, None
            reply = {"public_key": self.committed.get("public_key"), "changed": result["changed"],
                     "rekeyed": rekeyed and result["changed"], "generation": result.get("generation")}
        else:
            reply = result
        return self._reply(seq, _ok(reply)) + self._drain()

    def failed(self, code, message):
        seq, _ = self.pending
        self.pending = None
        return self._reply(seq, _err(code, message)) + self._drain()

    # --- commands: (self, argument text) -> ("ok", data[, after, before]) | ("err", code,
    # message) | ("perform", action, args)

    def cmd_help(self, arg):
        return _ok({"commands": sorted(COMMANDS), "keys": list(KEYS),
                    "usage": "set <key> <value> | append ca <chunk> | set-secret password | "
                             "keygen [rekey] | commit | abort | show config | status"})

    def cmd_hello(self, arg):
        return _ok({"protocol": VERSION, "software": self.info.get("software"),
                    "board": self.info.get("board"), "provisioned": self.provisioned(),
                    "name": self.committed.get("name"),
                    "public_key": self.committed.get("public_key")})

    def cmd_status(self, arg):
        return _ok({"mode": "machine" if self.machine else "plain",
                    "provisioned": self.provisioned(), "name": self.committed.get("name"),
                    "public_key": self.committed.get("public_key"),
                    "staged": sorted(self.staged), "new_key": self.key})

    def cmd_show(self, arg):
        if arg not in ("", "config"):
            return _err("bad-args", "usage: show config")
        return _ok({"committed": _redact(self.committed), "staged": _redact(self.staged),
                    "new_key": self.key})

    def cmd_keygen(self, arg):
        if arg not in ("", "rekey", "--rekey"):
            return _err("bad-args", "usage: keygen [rekey]")
        if not arg:
            if self.key:
                return _ok({"public_key": self.key, "new": True})
            if self.committed.get("public_key"):
                return _ok({"public_key": self.committed["public_key"], "new": False})
        return ("perform", "keygen", {})

    def cmd_pubkey(self, arg):
        pk = self.key or self.committed.get("public_key")
        return _ok({"public_key": pk}) if pk else _err("no-key", "no key yet; run keygen")

    def cmd_set(self, arg):
        key, _, text = arg.partition(" ")
        if key not in KEYS:
            return _err("bad-key", "unknown key; keys: %s" % " ".join(KEYS))
        if not text.strip():  # a set without a value reads it
            return _ok({key: _redact(_merge(self.committed, self.staged)).get(key)})
        if key in SECRET_KEYS:
            return _err("secret", "send %s with 'set-secret %s' (not echoed)" % (key, key))
        try:
            self.staged[key] = parse_value(key, text)
        except ValueError as e:
            return _err("bad-value", "%s: %s" % (key, e.args[0]))
        return _ok({"set": key})

    def cmd_append(self, arg):
        key, _, text = arg.partition(" ")
        if key not in APPEND_KEYS:
            return _err("bad-key", "append works for: %s" % " ".join(APPEND_KEYS))
        try:
            chunk = boundjson.loads(text, MAX_LINE, "chunk", max_depth=1) if text[:1] == '"' else text
        except ValueError:
            return _err("bad-value", "%s: chunk is not a JSON string" % key)
        value = self.staged.get(key, "") + chunk
        if len(value) > MAX_VALUE:
            return _err("too-long", "%s: longer than %d bytes" % (key, MAX_VALUE))
        self.staged[key] = value
        return _ok({"set": key, "length": len(value)})

    def cmd_set_secret(self, arg):
        if arg not in SECRET_KEYS:
            return _err("bad-key", "secret keys: %s" % " ".join(SECRET_KEYS))
        self.awaiting = arg
        before = [] if self.machine else [SetEcho(False)]
        return ("ok", {"awaiting": arg}, [], before)

    def cmd_commit(self, arg):
        merged = _merge(self.committed, self.staged)
        if not merged.get("name"):
            return _err("incomplete", "name: not set")
        if not (self.key or self.committed.get("public_key")):
            return _err("no-key", "no key yet; run keygen first")
        if [k for k in KEYS if k != "name" and k != "lan" and merged.get(k)]:
            missing = [k for k in FLEET_REQUIRED if not merged.get(k)]
            if missing:
                return _err("incomplete", "fleet settings need: %s" % " ".join(missing))
        ca = self.staged.get("ca")
        if ca and ("-----BEGIN CERTIFICATE-----" not in ca or "-----END CERTIFICATE-----" not in ca):
            return _err("bad-value", "ca: not a PEM certificate")
        return ("perform", "commit", {"values": dict(self.staged), "new_key": self.key})

    def cmd_abort(self, arg):
        dropped = sorted(self.staged) + (["key"] if self.key else [])
        self.staged, self.key, self.awaiting = {}, None, None
        return _ok({"aborted": dropped})

    def cmd_reboot(self, arg):
        if self.staged or self.key:
            return _err("staged", "uncommitted changes; commit or abort first")
        return ("perform", "reboot", {})

    def cmd_machine(self, arg):
        self.machine = True
        return ("ok", {"mode": "machine"}, [], [SetMode("machine")])

    def cmd_plain(self, arg):
        if not self.machine:
            return _ok({"mode": "plain"})
        self.machine = False
        # The tty goes back first, so whatever the tool types after the reply is cooked.
        return ("ok", {"mode": "plain"}, [], [SetMode("plain")])

    def cmd_exit(self, arg):
        self.closed = True
        return ("ok", {"bye": True}, [Exit()], [SetMode("plain")] if self.machine else [])


COMMANDS = {
    "help": Console.cmd_help, "hello": Console.cmd_hello, "status": Console.cmd_status,
    "show": Console.cmd_show, "keygen": Console.cmd_keygen, "pubkey": Console.cmd_pubkey,
    "set": Console.cmd_set, "append": Console.cmd_append, "set-secret": Console.cmd_set_secret,
    "commit": Console.cmd_commit, "abort": Console.cmd_abort, "reboot": Console.cmd_reboot,
    "machine": Console.cmd_machine, "plain": Console.cmd_plain, "exit": Console.cmd_exit,
    "quit": Console.cmd_exit,
}
