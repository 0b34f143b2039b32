# The node config (docs/FORMATS.md): one model, read from JSON here and from UCI by
# lanmesh.uci. Paths are resolved relative to the config file, so a test or an image
# builder can keep a whole node in one directory.
import os
import re

from . import boundjson
from .errors import ConfigError

NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,30}\Z")     # \Z: "$" would take a trailing newline
IFNAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}\Z")
BACKENDS = ("auto", "kernel", "uapi")
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULTS = {
    "interface": "lanmesh0",
    "backend": "auto",
    "private_key_file": "/etc/lanmesh/private.key",
    "document": "/etc/lanmesh/network.json",
    "state_dir": "/var/lib/lanmesh",
    "run_dir": "/var/run/lanmesh",
    "listen_port": None,
    "log_level": "info",
    "fleet": None,
}
FLEET_KEYS = ("name", "public_key", "broker", "ca_file", "username", "password_file",
              "cert_file", "key_file", "topic_prefix", "min_version", "keepalive",
              "report_interval", "package_format", "board", "package_manager",
              "package_root", "restart_command", "confirm_window")
_PATH_KEYS = ("private_key_file", "document", "state_dir", "run_dir")
_FLEET_PATH_KEYS = ("ca_file", "password_file", "cert_file", "key_file")


class NodeConfig:
    """Validated node config; attributes mirror the JSON keys."""

    def __init__(self, d, path=None):
        self.path = path
        self.raw = d
        self.name = d["name"]
        for k, v in DEFAULTS.items():
            setattr(self, k, d.get(k, v))
        self.fleet = dict(d["fleet"]) if d.get("fleet") else None

    @property
    def control_socket(self):
        return os.path.join(self.run_dir, self.interface + ".sock")

    @property
    def last_good_document(self):
        return os.path.join(self.state_dir, "last-good.json")

    @property
    def version_floor(self):
        """Highest document version ever verified (fleet routers): never gone below."""
        return os.path.join(self.state_dir, "version-floor")


def parse_config(d, path=None):
    """dict → NodeConfig; ConfigError listing every problem."""
    where = path or "config"
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: must be a JSON object")
    p = []
    for k in sorted(set(d) - set(DEFAULTS) - {"name", "comment"}):
        p.append(f"{k}: unknown setting")
    name = d.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        p.append(f"name: {name!r} is not a node name (a-z, 0-9, '-', up to 31; required)")
    ifname = d.get("interface", DEFAULTS["interface"])
    if not isinstance(ifname, str) or not IFNAME_RE.match(ifname):
        p.append(f"interface: {ifname!r} is not an interface name (up to 15 characters)")
    if d.get("backend", "auto") not in BACKENDS:
        p.append(f"backend: {d.get('backend')!r} is not one of {', '.join(BACKENDS)}")
    if d.get("log_level", "info") not in LOG_LEVELS:
        p.append(f"log_level: {d.get('log_level')!r} is not one of {', '.join(LOG_LEVELS)}")
    port = d.get("listen_port")
    if port is not None and (not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535):
        p.append(f"listen_port: {port!r} is not a port (1-65535) or null")
    for k in _PATH_KEYS:
        if k in d and (not isinstance(d[k], str) or not d[k]):
            p.append(f"{k}: {d[k]!r} must be a path")
    fleet = d.get("fleet")
    if fleet is not None:
        if not isinstance(fleet, dict):
            p.append(f"fleet: {fleet!r} must be an object or absent")
        else:
            for k in sorted(set(fleet) - set(FLEET_KEYS)):
                p.append(f"fleet.{k}: unknown setting")
            for k in ("name", "public_key", "broker"):
                if not isinstance(fleet.get(k), str) or not fleet.get(k):
                    p.append(f"fleet.{k}: {fleet.get(k)!r} is required")
            mv = fleet.get("min_version")
            if mv is not None and (not isinstance(mv, int) or isinstance(mv, bool) or mv < 1):
                p.append(f"fleet.min_version: {mv!r} is not a positive integer")
            for k in ("keepalive", "report_interval"):
                v = fleet.get(k)
                if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 2 <= v <= 3600):
                    p.append(f"fleet.{k}: {v!r} is not a number of seconds (2-3600)")
            pf = fleet.get("package_format")
            if pf is not None and pf not in ("ipk", "apk", "deb"):
                p.append(f"fleet.package_format: {pf!r} is not ipk, apk or deb (default: the "
                         f"package manager found)")
            if fleet.get("board") is not None and (not isinstance(fleet["board"], str) or
                                                   not fleet["board"]):
                p.append(f"fleet.board: {fleet['board']!r} is not a board id")
            for k in ("package_manager", "package_root", "restart_command"):
                v = fleet.get(k)
                if v is not None and (not isinstance(v, str) or not v or "'" in v or "\n" in v):
                    p.append(f"fleet.{k}: {v!r} is not a command or path (no quotes, one line)")
            cw = fleet.get("confirm_window")
            if cw is not None and (not isinstance(cw, int) or isinstance(cw, bool) or
                                   not 10 <= cw <= 3600):
                p.append(f"fleet.confirm_window: {cw!r} is not a number of seconds (10-3600)")
    if p:
        raise ConfigError(f"{where}: " + "; ".join(p))
    d = dict(d)
    base = os.path.dirname(os.path.abspath(path)) if path else os.getcwd()
    for k in _PATH_KEYS:
        if k in d:
            d[k] = os.path.join(base, d[k])
    if d.get("fleet"):
        d["fleet"] = dict(d["fleet"])
        for k in _FLEET_PATH_KEYS:
            if d["fleet"].get(k):
                d["fleet"][k] = os.path.join(base, d["fleet"][k])
        d["fleet"].setdefault("topic_prefix", f"lanmesh/{d['fleet']['name']}/")
    return NodeConfig(d, path)


def load_config(path):
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except FileNotFoundError:
        raise ConfigError(f"{path}: node config not found") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read node config: {e.strerror}") from None
    return loads_config(data, path)


def loads_config(data, path):
    """Node config bytes (as read from `path`) → NodeConfig; ConfigError otherwise."""
    try:
        d = boundjson.loads(data, 1 << 20, path)
    except boundjson.JsonError as e:
        raise ConfigError(str(e)) from None
    return parse_config(d, path)
