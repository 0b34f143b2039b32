# `lanmesh fleet release add|list` and `lanmesh fleet update`: argument parsing and
# printing; the work is in operator.releases.
import json
import time


def register(fs, fleet_dir, broker_args):
    r = fs.add_parser("release", help="software releases: signed manifests and their packages")
    rs = r.add_subparsers(dest="release_command", metavar="RELEASE_COMMAND")
    rs.required = True
    s = rs.add_parser("add", help="sign a release of these package files (one per format) and "
                      "publish its chunks retained on the broker")
    s.add_argument("files", nargs="+", metavar="FILE", help=".ipk, .apk and/or .deb")
    s.add_argument("--version", help="lanmesh's version in them (default: from the file names)")
    s.add_argument("--board", action="append", default=[], metavar="ID",
                   help="only for this board id (repeatable; default: every board)")
    s.add_argument("--min-from", help="routers must run at least this version to take it")
    fleet_dir(s)
    broker_args(s)
    s.set_defaults(func=cmd_release_add)
    s = rs.add_parser("list", help="releases in the registry")
    s.add_argument("--json", action="store_true")
    fleet_dir(s)
    s.set_defaults(func=cmd_release_list)

    s = fs.add_parser("update", help="assign a release to nodes (each fetches, verifies and "
                      "reports it); --withdraw takes the assignment back")
    s.add_argument("nodes", nargs="+", metavar="NODE")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--release", metavar="VERSION")
    g.add_argument("--withdraw", action="store_true")
    fleet_dir(s)
    broker_args(s)
    s.set_defaults(func=cmd_update)


def cmd_release_add(args):
    from . import releases
    from .cli import _broker, _fd
    from .controller import BrokerSession
    fd = _fd(args)
    with BrokerSession(_broker(args, fd)) as session:
        doc = releases.add_release(fd, args.files, session, args.version, args.board,
                                   args.min_from)
    for fmt, a in sorted(doc["artefacts"].items()):
        print(f"  {fmt}: {a['file']}, {a['size']} bytes in {len(a['chunks'])} chunks, "
              f"sha256 {a['sha256'][:16]}…")
    print(f"release {doc['version']} signed and published to {fd.prefix()}update/"
          f"{doc['version']}/ (boards: {', '.join(doc['boards']) or 'all'})")
    return 0


def cmd_release_list(args):
    from . import releases
    from .cli import _fd
    rows = releases.Releases(_fd(args).registry).all()
    if args.json:
        print(json.dumps([d for d, _ in rows], indent=2))
        return 0
    for d, added in rows:
        fmts = ", ".join(f"{f} {a['size']} B" for f, a in sorted(d["artefacts"].items()))
        print(f"{d['version']:<12} {time.strftime('%Y-%m-%d %H:%M', time.localtime(added))}  "
              f"{fmts}  boards: {', '.join(d['boards']) or 'all'}")
    if not rows:
        print("no releases (lanmesh fleet release add FILE…)")
    return 0


def cmd_update(args):
    from . import releases
    from .cli import _broker, _fd
    from .controller import BrokerSession
    fd = _fd(args)
    with BrokerSession(_broker(args, fd)) as session:
        if args.withdraw:
            releases.withdraw(fd, session, args.nodes)
            print(f"update assignment withdrawn from {', '.join(args.nodes)}")
        else:
            releases.assign(fd, session, args.release, args.nodes)
            print(f"release {args.release} assigned to {', '.join(args.nodes)}: "
                  f"`lanmesh fleet status` shows each one's progress")
    return 0
