# Staged rollouts of a release (issue 15): waves of routers, each assigned the release only
# when the wave before it confirmed, halted at the N-th failure. The core (plan_waves,
# outcome, step) is pure: a rollout record and the routers' reported rows in, the record's
# changes and the assignments to make or withdraw out. Rollouts (the registry table) keeps
# the records; whoever watches the rollout (`lanmesh fleet rollout status`, with or without
# --watch) executes step()'s effects, so a rollout moves on while it is watched and waits
# (safely: nothing new is assigned) while nobody looks.
import json
import math
import time
import zlib

from ..errors import LanmeshError

RUNNING, PAUSED, HALTED, ABORTED, DONE = "running", "paused", "halted", "aborted", "done"
ACTIVE = (RUNNING, PAUSED)
# a router's progress on the rollout's release, as `rollout status` counts it
PENDING, DOWNLOADING, INSTALLING, CONFIRMED, ROLLED_BACK, REJECTED, OFFLINE = (
    "pending", "downloading", "installing", "confirmed", "rolled back", "rejected", "offline")
FAILED = (ROLLED_BACK, REJECTED)


class RolloutError(LanmeshError):
    pass


def plan_waves(specs, names, version):
    """["canary=hq,branch-7", "10%", "50%", "100%"] over the registered `names` → [(label,
    [node, …]), …]. A named wave takes those nodes; a percentage is the cumulative share of
    the others, in an order spread by the version (not alphabetical: a wave is not one
    region's routers by accident). Empty waves are dropped."""
    names = sorted(names)
    waves, named = [], set()
    for spec in specs:
        if "=" in spec:
            label, _, members = spec.partition("=")
            nodes = [n for n in members.split(",") if n]
            unknown = sorted(set(nodes) - set(names))
            if not label or not nodes or unknown:
                raise RolloutError(f"wave {spec!r}: " + (f"not in the registry: {', '.join(unknown)}"
                                                         if unknown else "expected NAME=node,node"))
            twice = sorted(set(nodes) & named)
            if twice:
                raise RolloutError(f"wave {spec!r}: {', '.join(twice)} in an earlier wave already")
            named.update(nodes)
            waves.append((label, nodes))
    rest = sorted((n for n in names if n not in named),
                  key=lambda n: (zlib.crc32(f"{version}/{n}".encode()), n))
    taken, last = 0, 0.0
    for spec in specs:
        if "=" in spec:
            continue
        try:
            share = float(spec.rstrip("%"))
        except ValueError:
            share = -1
        if not spec.endswith("%") or not 0 < share <= 100 or share < last:
            raise RolloutError(f"wave {spec!r}: expected a growing percentage (10% 50% 100%) "
                               f"or NAME=node,node")
        last = share
        upto = math.ceil(len(rest) * share / 100)
        if upto > taken:
            waves.append((spec, rest[taken:upto]))
            taken = upto
    if not waves:
        raise RolloutError("no router in any wave")
    return waves


def outcome(row, version):
    """One router's progress on `version` from its fleet status row."""
    u = row.get("update") or {}
    if row.get("software") == version:
        return CONFIRMED if u.get("state") in (None, "idle", "confirmed") else INSTALLING
    if u.get("version") == version:
        state = u.get("state")
        if state == "rolled-back":
            return ROLLED_BACK
        if state == "rejected":
            return REJECTED
        if state in ("installing", "confirming"):
            return INSTALLING
        if state in ("downloading", "downloaded", "stalled"):
            return DOWNLOADING
    return PENDING if row.get("state") == "online" else OFFLINE


def _progress(ro, rows):
    """{node: progress} of the routers assigned so far."""
    return {n: outcome(rows.get(n, {}), ro["version"])
            for _, nodes in ro["waves"][:ro["wave"] + 1] for n in nodes}


def _not_started(got):
    return [n for n, o in got.items() if o in (PENDING, OFFLINE)]


def abort(ro, rows):
    """The operator stops it: → (changes, [], the assigned routers that have not started it,
    whose assignment to withdraw). Those installing finish or roll back by themselves."""
    return ({"state": ABORTED, "reason": "aborted by the operator"}, [],
            _not_started(_progress(ro, rows)))


def step(ro, rows):
    """ro: the rollout record; rows: {node: fleet status row}. → (changes to ro, nodes to
    assign the release to, nodes whose assignment to withdraw)."""
    if ro["state"] not in ACTIVE:
        return {}, [], []
    got = _progress(ro, rows)
    failed = sorted(n for n, o in got.items() if o in FAILED)
    if len(failed) >= ro["max_failures"]:
        why = f"{len(failed)} routers failed ({', '.join(failed[:5])}), --max-failures " \
              f"{ro['max_failures']}"
        return {"state": HALTED, "reason": why}, [], _not_started(got)
    if ro["state"] == PAUSED:
        return {}, [], []
    wave = ro["waves"][ro["wave"]][1]
    done = [n for n in wave if got[n] == CONFIRMED]
    # routers offline for the whole wave do not hold it back: their assignment is retained
    # on the broker and they update when they come back
    if not done or any(got[n] not in (CONFIRMED, OFFLINE) for n in wave):
        return {}, [], []
    if ro["wave"] + 1 >= len(ro["waves"]):
        return {"state": DONE, "reason": None}, [], []
    nxt = ro["wave"] + 1
    return {"wave": nxt}, list(ro["waves"][nxt][1]), []


_SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
  id INTEGER PRIMARY KEY AUTOINCREMENT, version TEXT NOT NULL, waves TEXT NOT NULL,
  max_failures INTEGER NOT NULL, state TEXT NOT NULL, wave INTEGER NOT NULL,
  started REAL NOT NULL, updated REAL NOT NULL, reason TEXT,
  wave_started TEXT NOT NULL DEFAULT '[]');
"""


class Rollouts:
    """The registry's rollouts table: one active (running or paused) rollout at a time."""

    def __init__(self, registry):
        self.db = registry.db
        with self.db:
            self.db.executescript(_SCHEMA)

    def _row(self, row):
        if row is None:
            return None
        keys = ("id", "version", "waves", "max_failures", "state", "wave", "started", "updated",
                "reason", "wave_started")
        ro = dict(zip(keys, row))
        ro["waves"] = [tuple(w) for w in json.loads(ro["waves"])]
        ro["wave_started"] = json.loads(ro["wave_started"])
        return ro

    def latest(self):
        return self._row(self.db.execute("SELECT * FROM rollouts ORDER BY id DESC LIMIT 1")
                         .fetchone())

    def active(self):
        ro = self.latest()
        return ro if ro is not None and ro["state"] in ACTIVE else None

    def start(self, version, waves, max_failures, now=None):
        if self.active() is not None:
            a = self.active()
            raise RolloutError(f"rollout {a['id']} of {a['version']} is {a['state']}: "
                               f"abort it first (lanmesh fleet rollout abort)")
        now = time.time() if now is None else now
        with self.db:
            cur = self.db.execute(
                "INSERT INTO rollouts (version, waves, max_failures, state, wave, started, "
                "updated, wave_started) VALUES (?, ?, ?, ?, 0, ?, ?, ?)",
                (version, json.dumps(waves), max_failures, RUNNING, now, now, json.dumps([now])))
        return self._row(self.db.execute("SELECT * FROM rollouts WHERE id = ?",
                                         (cur.lastrowid,)).fetchone())

    def change(self, ro, now=None, **changes):
        now = time.time() if now is None else now
        if "wave" in changes:
            ro["wave_started"] = ro["wave_started"] + [now]
        ro.update(changes, updated=now)
        with self.db:
            self.db.execute("UPDATE rollouts SET state = ?, wave = ?, reason = ?, updated = ?, "
                            "wave_started = ? WHERE id = ?",
                            (ro["state"], ro["wave"], ro["reason"], now,
                             json.dumps(ro["wave_started"]), ro["id"]))
        return ro
