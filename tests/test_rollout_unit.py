# Issue 15: the rollout core (operator.rollout) — waves from the operator's specs, each
# router's progress from its fleet status row, and when a wave advances, halts or is done.
import pytest

from lanmesh.operator import rollout as r

NAMES = [f"r{i:03d}" for i in range(200)]


def test_waves_canary_then_growing_shares_of_the_rest():
    waves = r.plan_waves(["canary=r007,r150", "10%", "50%", "100%"], NAMES, "0.2.0")
    assert [w for w, _ in waves] == ["canary", "10%", "50%", "100%"]
    assert waves[0][1] == ["r007", "r150"]
    sizes = [len(n) for _, n in waves]
    assert sizes == [2, 20, 79, 99]                     # 10 %, 50 %, 100 % of the other 198
    every = [n for _, nodes in waves for n in nodes]
    assert sorted(every) == NAMES and len(set(every)) == 200
    assert waves[1][1] != sorted(waves[1][1])           # spread, not the first names
    assert r.plan_waves(["10%", "100%"], NAMES, "0.2.0") == r.plan_waves(["10%", "100%"],
                                                                          NAMES, "0.2.0")


@pytest.mark.parametrize("specs, why", [
    (["canary=nobody"], "not in the registry: nobody"),
    (["a=r001", "b=r001"], "in an earlier wave already"),
    (["50%", "10%"], "growing percentage"),
    (["ten"], "growing percentage"),
    (["150%"], "growing percentage"),
])
def test_bad_wave_specs_say_why(specs, why):
    with pytest.raises(r.RolloutError, match=why):
        r.plan_waves(specs, NAMES, "0.2.0")


def row(state="online", software="0.1.0", update=None):
    return {"state": state, "software": software, "update": update}


def test_progress_of_one_router():
    v = "0.2.0"
    assert r.outcome(row(), v) == r.PENDING
    assert r.outcome(row(state="lost"), v) == r.OFFLINE
    assert r.outcome(row(update={"state": "downloading", "version": v}), v) == r.DOWNLOADING
    assert r.outcome(row(update={"state": "installing", "version": v}), v) == r.INSTALLING
    assert r.outcome(row(software=v, update={"state": "confirming", "version": v}), v) == r.INSTALLING
    assert r.outcome(row(software=v, update={"state": "confirmed", "version": v}), v) == r.CONFIRMED
    assert r.outcome(row(update={"state": "rolled-back", "version": v}), v) == r.ROLLED_BACK
    assert r.outcome(row(update={"state": "rejected", "version": v}), v) == r.REJECTED
    assert r.outcome(row(update={"state": "rejected", "version": "0.1.5"}), v) == r.PENDING


def rollout(waves, wave=0, state=r.RUNNING, max_failures=1):
    return {"version": "0.2.0", "waves": waves, "wave": wave, "state": state,
            "max_failures": max_failures, "reason": None}


def test_a_wave_advances_when_its_routers_confirmed_offline_ones_do_not_hold_it():
    ro = rollout([("canary", ["a", "b"]), ("100%", ["c", "d"])])
    done = row(software="0.2.0", update={"state": "confirmed", "version": "0.2.0"})
    assert r.step(ro, {"a": done, "b": row(update={"state": "installing", "version": "0.2.0"})}) \
        == ({}, [], [])
    assert r.step(ro, {"a": done, "b": done}) == ({"wave": 1}, ["c", "d"], [])
    assert r.step(ro, {"a": done, "b": row(state="lost")}) == ({"wave": 1}, ["c", "d"], [])
    assert r.step(ro, {"a": row(state="lost"), "b": row(state="lost")}) == ({}, [], [])
    ro["wave"] = 1
    assert r.step(ro, {n: done for n in "abcd"}) == ({"state": r.DONE, "reason": None}, [], [])


def test_failures_halt_and_withdraw_from_those_not_started_pause_holds():
    ro = rollout([("canary", ["a"]), ("rest", ["b", "c"])], wave=1, max_failures=2)
    bad = row(update={"state": "rolled-back", "version": "0.2.0", "reason": "did not confirm"})
    rows = {"a": bad, "b": row(), "c": row(update={"state": "downloading", "version": "0.2.0"})}
    assert r.step(ro, rows) == ({}, [], [])             # 1 failure of 2 allowed
    rows["c"] = row(update={"state": "rejected", "version": "0.2.0"})
    changes, assign, withdraw = r.step(ro, rows)
    assert changes["state"] == r.HALTED and "2 routers failed (a, c)" in changes["reason"]
    assert (assign, withdraw) == ([], ["b"])
    done = row(software="0.2.0")
    paused = rollout([("canary", ["a"]), ("rest", ["b"])], state=r.PAUSED)
    assert r.step(paused, {"a": done}) == ({}, [], [])
    for terminal in (r.HALTED, r.ABORTED, r.DONE):
        assert r.step(rollout([("all", ["a"])], state=terminal), {"a": bad}) == ({}, [], [])


def test_abort_withdraws_from_the_assigned_that_did_not_start():
    ro = rollout([("canary", ["a", "b", "c"]), ("rest", ["d"])])
    rows = {"a": row(update={"state": "installing", "version": "0.2.0"}), "b": row(),
            "c": row(state="lost")}
    assert r.abort(ro, rows) == ({"state": r.ABORTED, "reason": "aborted by the operator"},
                                 [], ["b", "c"])
