# `lanmesh provision`: enrol a router over its serial console. Wakes the console, starts
# the device agent, and drives it through the machine-mode protocol: the device makes
# its own WireGuard key (the private half never crosses the wire), receives the fleet
# settings, commits them atomically and answers with its public key. Each step prints a
# progress line; a failure names its step. Re-running is safe: the key is kept unless
# --rekey, and an unchanged node commits nothing.
import argparse
import csv
import json
import os
import random
import sys
import time

from ..errors import LanmeshError
from ..console import protocol
from . import shell

CHUNK = 600   # CA characters per line (the device bounds a line at protocol.MAX_LINE)


class ProvisionError(LanmeshError):
    def __init__(self, step, message):
        self.step = step
        super().__init__("%s: %s" % (step, message))


class Link:
    """Requests over a pyserial port through protocol.Host: retries, resync, timeouts."""

    def __init__(self, port, retry_ms=700, tries=8):
        self.port = port
        self.host = protocol.Host(seq=random.randrange(1000, 1 << 30), retry_ms=retry_ms, tries=tries)

    @staticmethod
    def now():
        return int(time.monotonic() * 1000)

    def request(self, step, payload):
        self.port.write(self.host.request(payload, self.now()))
        while True:
            data = self.port.read(self.port.in_waiting or 1)
            now = self.now()
            events = (self.host.receive_data(data, now) if data else []) + self.host.tick(now)
            for e in events:
                if isinstance(e, protocol.Resend):
                    self.port.write(e.args[0])
                elif isinstance(e, protocol.GaveUp):
                    raise ProvisionError(step, "no reply from the device agent after %d tries "
                                               "(cable pulled? agent not running?)" % self.host.tries)
                elif isinstance(e, protocol.Reply):
                    _, ok, value = e.args
                    if not ok:
                        raise ProvisionError(step, "device said ERR %s %s" % value)
                    return value


class Node:
    """What to provision: the node and its fleet settings (secrets as values, in memory)."""

    def __init__(self, name, lan, fleet=None, fleet_key=None, broker=None, ca=None,
                 username=None, password=None):
        self.name, self.lan = name, list(lan)
        self.fleet, self.fleet_key, self.broker = fleet, fleet_key, broker
        self.ca, self.username, self.password = ca, username, password

    def settings(self):
        """(key, value) pairs sent with `set`, in order; ca and password go separately."""
        out = [("name", self.name), ("lan", self.lan)]
        for key, value in (("fleet", self.fleet), ("fleet-key", self.fleet_key),
                           ("broker", self.broker), ("username", self.username or
                                                      (self.name if self.fleet else None))):
            if value:
                out.append((key, value))
        return out

    def check(self):
        from ..prefix import parse_prefix
        from ..console.session import parse_value
        for key, value in self.settings():
            try:
                parse_value(key, json.dumps(value))
            except ValueError as e:
                raise ProvisionError("check", "%s: %s" % (key, e.args[0]))
        for p in self.lan:
            try:
                parse_prefix(p)
            except ValueError as e:
                raise ProvisionError("check", "lan: %r %s" % (p, e))
        missing = [what for what, v in (("--fleet-key", self.fleet_key), ("--broker", self.broker))
                   if self.fleet and not v]
        if missing:
            raise ProvisionError("check", "fleet %s needs %s (or a --fleet-dir that has it: "
                                 "`lanmesh fleet config broker=URL ca=FILE`)"
                                 % (self.fleet, " and ".join(missing)))


def register_node(fleet_dir, name, public_key, lan, endpoints=None):
    """The call site for the fleet registry: -> what happened ("added", "unchanged",
    "updated: ...") or None when nothing was written (no --fleet-dir given). A node that is
    registered already is updated in place (a rekey, a new LAN): its addresses stay."""
    if not fleet_dir:
        return None
    from .controller import FleetDir
    reg = FleetDir(fleet_dir).registry
    old = reg.node(name)
    try:
        if old is None:
            reg.add_node(name, public_key, lan, endpoints or ())
            return "added"
        _, new = reg.set_node(name, public_key=public_key, lan=lan, endpoints=endpoints)
    except LanmeshError as e:
        raise ProvisionError("register", str(e))
    changed = [k for k in ("public_key", "lan", "endpoints") if old[k] != new[k]]
    if not changed:
        return "unchanged"
    return "updated (%s; addresses kept)" % ", ".join(
        "new key" if k == "public_key" else k for k in changed)


def fleet_defaults(fleet_dir):
    """Fleet public key, broker and CA file from a fleet directory, when one is given."""
    out = {}
    if not fleet_dir:
        return out
    try:
        with open(os.path.join(fleet_dir, "signing.pub")) as f:
            out["fleet_key"] = f.read().strip()
        from .controller import FleetDir
        reg = FleetDir(fleet_dir).registry
        out.update(fleet=reg.fleet, broker=reg.get("broker"), ca_file=reg.get("ca_file"))
    except (OSError, ImportError, LanmeshError):
        pass
    return out


def _json(v):
    return json.dumps(v, separators=(",", ":"))


def provision(port, node, login=None, login_password=None, agent_cmd="lanmesh console",
              rekey=False, dry_run=False, retry_ms=700, tries=8, out=print, wake_timeout=20.0):
    """Provision one device on an open pyserial port; -> summary dict. Raises
    ProvisionError naming the failed step."""
    t0 = time.monotonic()
    node.check()
    steps = ["wake console", "start agent", "hello", "clear staged values", "key",
             "send settings", "send password", "commit", "verify", "leave agent"]
    state = {"n": 0}

    def step(name, detail=""):
        state["n"] += 1
        out("[%d/%d] %-20s %s" % (state["n"], len(steps), name, detail))

    link = Link(port, retry_ms, tries)
    try:
        found = shell.wake(port, login, login_password, wake_timeout, probe_seq=link.host.seq)
    except shell.ShellError as e:
        raise ProvisionError("wake console", str(e))
    step("wake console", {"shell": "shell prompt", "agent": "agent already running (plain)",
                          "machine": "agent already running (machine mode)"}[found])
    if found == "shell":
        try:
            shell.start_agent(port, agent_cmd)
        except shell.ShellError as e:
            raise ProvisionError("start agent", str(e))
        step("start agent", agent_cmd)
    else:
        step("start agent", "(running)")
    hello = link.request("hello", "hello")
    if hello.get("protocol") != protocol.VERSION:
        raise ProvisionError("hello", "device speaks protocol %r, this tool %d"
                             % (hello.get("protocol"), protocol.VERSION))
    step("hello", "lanmesh %s on %s, %s" % (hello.get("software"), _board(hello.get("board")),
                                            "provisioned as %s" % hello["name"] if hello.get("provisioned")
                                            else "not provisioned"))
    link.request("clear staged values", "abort")
    step("clear staged values")
    if dry_run:
        key = {"public_key": hello.get("public_key"), "new": not hello.get("public_key") or rekey}
        step("key", "(dry run) would %s" % ("generate a new key" if key["new"] else "keep the key"))
    else:
        key = link.request("key", "keygen rekey" if rekey else "keygen")
        step("key", ("rotated: " if rekey and hello.get("public_key") else
                     "new: " if key["new"] else "kept: ") + key["public_key"])
    for k, v in node.settings():
        link.request("send settings", "set %s %s" % (k, _json(v)))
    if node.ca:
        for i in range(0, len(node.ca), CHUNK):
            link.request("send settings", "%s ca %s" % ("set" if i == 0 else "append",
                                                        _json(node.ca[i:i + CHUNK])))
    step("send settings", ", ".join(k for k, _ in node.settings()) + (", ca" if node.ca else ""))
    if node.password:
        link.request("send password", "set-secret password")
        link.request("send password", _json(node.password))
    step("send password", "sent, not echoed" if node.password else "(none)")
    if dry_run:
        link.request("commit", "abort")
        step("commit", "(dry run) values accepted by the device, nothing committed")
        result = {"public_key": key["public_key"], "changed": False, "rekeyed": False}
    else:
        result = link.request("commit", "commit")
        step("commit", "generation %s%s" % (result.get("generation"), "" if result["changed"]
                                            else " (unchanged, nothing written)"))
        check = link.request("verify", "hello")
        if not check.get("provisioned") or check.get("public_key") != result["public_key"]:
            raise ProvisionError("verify", "device reports %r after commit" % (check,))
        step("verify", "provisioned as %s" % check["name"])
    link.request("leave agent", "exit")
    step("leave agent")
    return {"name": node.name, "lan": node.lan, "public_key": result["public_key"],
            "new_key": bool(key.get("new")) and not dry_run, "rekeyed": bool(result.get("rekeyed")),
            "changed": result["changed"], "board": hello.get("board"),
            "seconds": round(time.monotonic() - t0, 2), "dry_run": dry_run}


def _board(b):
    if isinstance(b, dict):
        return b.get("model") or b.get("board_name") or b.get("machine") or "unknown board"
    return str(b or "unknown board")


def _read(path, what):
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        raise ProvisionError("check", "%s %s: %s" % (what, path, e.strerror))


def _node(args, name, lan):
    """-> (Node, (broker dir, password) to record once the device committed it, or None)."""
    d = fleet_defaults(args.fleet_dir)
    if not args.fleet and d.get("fleet"):
        args.fleet = d["fleet"]
    ca_file = args.ca_file or d.get("ca_file")
    password = args.password_file and _read(args.password_file, "password file").strip()
    credential = None
    if not password and args.fleet and args.fleet_dir and not args.username:
        # One pass over the cable: the node's broker account comes from the fleet directory
        # (the one it has, or a new one recorded once the device committed it).
        from .brokerconf import node_credential
        from .controller import FleetDir
        broker_dir = FleetDir(args.fleet_dir).broker_dir
        password = node_credential(broker_dir, name)
        credential = (broker_dir, password)
    return Node(name, lan, fleet=args.fleet,
                fleet_key=args.fleet_key or (args.fleet_key_file and _read(args.fleet_key_file, "fleet key").strip())
                or d.get("fleet_key"),
                broker=args.broker or d.get("broker"), ca=ca_file and _read(ca_file, "CA file"),
                username=args.username, password=password), credential



def _one(args, port_path, name, lan, out):
    import serial
    login_password = args.login_password_file and _read(args.login_password_file, "login password").strip()
    node, credential = _node(args, name, lan)
    try:
        port = serial.Serial(port_path, args.baud, timeout=0.05)
    except (serial.SerialException, OSError) as e:
        raise ProvisionError("open port", "%s: %s" % (port_path, e))
    with port:
        s = provision(port, node, args.login, login_password, args.agent_cmd, args.rekey,
                      args.dry_run, tries=args.tries, out=out)
    _summary(args, s, port_path, out, credential)
    return s


def _summary(args, s, port_path, out, credential=None):
    verb = "checked (dry run)" if s["dry_run"] else "provisioned"
    out("%s %s on %s in %.1f s" % (verb, s["name"], port_path, s["seconds"]))
    how = "rotated (--rekey)" if s["rekeyed"] else "new" if s["new_key"] else "kept"
    out("  public key  %s (%s)" % (s["public_key"], how))
    out("  lan         %s" % " ".join(s["lan"]))
    out("  board       %s" % _board(s["board"]))
    if args.fleet:
        out("  fleet       %s" % args.fleet)
    if s["dry_run"]:
        return
    if not s["changed"]:
        out("  device      unchanged (already provisioned with these values)")
    done = register_node(args.fleet_dir, s["name"], s["public_key"], s["lan"],
                         args.endpoint or None)
    if done:
        out("  registry    %s in %s" % (done, args.fleet_dir))
        if done != "unchanged":
            out("  next        lanmesh fleet publish --dir %s   (the router takes it by itself%s)"
                % (args.fleet_dir, "; it runs on its previous key until then" if s["rekeyed"] else ""))
    else:
        out("  registry    nothing written (no --fleet-dir); register the node with:")
        out("    lanmesh fleet node add %s --public-key %s %s" % (
            s["name"], s["public_key"], " ".join(["--lan %s" % p for p in s["lan"]] +
                                                 ["--endpoint %s" % e for e in args.endpoint])))
    if credential is not None:
        from .brokerconf import add_node_credential
        broker_dir, password = credential
        if add_node_credential(broker_dir, s["name"], password):
            out("  broker      account %s added to %s/passwd (reload the broker: SIGHUP)"
                % (s["name"], broker_dir))
        else:
            out("  broker      account %s unchanged" % s["name"])


def _batch(args, out):
    try:
        with open(args.batch, newline="") as f:
            rows = [r for r in csv.DictReader(f) if any((v or "").strip() for v in r.values())]
    except OSError as e:
        raise ProvisionError("batch", "%s: %s" % (args.batch, e.strerror))
    failed = 0
    for i, r in enumerate(rows, 1):
        try:
            name, lan, port = r["name"].strip(), r["lan"].replace(";", " ").split(), r["port"].strip()
        except (KeyError, AttributeError):
            raise ProvisionError("batch", "%s row %d: needs columns name,lan,port" % (args.batch, i))
        out("== %d/%d %s on %s" % (i, len(rows), name, port))
        try:
            _one(args, port, name, lan, out)
        except LanmeshError as e:
            failed += 1
            out("FAILED %s: %s" % (name, e))
    out("batch: %d provisioned, %d failed" % (len(rows) - failed, failed))
    return 1 if failed else 0


def add_arguments(p):
    p.add_argument("--port", help="serial device, e.g. /dev/ttyUSB0")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--name", help="node name")
    p.add_argument("--lan", action="append", default=[], help="site prefix (repeatable)")
    p.add_argument("--endpoint", action="append", default=[],
                   help="the router's public host:port (repeatable; for the registry)")
    p.add_argument("--fleet", help="fleet name (default: the --fleet-dir's)")
    p.add_argument("--fleet-dir", help="fleet registry directory")
    p.add_argument("--fleet-key", help="fleet Ed25519 public key (base64)")
    p.add_argument("--fleet-key-file", help="file holding the fleet public key")
    p.add_argument("--broker", help="mqtts://host:port")
    p.add_argument("--ca-file", help="broker CA certificate (PEM)")
    p.add_argument("--username", help="MQTT user name (default: the node name)")
    p.add_argument("--password-file", help="file holding the node's MQTT password")
    p.add_argument("--login", help="console login user, if the console asks")
    p.add_argument("--login-password-file", help="file holding the console login password")
    p.add_argument("--agent-cmd", default="lanmesh console", help="device command (default %(default)r)")
    p.add_argument("--rekey", action="store_true", help="replace the device's key")
    p.add_argument("--dry-run", action="store_true", help="check everything, commit nothing")
    p.add_argument("--batch", help="CSV with columns name,lan,port: provision each row")
    p.add_argument("--tries", type=int, default=8, help="attempts per request (default %(default)s)")


def run(args, out=print):
    try:
        if args.batch:
            return _batch(args, out)
        if not (args.port and args.name and args.lan):
            raise ProvisionError("check", "--port, --name and --lan are required (or --batch)")
        _one(args, args.port, args.name, args.lan, out)
        return 0
    except LanmeshError as e:
        out("provisioning failed at %s" % e)
        return 1


def register(subparsers):
    """Adds `lanmesh provision` to the lead's CLI."""
    p = subparsers.add_parser("provision", help="enrol a router over its serial console")
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def main(argv=None, out=print):
    p = argparse.ArgumentParser(prog="lanmesh provision")
    add_arguments(p)
    return run(p.parse_args(argv), out=out)


if __name__ == "__main__":
    sys.exit(main())
