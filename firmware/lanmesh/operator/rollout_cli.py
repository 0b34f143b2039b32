# `lanmesh fleet rollout start|status|pause|resume|abort`: argument parsing, the watching
# loop that carries out operator.rollout's steps (assign the next wave, withdraw on a halt or
# an abort), and the progress view.
import json
import sys
import time

from . import rollout as ro_core

INTERVAL_HELP = "seconds between looks at the routers' reports (default 2)"
COLUMNS = (ro_core.PENDING, ro_core.DOWNLOADING, ro_core.INSTALLING, ro_core.CONFIRMED,
           ro_core.ROLLED_BACK, ro_core.REJECTED, ro_core.OFFLINE)


def register(fs, fleet_dir, broker_args):
    r = fs.add_parser("rollout", help="staged rollouts of a release: waves, failure threshold, "
                      "pause/resume/abort, live progress")
    rs = r.add_subparsers(dest="rollout_command", metavar="ROLLOUT_COMMAND")
    rs.required = True
    s = rs.add_parser("start", help="assign the release to the first wave; the next wave "
                      "follows when one has confirmed (while `rollout status` watches)")
    s.add_argument("version")
    s.add_argument("--waves", nargs="+", default=["100%"], metavar="WAVE",
                   help="NAME=node,node (e.g. canary=hq,branch-7) and growing percentages of "
                        "the others (10%% 50%% 100%%); default: 100%%")
    s.add_argument("--max-failures", type=int, default=1, metavar="N",
                   help="halt at the N-th router that rolled back or refused it (default 1)")
    s.add_argument("--watch", action="store_true", help="then watch it, as rollout status --watch")
    s.add_argument("--interval", type=float, default=2.0, help=INTERVAL_HELP)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_start)
    _common(s, fleet_dir, broker_args)
    s = rs.add_parser("status", help="progress per wave and per router; carries the rollout on")
    s.add_argument("--watch", action="store_true", help="keep watching (and advancing) until the "
                   "rollout is done, halted or aborted; exit 0 only when done")
    s.add_argument("--interval", type=float, default=2.0, help=INTERVAL_HELP)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)
    _common(s, fleet_dir, broker_args)
    for name, text in (("pause", "assign no further wave"), ("resume", "go on after a pause"),
                       ("abort", "stop; withdraw the release from routers that did not start it")):
        s = rs.add_parser(name, help=text)
        s.set_defaults(func=cmd_change, change=name)
        _common(s, fleet_dir, broker_args)


def _common(s, fleet_dir, broker_args):
    fleet_dir(s)
    broker_args(s)


def _rows(fd, session, quiet):
    from . import controller
    session.gather(controller.status_topics(fd.prefix()), quiet)
    return {r["node"]: r for r in controller.collect_status(fd, None, session=session)}


def drive(fd, session, rollouts, ro, quiet=0.3, now=None):
    """Carry the rollout on as far as the routers' reports allow → (ro, rows, what it did)."""
    from . import releases
    did = []
    while True:
        rows = _rows(fd, session, quiet)
        changes, assign, withdraw = ro_core.step(ro, rows)
        if withdraw:
            releases.withdraw(fd, session, withdraw)
            did.append(f"withdrawn from {', '.join(withdraw)}")
        if assign:
            releases.assign(fd, session, ro["version"], assign)
            did.append(f"wave {ro['waves'][changes['wave']][0]}: assigned to {', '.join(assign)}")
        if not changes:
            return ro, rows, did
        ro = rollouts.change(ro, now, **changes)
        if ro["state"] != ro_core.RUNNING:
            did.append(f"rollout {ro['state']}" + (f": {ro['reason']}" if ro.get("reason") else ""))
            return ro, rows, did


def view(ro, rows):
    """The rollout as JSON-able data: its record and, per wave, each router's progress."""
    waves = []
    for i, (label, nodes) in enumerate(ro["waves"]):
        entries = []
        for n in nodes:
            row = rows.get(n, {})
            e = {"node": n, "progress": ro_core.outcome(row, ro["version"]) if i <= ro["wave"]
                 else "not started", "software": row.get("software")}
            u = row.get("update") or {}
            if u.get("reason") and u.get("version") == ro["version"]:
                e["reason"] = u["reason"]
            entries.append(e)
        waves.append({"wave": label, "assigned": i <= ro["wave"], "nodes": entries})
    return {"id": ro["id"], "version": ro["version"], "state": ro["state"],
            "wave": ro["waves"][ro["wave"]][0], "max_failures": ro["max_failures"],
            "reason": ro["reason"], "started": ro["started"], "waves": waves}


def format_view(v):
    out = [f"rollout {v['id']}: release {v['version']}, {v['state']}, wave {v['wave']}, "
           f"halts at {v['max_failures']} failure(s)" + (f" ({v['reason']})" if v["reason"] else "")]
    for w in v["waves"]:
        counts = {}
        for e in w["nodes"]:
            counts[e["progress"]] = counts.get(e["progress"], 0) + 1
        summary = ", ".join(f"{k} {counts[k]}" for k in COLUMNS + ("not started",) if k in counts)
        out.append(f"  {w['wave']:<10} {len(w['nodes']):>4} routers: {summary}")
    for w in v["waves"]:
        for e in w["nodes"]:
            if w["assigned"]:
                out.append(f"    {e['node']:<20} {w['wave']:<10} {e['progress']:<12} "
                           f"{e.get('software') or '-':<10} {e.get('reason', '')}")
    return "\n".join(out)


def _show(args, ro, rows, did, tty):
    v = view(ro, rows)
    if args.json:
        print(json.dumps(dict(v, did=did)), flush=True)
        return
    head = "\x1b[H\x1b[J" if tty and getattr(args, "watch", False) else ""
    print(head + "\n".join(did + [format_view(v)]), flush=True)


def _watch(args, fd, session, rollouts, ro):
    tty = sys.stdout.isatty()
    while True:
        ro, rows, did = drive(fd, session, rollouts, ro)
        _show(args, ro, rows, did, tty)
        if not args.watch or ro["state"] not in ro_core.ACTIVE:
            return 0 if ro["state"] in (ro_core.DONE, ro_core.RUNNING, ro_core.PAUSED) else 1
        time.sleep(args.interval)
        ro = rollouts.latest()          # a pause/abort from another terminal counts


def _session(args, fd):
    from .cli import _broker
    from .controller import BrokerSession
    return BrokerSession(_broker(args, fd))


def cmd_start(args):
    from . import releases
    fd, rollouts = _registry(args)
    releases.Releases(fd.registry).need(args.version)
    if args.max_failures < 1:
        raise ro_core.RolloutError("--max-failures must be 1 or more")
    waves = ro_core.plan_waves(args.waves, [n["name"] for n in fd.registry.nodes()], args.version)
    with _session(args, fd) as session:
        ro = rollouts.start(args.version, waves, args.max_failures)
        releases.assign(fd, session, args.version, waves[0][1])
        if not args.json:
            print(f"rollout {ro['id']} of {args.version}: {len(waves)} waves "
                  f"({', '.join(f'{w} {len(n)}' for w, n in waves)}); wave {waves[0][0]} "
                  f"assigned to {', '.join(waves[0][1])}", flush=True)
        return _watch(args, fd, session, rollouts, ro)


def _registry(args):
    from .cli import _fd
    fd = _fd(args)
    return fd, ro_core.Rollouts(fd.registry)


def cmd_status(args):
    fd, rollouts = _registry(args)
    ro = rollouts.latest()
    if ro is None:
        print("no rollout (lanmesh fleet rollout start VERSION --waves …)")
        return 0
    with _session(args, fd) as session:
        return _watch(args, fd, session, rollouts, ro)


def cmd_change(args):
    from . import releases
    fd, rollouts = _registry(args)
    ro = rollouts.active()
    if ro is None:
        raise ro_core.RolloutError("no running or paused rollout")
    if args.change == "pause":
        ro = rollouts.change(ro, state=ro_core.PAUSED)
    elif args.change == "resume":
        ro = rollouts.change(ro, state=ro_core.RUNNING)
    else:
        with _session(args, fd) as session:
            changes, _, idle = ro_core.abort(ro, _rows(fd, session, 0.3))
            if idle:
                releases.withdraw(fd, session, idle)
            ro = rollouts.change(ro, **changes)
            print(f"withdrawn from {', '.join(idle) or 'no router'} (those installing finish "
                  f"or roll back by themselves)")
    print(f"rollout {ro['id']} of {ro['version']}: {ro['state']}")
    return 0
