# `lanmesh doc sign|verify` and `lanmesh fleet …`: argument parsing and printing only;
# the work is in signing, registry, brokerconf and controller. register() is called by
# lanmesh.cli with the top-level subparsers and the existing groups ({"doc": ...}).
import json
import os
import sys
import time

from ..errors import DocumentError, LanmeshError


def register(sub, groups):
    from . import provision
    provision.register(sub)
    d = groups["doc"]
    s = d.add_parser("sign", help="sign a network document with the fleet key; prints the envelope")
    s.add_argument("--key", required=True, help="Ed25519 signing key file (fleet dir signing.key)")
    s.add_argument("path")
    s.set_defaults(func=cmd_doc_sign)
    s = d.add_parser("verify", help="verify a signed envelope; exit 0 if good, 1 with the reason")
    s.add_argument("--pubkey", required=True, help="fleet public key (base64) or a file holding it")
    s.add_argument("--fleet", help="also require this fleet name")
    s.add_argument("path")
    s.set_defaults(func=cmd_doc_verify)

    f = sub.add_parser("fleet", help="operate a fleet: registry, signed documents, broker, status")
    fs = f.add_subparsers(dest="fleet_command", metavar="FLEET_COMMAND")
    fs.required = True

    def fleet_dir(p):
        p.add_argument("--dir", help="fleet directory (default ~/.lanmesh/<fleet>; "
                       "or $LANMESH_FLEET_DIR)")

    def broker_args(p):
        p.add_argument("--broker", help="mqtts://host:port")
        p.add_argument("--ca", dest="ca_file", help="CA certificate file for the broker's TLS")
        p.add_argument("--username", help="broker username (default: controller)")
        p.add_argument("--password-file", help="broker password file (default: <dir>/controller.pass)")

    s = fs.add_parser("init", help="new fleet: Ed25519 signing key, registry, controller password")
    s.add_argument("fleet")
    fleet_dir(s)
    s.add_argument("--overlay4", default="100.64.0.0/10")
    s.add_argument("--overlay6", help="IPv6 overlay /64 (default: a random fd00::/8 ULA)")
    broker_args(s)
    s.set_defaults(func=cmd_init)

    node = fs.add_parser("node", help="add, remove or list nodes")
    ns = node.add_subparsers(dest="node_command", metavar="NODE_COMMAND")
    ns.required = True
    s = ns.add_parser("add", help="register a node; overlay addresses are allocated")
    s.add_argument("name")
    s.add_argument("--public-key", required=True, help="the node's WireGuard public key")
    s.add_argument("--lan", action="append", default=[], help="site prefix (repeatable)")
    s.add_argument("--endpoint", action="append", default=[], help="host:port (repeatable)")
    s.add_argument("--relay", action="store_true",
                   help="may forward other sites' WireGuard sessions when their direct path fails "
                        "(blind: ciphertext only, in its kernel; see README)")
    fleet_dir(s)
    s.set_defaults(func=cmd_node_add)
    s = ns.add_parser("set", help="change a node in place (its overlay addresses stay)")
    s.add_argument("name")
    s.add_argument("--public-key", help="a new WireGuard public key (after a rekey)")
    s.add_argument("--lan", action="append", help="site prefix (repeatable; replaces the list)")
    s.add_argument("--no-lan", action="store_true", help="no site prefixes")
    s.add_argument("--endpoint", action="append", help="host:port (repeatable; replaces the list)")
    s.add_argument("--no-endpoint", action="store_true", help="no endpoints (behind NAT)")
    s.add_argument("--relay", dest="relay", action="store_true", default=None)
    s.add_argument("--no-relay", dest="relay", action="store_false")
    fleet_dir(s)
    s.set_defaults(func=cmd_node_set)
    s = ns.add_parser("remove", help="revoke a node: the next published document drops it")
    s.add_argument("name")
    fleet_dir(s)
    s.set_defaults(func=cmd_node_remove)
    s = ns.add_parser("list", help="registered nodes and their addresses")
    fleet_dir(s)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_node_list)

    s = fs.add_parser("config", help="show or store the controller's broker settings "
                      "(broker=URL ca=FILE controller_broker=URL username=NAME password_file=FILE "
                      "broker_site=NODE: the site whose LAN hosts the broker)")
    s.add_argument("changes", nargs="*", metavar="KEY=VALUE")
    fleet_dir(s)
    s.set_defaults(func=cmd_config)

    s = fs.add_parser("settings", help="show or change document settings (KEY=VALUE ...)")
    s.add_argument("changes", nargs="*", metavar="KEY=VALUE")
    fleet_dir(s)
    s.set_defaults(func=cmd_settings)

    s = fs.add_parser("publish", help="sign the next document version and publish it retained")
    fleet_dir(s)
    broker_args(s)
    s.add_argument("--dry-run", action="store_true", help="show the diff and document; publish nothing")
    s.set_defaults(func=cmd_publish)

    s = fs.add_parser("status", help="every node: online/lost, applied version, links, last seen")
    fleet_dir(s)
    broker_args(s)
    s.add_argument("--json", action="store_true")
    s.add_argument("--wide", action="store_true", help="whole reasons, and each node's last "
                   "broker problem")
    s.add_argument("--watch", action="store_true", help="keep watching; redraw on changes")
    s.add_argument("--wait", type=float, default=0.5, help="seconds of quiet that end collection")
    s.set_defaults(func=cmd_status)

    from . import release_cli
    release_cli.register(fs, fleet_dir, broker_args)
    from . import rollout_cli
    rollout_cli.register(fs, fleet_dir, broker_args)

    s = fs.add_parser("broker-config", help="mosquitto.conf, password file and ACL for the registry")
    fleet_dir(s)
    s.add_argument("--out", help="directory (default <dir>/broker)")
    s.add_argument("--listen", default="0.0.0.0")
    s.add_argument("--port", type=int, default=8883)
    s.add_argument("--ca", dest="ca_file", help="CA file (to name in the config)")
    s.add_argument("--cert", dest="cert_file", help="broker TLS certificate")
    s.add_argument("--key", dest="key_file", help="broker TLS key")
    s.add_argument("--rotate", action="append", default=[], metavar="NODE",
                   help="give this node a new password (repeatable)")
    s.add_argument("--print-passwords", action="store_true",
                   help="print new node passwords (they are always written to credentials/)")
    s.set_defaults(func=cmd_broker_config)


# -- doc ---------------------------------------------------------------------------------
def cmd_doc_sign(args):
    from .. import netdoc
    from ..fleet import signing
    doc = netdoc.load(args.path)   # never sign a document a node would reject
    env = signing.sign(doc.raw, signing.read_key(args.key))
    sys.stdout.write(signing.envelope_bytes(env).decode() + "\n")
    return 0


def cmd_doc_verify(args):
    from ..fleet import signing
    try:
        with open(args.path, "rb") as f:
            data = f.read(signing.MAX_ENVELOPE_BYTES + 1)
        doc = signing.verify_document(data, signing.read_public_key(args.pubkey))
        if args.fleet and doc.fleet != args.fleet:
            raise DocumentError([f"document is for fleet {doc.fleet!r}, not {args.fleet!r}"])
    except OSError as e:
        print(f"{args.path}: rejected: cannot read: {e.strerror}", file=sys.stderr)
        return 1
    except LanmeshError as e:
        print(f"{args.path}: rejected: {e}", file=sys.stderr)
        return 1
    print(f"{args.path}: good signature: fleet {doc.fleet} v{doc.version}, {len(doc.nodes)} nodes")
    return 0


# -- fleet -------------------------------------------------------------------------------
def _fd(args, fleet=None):
    from .controller import FleetDir, default_dir
    path = args.dir or os.environ.get("LANMESH_FLEET_DIR")
    if not path:
        if fleet is None:
            base = os.path.join(os.path.expanduser("~"), ".lanmesh")
            found = sorted(os.listdir(base)) if os.path.isdir(base) else []
            if len(found) != 1:
                raise LanmeshError("which fleet? pass --dir (fleets in ~/.lanmesh: "
                                   f"{', '.join(found) or 'none'})")
            fleet = found[0]
        path = default_dir(fleet)
    return FleetDir(path)


def _broker(args, fd):
    return fd.broker_options(broker=args.broker, ca_file=args.ca_file,
                             username=args.username, password_file=args.password_file)


def cmd_init(args):
    from .controller import FleetDir
    fd = _fd(args, args.fleet)
    FleetDir.init(fd.path, args.fleet, args.overlay4, args.overlay6, broker=args.broker,
                  ca_file=args.ca_file, username=args.username, password_file=args.password_file)
    print(f"fleet {args.fleet} initialised in {fd.path}")
    print(f"  fleet public key (goes into every node config as fleet.public_key): {fd.public_key()}")
    print(f"  overlay: {fd.registry.get('overlay4')} {fd.registry.get('overlay6')}")
    return 0


def cmd_node_add(args):
    fd = _fd(args)
    n = fd.registry.add_node(args.name, args.public_key, args.lan, args.endpoint,
                             relay=args.relay)
    print(f"node {n['name']} added: {', '.join(n['address'])}; run `lanmesh fleet publish`")
    return 0


def cmd_node_set(args):
    fd = _fd(args)
    lan = [] if args.no_lan else args.lan
    endpoints = [] if args.no_endpoint else args.endpoint
    old, new = fd.registry.set_node(args.name, public_key=args.public_key, lan=lan,
                                    endpoints=endpoints, relay=args.relay)
    changes = [f"{k}: {json.dumps(old[k])} -> {json.dumps(new[k])}" for k in sorted(new)
               if old[k] != new[k]]
    if not changes:
        print(f"node {args.name}: nothing changed")
        return 0
    print(f"node {args.name} ({', '.join(new['address'])}, kept):")
    for c in changes:
        print("  " + c)
    print("run `lanmesh fleet publish` to send it to the fleet")
    return 0


CONFIG_KEYS = {"broker": "broker", "ca": "ca_file", "ca_file": "ca_file",
               "controller_broker": "controller_broker", "username": "username",
               "password_file": "password_file", "broker_site": "broker_site"}


def cmd_config(args):
    from ..adapters.mqtt import parse_broker
    from .registry import RegistryError
    fd = _fd(args)
    reg = fd.registry
    for c in args.changes:
        k, sep, v = c.partition("=")
        if not sep or k not in CONFIG_KEYS:
            raise LanmeshError(f"{c!r}: expected KEY=VALUE with KEY one of "
                               f"{', '.join(sorted(set(CONFIG_KEYS) - {'ca_file'}))}")
        key = CONFIG_KEYS[k]
        if v and key == "broker_site" and reg.node(v) is None:
            raise LanmeshError(f"broker_site={v}: no such node")
        if v and key.endswith("broker"):
            parse_broker(v)
        if v and key.endswith("_file"):
            if not os.path.isfile(v):
                raise LanmeshError(f"{k}: {v}: no such file")
            v = os.path.abspath(v)
        old = reg.get(key)
        reg.set(key, v)
        problems = reg.lan_conflicts(reg.nodes())
        if problems:
            reg.set(key, old or "")
            raise RegistryError("; ".join(problems))
    from .controller import BROKER_KEYS
    for key in BROKER_KEYS + ("controller_broker", "broker_site"):
        print(f"{key:<18} {reg.get(key) or '-'}")
    return 0


def cmd_node_remove(args):
    fd = _fd(args)
    fd.registry.remove_node(args.name)
    print(f"node {args.name} removed; the next `lanmesh fleet publish` revokes it and clears "
          f"its retained state on the broker "
          f"(re-run `fleet broker-config` to drop its broker account)")
    return 0


def cmd_node_list(args):
    nodes = sorted(_fd(args).registry.nodes(), key=lambda n: n["name"])
    if args.json:
        print(json.dumps(nodes, indent=2))
        return 0
    for n in nodes:
        print(f"{n['name']:<16} {' '.join(n['address']):<40} lan {','.join(n['lan']) or '-'}"
              f"  endpoints {','.join(n['endpoints']) or '-'}")
    return 0


def cmd_settings(args):
    reg = _fd(args).registry
    changes = {}
    for c in args.changes:
        k, sep, v = c.partition("=")
        if not sep or not v.lstrip("-").isdigit():
            raise LanmeshError(f"{c!r}: expected KEY=INTEGER")
        changes[k] = int(v)
    if changes:
        reg.set_settings(changes)
    print(json.dumps(reg.settings(), sort_keys=True))
    return 0


def cmd_publish(args):
    from . import controller
    fd = _fd(args)
    doc, env, diff, old = controller.prepare(fd)
    print(f"fleet {doc['fleet']}: v{old['version'] if old else '-'} -> v{doc['version']}")
    for line in diff or ["(no changes to nodes or settings; publishing a new version anyway)"]:
        print("  " + line)
    if args.dry_run:
        print(json.dumps(doc, indent=2, sort_keys=True))
        print("dry run: nothing signed into the registry, nothing published")
        return 0
    opts = _broker(args, fd)
    purged = controller.publish(fd, env, doc["version"], opts)
    print(f"published v{doc['version']} retained to {fd.prefix()}net on {opts['broker']}")
    if purged:
        print(f"cleared the retained state of removed nodes: {', '.join(purged)}")
    return 0


def cmd_status(args):
    from . import controller
    fd = _fd(args)
    opts = _broker(args, fd)
    if not args.watch:
        rows = controller.collect_status(fd, opts, quiet=args.wait)
        print(json.dumps(rows, indent=2) if args.json else
              controller.format_table(rows, wide=args.wide))
        return 0
    with controller.BrokerSession(opts) as s:
        s.gather(controller.status_topics(fd.prefix()), args.wait)
        while True:
            rows = controller.collect_status(fd, opts, session=s)
            if args.json:
                print(json.dumps(rows), flush=True)
            else:
                print("\x1b[H\x1b[J" + time.strftime("%H:%M:%S ") + fd.registry.fleet + "\n" +
                      controller.format_table(rows, wide=args.wide), flush=True)
            s.changed.clear()
            s.changed.wait(5.0)   # redraw on news, and every 5 s for the ages


def cmd_broker_config(args):
    from . import brokerconf
    from ..adapters.mqtt import read_secret
    fd = _fd(args)
    out = args.out or fd.registry.get("broker_dir")
    if not out:
        # As root, mosquitto reads its files as the user `mosquitto`, which cannot enter the
        # 0700 fleet directory: its files go where a packaged mosquitto keeps its own.
        root = os.geteuid() == 0 and os.path.isdir("/etc/mosquitto")
        out = f"/etc/mosquitto/lanmesh-{fd.registry.fleet}" if root else fd.broker_dir
    names = [n["name"] for n in fd.registry.nodes()]
    owner = brokerconf.run_as(out)
    fresh = brokerconf.write_broker_config(
        out, fd.prefix(), names, read_secret(fd.password_path), args.listen, args.port,
        _abs(args.ca_file), _abs(args.cert_file), _abs(args.key_file), rotate=set(args.rotate),
        owner=owner)
    print(f"wrote {out}/mosquitto.conf, passwd ({len(names)} nodes), controller.passwd, acl")
    fd.registry.set("broker_dir", os.path.abspath(out))   # where provision adds accounts
    if owner:
        print(f"  started as root, mosquitto runs as user mosquitto: it owns the broker's files "
              f"(TLS files copied to {out}/tls; node passwords in credentials/ stay yours)")
    print(f"  routers connect to port {args.port} (client id = username); the controller "
          f"(`lanmesh fleet publish|status`) to port {args.port + 1}")
    for name in sorted(fresh):
        where = os.path.join(out, "credentials", name + ".pass")
        print(f"  {name}: new password" + (f" {fresh[name]}" if args.print_passwords else "") +
              f" -> {where} (install as the node's fleet.password_file)")
    print(f"run: mosquitto -c {os.path.join(out, 'mosquitto.conf')}")
    return 0


def _abs(p):
    return os.path.abspath(p) if p else None
