# Device agent `lanmesh console`: serves the console session core on a tty (stdin/stdout
# or --port), performs its effects, and owns the on-device state. Commit is atomic: every
# file of the new state goes into a fresh directory provisioned/<gen>/, and node.json,
# replaced last with one rename, is the single commit point that points into it. A cut or
# a crash at any moment leaves the old node.json (old state) or the new one (new state).
import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys

from .. import __version__
from ..atomic import write_atomic
from ..errors import LanmeshError
from . import session

GENS = "provisioned"


def board_info():
    """Board facts for `hello`: lanmesh.board.detect() when the packaging module exists."""
    try:
        from .. import board
        info = board.detect()
        if isinstance(info, dict):  # the board config is long: hello carries who it is
            det = info.get("detected") or {}
            return {"id": info.get("id"), "name": info.get("name"), "model": det.get("model"),
                    "board_name": det.get("board_name"), "machine": det.get("machine")}
        return {"board": str(info)}
    except (ImportError, AttributeError):
        pass
    info = {"machine": os.uname().machine}
    for key, path in (("board_name", "/tmp/sysinfo/board_name"), ("model", "/proc/device-tree/model")):
        try:
            with open(path, "rb") as f:
                info[key] = f.read(256).decode("utf-8", "replace").strip("\0 \n")
        except OSError:
            info[key] = None
    return info


def _write(path, data, mode):
    """Create a new file with `mode` from the start, fsynced (the temp directory is ours)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Store:
    """The committed state in a config directory: load it, commit a new one atomically."""

    def __init__(self, config_dir):
        self.dir = os.path.abspath(config_dir)
        self.node_path = os.path.join(self.dir, "node.json")
        self.gens = os.path.join(self.dir, GENS)

    def _path(self, p):
        return os.path.join(self.dir, p)

    def _read(self, path):
        try:
            with open(self._path(path)) as f:
                return f.read()
        except OSError:
            return None

    def read_node(self):
        try:
            with open(self.node_path) as f:
                node = json.load(f)
            return node if isinstance(node, dict) else None
        except (OSError, ValueError):
            return None

    def load(self):
        """(values, private key) of the committed state; values hold secrets: agent only."""
        from ..keys import read_private_key
        node = self.read_node()
        if not node or not node.get("name"):
            return {}, None
        fleet = node.get("fleet") or {}
        values = {"name": node["name"], "fleet": fleet.get("name"), "fleet-key": fleet.get("public_key"),
                  "broker": fleet.get("broker"), "username": fleet.get("username"),
                  "ca": self._read(fleet["ca_file"]) if fleet.get("ca_file") else None,
                  "password": self._read(fleet["password_file"]) if fleet.get("password_file") else None}
        keyfile = self._path(node.get("private_key_file", "/etc/lanmesh/private.key"))
        try:
            private = read_private_key(keyfile)
        except LanmeshError:
            private = None
        record = self._read(os.path.join(os.path.dirname(keyfile), "provision.json"))
        try:
            values["lan"] = json.loads(record)["lan"] if record else None
        except (ValueError, KeyError, TypeError):
            values["lan"] = None
        return {k: v for k, v in values.items() if v is not None}, private

    def generation(self):
        node = self.read_node() or {}
        parts = str(node.get("private_key_file", "")).split("/")
        if len(parts) == 3 and parts[0] == GENS and parts[1].isdigit():
            return int(parts[1])
        return None

    def commit(self, staged, new_private):
        """Merge `staged` over the committed values and commit; -> (changed, generation)."""
        old, old_private = self.load()
        values = dict(old, **staged)
        private = new_private or old_private
        if private is None:
            raise LanmeshError("no private key to commit (run keygen)")
        current = self.generation()
        if values == old and private == old_private and current is not None:
            return False, current  # re-provisioning with the same values: nothing to write
        gen = max([current or 0] + self._gens()) + 1
        tmp = os.path.join(self.gens, ".new-%d" % gen)
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp, mode=0o700)
        _write(os.path.join(tmp, "private.key"), private + "\n", 0o600)
        if old_private and private != old_private:
            # A rekey: the running router keeps the old key beside the new one until the
            # fleet's document names the new key (lanmesh.daemon, PREVIOUS_KEY).
            _write(os.path.join(tmp, "private.key.prev"), old_private + "\n", 0o600)
        from ..keys import pubkey
        record = {"lan": values.get("lan", []), "public_key": pubkey(private), "software": __version__}
        _write(os.path.join(tmp, "provision.json"), json.dumps(record, indent=2) + "\n", 0o644)
        rel = "%s/%d/" % (GENS, gen)
        node = dict(self.read_node() or {})
        node["name"] = values["name"]
        node["private_key_file"] = rel + "private.key"
        if values.get("fleet"):
            fleet = {"name": values["fleet"], "public_key": values["fleet-key"],
                     "broker": values["broker"], "username": values.get("username") or values["name"]}
            if (node.get("fleet") or {}).get("topic_prefix"):
                fleet["topic_prefix"] = node["fleet"]["topic_prefix"]
            if values.get("ca"):
                _write(os.path.join(tmp, "ca.pem"), values["ca"], 0o644)
                fleet["ca_file"] = rel + "ca.pem"
            if values.get("password"):
                _write(os.path.join(tmp, "mqtt.pass"), values["password"], 0o600)
                fleet["password_file"] = rel + "mqtt.pass"
            node["fleet"] = fleet
        else:
            node.pop("fleet", None)
        try:
            self._validate(node)
        except LanmeshError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(tmp)
        os.rename(tmp, os.path.join(self.gens, str(gen)))
        _fsync_dir(self.gens)
        # The commit point: before this rename the old node.json (and its files) is live.
        write_atomic(self.node_path, json.dumps(node, indent=2, sort_keys=True) + "\n")
        self.collect()
        return True, gen

    def _validate(self, node):
        try:
            from ..config import parse_config
        except ImportError:
            return
        parse_config(node, self.node_path)

    def _gens(self):
        try:
            return [int(n) for n in os.listdir(self.gens) if n.isdigit()]
        except OSError:
            return []

    def collect(self):
        """Remove generations node.json no longer points to and leftovers of cut commits."""
        keep = self.generation()
        if keep is None and self.read_node() is None and os.path.exists(self.node_path):
            return  # unreadable node.json: touch nothing
        try:
            names = os.listdir(self.gens)
        except OSError:
            return
        for n in names:
            if n.startswith(".new-") or (n.isdigit() and int(n) != keep):
                shutil.rmtree(os.path.join(self.gens, n), ignore_errors=True)


def summary(values, private):
    """What the session core may know about the committed state: no secrets."""
    from ..keys import pubkey
    out = session._redact(values)
    if private:
        out["public_key"] = pubkey(private)
    return out


class Terminal:
    """The agent's tty: raw and silent in machine mode, as found in plain mode."""

    def __init__(self, fd):
        import termios
        self.termios = termios
        self.fd = fd
        self.saved = termios.tcgetattr(fd) if os.isatty(fd) else None

    def mode(self, name):
        if self.saved is None:
            return
        if name == "machine":
            import tty
            tty.setraw(self.fd, self.termios.TCSADRAIN)
        else:
            self.restore()

    def echo(self, on):
        if self.saved is None:
            return
        t = self.termios
        attrs = t.tcgetattr(self.fd)
        attrs[3] = (attrs[3] | t.ECHO) if on else (attrs[3] & ~t.ECHO) | t.ECHONL
        t.tcsetattr(self.fd, t.TCSADRAIN, attrs)

    def restore(self):
        if self.saved is not None:
            self.termios.tcsetattr(self.fd, self.termios.TCSADRAIN, self.saved)


class Agent:
    """Glue: bytes from the tty -> session core -> effects performed here."""

    def __init__(self, fd_in, fd_out, store, reboot_cmd="reboot", machine=False):
        self.fd_in, self.fd_out = fd_in, fd_out
        self.store = store
        self.reboot_cmd = reboot_cmd
        self.term = Terminal(fd_in)
        store.collect()
        values, private = store.load()
        info = {"software": __version__, "board": board_info()}
        self.console = session.Console(summary(values, private), info, machine)
        self.new_private = None  # generated by keygen, lives here until commit
        self.running = True

    def write(self, data):
        while data:
            data = data[os.write(self.fd_out, data):]

    def run(self, effects):
        for e in effects:
            if isinstance(e, session.Write):
                self.write(e.args[0])
            elif isinstance(e, session.SetMode):
                self.term.mode(e.args[0])
            elif isinstance(e, session.SetEcho):
                self.term.echo(e.args[0])
            elif isinstance(e, session.Perform):
                self.run(self.perform(*e.args))
            elif isinstance(e, session.Exit):
                self.running = False
        if self.console.key is None:
            self.new_private = None  # aborted or committed: forget it

    def perform(self, action, args):
        c = self.console
        try:
            if action == "keygen":
                from ..keys import genkey, pubkey
                self.new_private = genkey()
                return c.done({"public_key": pubkey(self.new_private)})
            if action == "commit":
                changed, gen = self.store.commit(args["values"], self.new_private if args["new_key"] else None)
                return c.done({"committed": summary(*self.store.load()), "changed": changed,
                               "generation": gen})
            if action == "reboot":
                subprocess.Popen(shlex.split(self.reboot_cmd))
                return c.done({"rebooting": True})
            return c.failed("internal", "unknown action %s" % action)
        except LanmeshError as e:
            return c.failed("invalid", str(e).replace("\n", " "))
        except OSError as e:
            return c.failed("io", "%s: %s" % (e.filename or action, e.strerror))

    def serve(self):
        if not self.console.machine:
            self.write(("lanmesh console %s (protocol %d): type 'help'\r\n%s"
                        % (__version__, session.VERSION, session.PROMPT)).encode())
        else:
            self.term.mode("machine")
        try:
            while self.running:
                try:
                    data = os.read(self.fd_in, 4096)
                except OSError:
                    break  # EIO: the tty hung up
                if not data:
                    break
                self.run(self.console.receive_data(data))
        finally:
            self.term.restore()


def _open_port(path, baud):
    import termios
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    attrs = termios.tcgetattr(fd)
    speed = getattr(termios, "B%d" % baud)
    attrs[4] = attrs[5] = speed
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return fd


def register(subparsers):
    """Adds `lanmesh console` to the lead's CLI."""
    p = subparsers.add_parser("console", help="serve the provisioning console on a tty")
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def add_arguments(p):
    p.add_argument("--config-dir", default="/etc/lanmesh", help="where node.json lives (default %(default)s)")
    p.add_argument("--port", help="serve this serial device instead of stdin/stdout")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--machine", action="store_true", help="start in machine mode")
    p.add_argument("--reboot-cmd", default="reboot", help="what `reboot` runs (default %(default)s)")


def run(args):
    if args.port:
        fd_in = fd_out = _open_port(args.port, args.baud)
    else:
        fd_in, fd_out = sys.stdin.fileno(), sys.stdout.fileno()
    Agent(fd_in, fd_out, Store(args.config_dir), args.reboot_cmd, args.machine).serve()
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="lanmesh console", description=register.__doc__)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
