# UCI: OpenWrt's config syntax (/etc/config/<package>). One config model, two syntaxes:
# load_uci() turns /etc/config/lanmesh into the same dict as node.json (docs/FORMATS.md),
# dump_uci() writes it back. The generic parse()/dumps() also serve the test stub `uci`.
#
#   config node 'node'        -> top-level node.json keys
#   config fleet 'fleet'      -> node.json "fleet" (no section = local document only)
#   config service 'service'  -> OpenWrt-only settings (init script, firewall, console)
from .errors import ConfigError

# option -> kind; every node.json key has exactly one UCI option of the same name.
NODE_OPTIONS = {"name": "str", "comment": "str", "interface": "str", "backend": "str",
                "private_key_file": "path", "document": "path", "state_dir": "path",
                "run_dir": "path", "listen_port": "port", "log_level": "str"}
FLEET_OPTIONS = {"name": "str", "public_key": "str", "broker": "str", "ca_file": "path",
                 "username": "str", "password_file": "path", "cert_file": "path",
                 "key_file": "path", "topic_prefix": "str", "min_version": "int",
                 "keepalive": "int", "report_interval": "int", "package_format": "str",
                 "board": "str", "package_manager": "str", "package_root": "str",
                 "restart_command": "str", "confirm_window": "int"}
# Not part of node.json: read by the init script, uci-defaults and the console agent.
SERVICE_OPTIONS = {"enabled": "bool", "lan_interface": "str", "lan_prefix": "list",
                   "console_device": "str", "console_baud": "int"}
SECTIONS = {"node": NODE_OPTIONS, "fleet": FLEET_OPTIONS, "service": SERVICE_OPTIONS}
_TRUE = ("1", "yes", "on", "true", "enabled")
_FALSE = ("0", "no", "off", "false", "disabled")
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class UciError(ConfigError):
    """A UCI file that does not parse or does not fit the model; names file and line."""


class Section:
    """One `config <type> [name]` block; options map name -> str (option) or list (list)."""

    def __init__(self, type_, name=None, line=0):
        self.type = type_
        self.name = name
        self.line = line
        self.options = {}
        self.lines = {}  # option -> line number, for errors

    def __repr__(self):
        return f"Section({self.type!r}, {self.name!r}, {self.options!r})"


def _tokens(lines, i, where):
    """Split line i like libuci: quotes, backslashes, '#' comments; a quoted string may
    span lines. Returns (tokens, next line index)."""
    toks, cur, have, quote, start = [], [], False, None, i
    line = lines[i]
    j = 0
    while True:
        if j >= len(line):
            if quote:
                i += 1
                if i >= len(lines):
                    raise UciError(f"{where}:{start + 1}: unterminated {quote} quote")
                cur.append("\n")
                line, j = lines[i], 0
                continue
            break
        c = line[j]
        if quote == "'":
            if c == "'":
                quote = None
            else:
                cur.append(c)
        elif quote == '"':
            if c == '"':
                quote = None
            elif c == "\\" and j + 1 < len(line):
                j += 1
                cur.append(line[j])
            else:
                cur.append(c)
        elif c in "'\"":
            quote, have = c, True
        elif c == "\\":
            if j + 1 < len(line):
                j += 1
                cur.append(line[j])
                have = True
        elif c in " \t\r":
            if have:
                toks.append("".join(cur))
                cur, have = [], False
        elif c == "#":
            break
        else:
            cur.append(c)
            have = True
        j += 1
    if have:
        toks.append("".join(cur))
    return toks, i + 1


def _check_name(word, what, where, n, extra=""):
    if not word or not set(word) <= _NAME_CHARS | set(extra):
        raise UciError(f"{where}:{n}: {word!r} is not a valid {what} "
                       f"(letters, digits, '_'{' and ' + repr(extra) if extra else ''})")


def parse(text, where="uci"):
    """UCI text -> list of Section. UciError names the line of the first problem."""
    lines = text.split("\n")
    sections, cur, i = [], None, 0
    while i < len(lines):
        n = i + 1
        toks, i = _tokens(lines, i, where)
        if not toks:
            continue
        kw, args = toks[0], toks[1:]
        if kw == "package":
            if len(args) != 1:
                raise UciError(f"{where}:{n}: 'package' takes one name")
        elif kw == "config":
            if not 1 <= len(args) <= 2:
                raise UciError(f"{where}:{n}: 'config' takes a type and an optional name")
            _check_name(args[0], "section type", where, n, "-")
            if len(args) == 2:
                _check_name(args[1], "section name", where, n)
            cur = Section(args[0], args[1] if len(args) == 2 else None, n)
            sections.append(cur)
        elif kw in ("option", "list"):
            if cur is None:
                raise UciError(f"{where}:{n}: '{kw}' before any 'config' line")
            if len(args) != 2:
                raise UciError(f"{where}:{n}: '{kw}' takes a name and one value "
                               f"(quote values that contain spaces)")
            _check_name(args[0], "option name", where, n)
            old = cur.options.get(args[0])
            if kw == "list":
                if isinstance(old, str):
                    raise UciError(f"{where}:{n}: {args[0]!r} is an option above, not a list")
                cur.options.setdefault(args[0], []).append(args[1])
            else:
                cur.options[args[0]] = args[1]  # a later option wins, as in libuci
            cur.lines[args[0]] = n
        else:
            raise UciError(f"{where}:{n}: unknown keyword {kw!r} "
                           f"(expected config, option or list)")
    return sections


def quote(value):
    """Single-quote a value the way `uci export` does."""
    return "'" + str(value).replace("'", "'\\''") + "'"


def dumps(sections):
    """list of Section -> UCI text (what `uci export` would write, without 'package')."""
    out = []
    for s in sections:
        out.append(f"config {s.type}" + (f" {quote(s.name)}" if s.name else ""))
        for k, v in s.options.items():
            for item in (v if isinstance(v, list) else [v]):
                out.append(f"\t{'list' if isinstance(v, list) else 'option'} {k} {quote(item)}")
        out.append("")
    return "\n".join(out)


def _convert(kind, value, where):
    """UCI string -> model value for one option kind; ValueError text explains why."""
    if kind == "list":
        return list(value) if isinstance(value, list) else [value]
    if isinstance(value, list):
        raise ValueError("must be an 'option', not a 'list'")
    if kind == "bool":
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ValueError(f"{value!r} is not a boolean (1/0, yes/no, on/off, true/false)")
    if kind in ("port", "int"):
        if not (value.isascii() and value.isdigit()) or len(value) > 10:
            raise ValueError(f"{value[:20]!r} is not a whole number")
        v = int(value)
        if kind == "port" and not 1 <= v <= 65535:
            raise ValueError(f"{v} is not a port (1-65535)")
        return v
    if kind == "path" and not value.startswith("/"):
        raise ValueError(f"{value!r} must be an absolute path")
    return value


def _section_dict(sec, where):
    spec, d = SECTIONS[sec.type], {}
    for k, v in sec.options.items():
        n = sec.lines[k]
        if k not in spec:
            raise UciError(f"{where}:{n}: unknown option {k!r} in section "
                           f"'{sec.type}' (known: {', '.join(spec)})")
        if v == "" or v == []:
            continue  # `uci set x=''` means unset: the model's default applies
        try:
            d[k] = _convert(spec[k], v, where)
        except ValueError as e:
            raise UciError(f"{where}:{n}: option {k}: {e}") from None
    return d


def _sections_by_type(text, where):
    found = {}
    for sec in parse(text, where):
        if sec.type not in SECTIONS:
            raise UciError(f"{where}:{sec.line}: unknown section type {sec.type!r} "
                           f"(expected {', '.join(SECTIONS)})")
        if sec.type in found:
            raise UciError(f"{where}:{sec.line}: second '{sec.type}' section "
                           f"(the first is on line {found[sec.type].line})")
        found[sec.type] = sec
    return found


def _read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(1 << 20)
    except FileNotFoundError:
        raise UciError(f"{path}: UCI config not found") from None
    except UnicodeDecodeError:
        raise UciError(f"{path}: not UTF-8") from None
    except OSError as e:
        raise UciError(f"{path}: cannot read UCI config: {e.strerror}") from None


def node_from_uci(text, where="uci"):
    """UCI text -> node config dict (node.json shape)."""
    found = _sections_by_type(text, where)
    if "node" not in found:
        raise UciError(f"{where}: no 'config node' section")
    d = _section_dict(found["node"], where)
    if "fleet" in found:
        fleet = _section_dict(found["fleet"], where)
        if fleet:
            d["fleet"] = fleet
    return d


def service_from_uci(text, where="uci"):
    """UCI text -> the OpenWrt-only 'service' settings, defaults filled in."""
    found = _sections_by_type(text, where)
    d = {"enabled": False, "lan_interface": "lan", "lan_prefix": [],
         "console_device": None, "console_baud": 115200}
    if "service" in found:
        d.update(_section_dict(found["service"], where))
    return d


def load_uci(path):
    """/etc/config/lanmesh -> node config dict, for lanmesh.config.parse_config."""
    return node_from_uci(_read(path), path)


def load_service(path):
    return service_from_uci(_read(path), path)


def _to_uci(sec_type, d):
    spec, sec = SECTIONS[sec_type], Section(sec_type, sec_type)
    for k, v in d.items():
        if k not in spec:
            raise UciError(f"{sec_type}.{k}: not representable in UCI (unknown setting)")
        if v is None:
            continue
        if spec[k] == "bool":
            v = "1" if v else "0"
        sec.options[k] = [str(x) for x in v] if spec[k] == "list" else str(v)
    return sec


def dump_uci(node, service=None):
    """node config dict (+ optional service dict) -> UCI text that load_uci reads back."""
    node = dict(node)
    fleet = node.pop("fleet", None)
    sections = [_to_uci("node", node)]
    if fleet:
        sections.append(_to_uci("fleet", fleet))
    if service:
        sections.append(_to_uci("service", service))
    return dumps(sections)
