# `lanmesh …` — argument parsing and exit codes only; each subcommand imports what it
# needs when it runs (a router pays only for the command it uses).
import json
import sys

from . import __version__
from .config import LOG_LEVELS
from .errors import DocumentError, LanmeshError

DEFAULT_CONFIG = "/etc/lanmesh/node.json"
# Subcommand groups owned by other modules; each has register(subparsers).
_EXTENSIONS = ("lanmesh.operator.cli", "lanmesh.console.cli")   # absent ones are skipped


def _die(msg, code=1):
    print(f"lanmesh: {msg}", file=sys.stderr)
    return code


def cmd_genkey(args):
    from .keys import genkey
    print(genkey())
    return 0


def cmd_pubkey(args):
    from .keys import pubkey
    print(pubkey(sys.stdin.read()))
    return 0


def load_node_config(args):
    if getattr(args, "uci", None):
        from .uci import load_uci
        from .config import parse_config
        cfg = parse_config(load_uci(args.uci), args.uci)
        cfg.openwrt = True      # an OpenWrt router: fw4's rules follow the document's ports
        return cfg
    from .config import load_config
    return load_config(args.config)


def cmd_run(args):
    cfg = load_node_config(args)
    level = args.log_level or cfg.log_level
    from . import log
    log.configure(level, prefix=cfg.name)
    from .daemon import run
    run(cfg, load_config=lambda: load_node_config(args))
    return 0


def cmd_status(args):
    from .adapters import control
    from .status_view import render
    cfg = load_node_config(args)
    try:
        st = control.request(cfg.control_socket, {"cmd": "status"})
    except OSError as e:
        return _die(f"no daemon answering on {cfg.control_socket} ({e.strerror or e}); is `lanmesh run` running?")
    if args.json:
        print(json.dumps(st, indent=2, sort_keys=True))
    else:
        print(render(st))
    return 0


def cmd_doc_check(args):
    from . import netdoc
    try:
        doc = netdoc.load(args.path)
    except DocumentError as e:
        for p in e.problems:
            print(p, file=sys.stderr)
        print(f"{args.path}: {len(e.problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{args.path}: ok: fleet {doc.fleet} v{doc.version}, {len(doc.nodes)} nodes")
    return 0


def build_parser():
    import argparse
    p = argparse.ArgumentParser(prog="lanmesh", description="Site-to-site WireGuard mesh for router fleets.")
    p.add_argument("--version", action="version", version=f"lanmesh {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("genkey", help="print a new WireGuard private key (like `wg genkey`)")
    s.set_defaults(func=cmd_genkey)
    s = sub.add_parser("pubkey", help="private key on stdin → public key (like `wg pubkey`)")
    s.set_defaults(func=cmd_pubkey)

    def config_args(s):
        g = s.add_mutually_exclusive_group()
        g.add_argument("--config", default=DEFAULT_CONFIG, help=f"node config JSON (default {DEFAULT_CONFIG})")
        g.add_argument("--uci", metavar="PATH", help="read the node config from a UCI file (OpenWrt)")

    s = sub.add_parser("run", help="run the daemon in the foreground")
    config_args(s)
    s.add_argument("--log-level", choices=LOG_LEVELS)
    s.set_defaults(func=cmd_run)
    s = sub.add_parser("status", help="peers, links and routes of the running daemon")
    config_args(s)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    doc = sub.add_parser("doc", help="network documents")
    dsub = doc.add_subparsers(dest="doc_command", metavar="DOC_COMMAND")
    dsub.required = True
    s = dsub.add_parser("check", help="validate a network document and print every problem")
    s.add_argument("path")
    s.set_defaults(func=cmd_doc_check)

    import importlib
    for mod in _EXTENSIONS:
        try:
            m = importlib.import_module(mod)
        except ImportError:
            continue
        m.register(sub, {"doc": dsub})
    return p


class _RunArgs:
    func = staticmethod(cmd_run)
    config, uci, log_level = DEFAULT_CONFIG, None, None


def _fast_run_args(argv):
    """`run [--config P | --uci P] [--log-level L]` parsed without argparse, which costs
    the idle daemon ~0.6 MB RSS; None for anything else (argparse then parses it, and
    explains mistakes)."""
    if argv[:1] != ["run"]:
        return None
    args, rest = _RunArgs(), list(argv[1:])
    seen = set()
    while rest:
        opt = rest.pop(0)
        opt, eq, value = opt.partition("=")
        if opt not in ("--config", "--uci", "--log-level") or opt in seen:
            return None
        if not eq:
            if not rest:
                return None
            value = rest.pop(0)
        seen.add(opt)
        setattr(args, opt[2:].replace("-", "_"), value)
    if {"--config", "--uci"} <= seen or args.log_level not in (None,) + LOG_LEVELS:
        return None
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _fast_run_args(argv) or build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LanmeshError as e:
        return _die(str(e))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `lanmesh status | head`: the reader left; no traceback, and none at exit either
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
