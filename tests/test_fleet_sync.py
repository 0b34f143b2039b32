# The node-side sync core (fleet.sync) with an integer clock that wraps during the test:
# apply → confirm, apply → broker unreachable → rollback, links all lost → rollback, and
# the ordering / fleet rules. No sockets, no sleeps.
import pytest

from lanmesh.fleet import sync
from lanmesh.ticks import TICKS_PERIOD, ticks_add, ticks_diff

T0 = TICKS_PERIOD - 1500          # wraps 1.5 s in
WINDOW = 10_000


def arrived(version, fleet="acme", digest=None, window=WINDOW):
    return sync.DocumentArrived(fleet, version, ("doc", version), digest or f"sig{version}", window)


def kinds(effects):
    return [type(e).__name__ for e in effects]


def started(version=1, settle=2000):
    return sync.NodeSync("acme", (version, ("doc", version), f"sig{version}"), settle_ms=settle)


def apply_v2(core, now=T0, links=(2, 2)):
    core.handle(sync.LinksCounted(*links), now)
    eff = core.handle(arrived(2), now)
    assert kinds(eff) == ["SaveFloor", "Report", "Apply"]
    assert core.reported()["pending_version"] == 2
    eff = core.handle(sync.ApplySucceeded(2), ticks_add(now, 100))
    assert kinds(eff) == ["Report"]
    core.handle(sync.LinksCounted(*links), ticks_add(now, 100))
    return ticks_add(now, 100)


def test_apply_then_confirm_after_settle_across_wrap():
    core = started()
    t = apply_v2(core)
    assert core.handle(sync.BrokerAcked(), ticks_add(t, 50)) == []      # settling
    assert core.next_deadline() == ticks_add(t, 2000)
    assert core.tick(ticks_add(t, 1999)) == []
    eff = core.tick(ticks_add(t, 2000))
    assert kinds(eff) == ["SaveLastGood", "Report"] and eff[0].version == 2
    assert ticks_diff(ticks_add(t, 2000), T0) > 0 and ticks_add(t, 2000) < T0   # wrapped
    r = core.reported()
    assert (r["applied_version"], r["pending_version"], r["rollback"]) == (2, None, None)
    assert core.next_deadline() is None


def test_reconnect_after_apply_also_confirms():
    core = started()
    t = apply_v2(core)
    core.handle(sync.BrokerLost(), t)
    assert kinds(core.handle(sync.BrokerConnected(), ticks_add(t, 3000))) == \
        ["Report", "SaveLastGood", "Report"]


def test_no_confirm_without_links_counted_after_apply():
    core = started()
    core.handle(sync.LinksCounted(2, 2), T0)
    core.handle(arrived(2), T0)
    core.handle(sync.ApplySucceeded(2), T0)
    core.handle(sync.BrokerAcked(), T0)
    assert core.tick(ticks_add(T0, 5000)) == []     # the pre-apply count proves nothing
    assert kinds(core.handle(sync.LinksCounted(2, 2), ticks_add(T0, 5001))) == ["SaveLastGood", "Report"]


def test_ack_before_apply_finished_does_not_count():
    core = started()
    core.handle(sync.LinksCounted(2, 2), T0)
    core.handle(arrived(2), T0)
    core.handle(sync.BrokerAcked(), T0)              # ack of the pre-apply report
    core.handle(sync.ApplySucceeded(2), T0)
    assert core.tick(ticks_add(T0, 5000)) == []
    assert core.reported()["pending_version"] == 2


def test_broker_unreachable_rolls_back_after_window():
    core = started()
    t = apply_v2(core)
    assert core.next_deadline() == ticks_add(t, WINDOW)
    assert core.tick(ticks_add(t, WINDOW - 1)) == []
    eff = core.tick(ticks_add(t, WINDOW))
    assert kinds(eff) == ["RollBack", "Report"]
    assert eff[0].version == 1 and eff[0].payload == ("doc", 1)
    r = core.reported()
    assert r["applied_version"] == 1 and r["pending_version"] is None
    assert r["rollback"]["version"] == 2
    assert "broker not reachable within the 10s confirm window" in r["rollback"]["reason"]
    # The retained v2 comes again after reconnect: not re-applied, not re-reported.
    assert core.handle(arrived(2), ticks_add(t, WINDOW + 5000)) == []
    # A newer version is tried.
    assert kinds(core.handle(arrived(3), ticks_add(t, WINDOW + 6000))) == ["SaveFloor", "Report", "Apply"]


def test_all_links_lost_rolls_back_even_with_broker():
    core = started()
    t = apply_v2(core, links=(3, 3))
    core.handle(sync.LinksCounted(0, 3), ticks_add(t, 500))
    assert core.handle(sync.BrokerAcked(), ticks_add(t, 600)) == []
    assert core.tick(ticks_add(t, 5000)) == []       # waits: links may come back in the window
    eff = core.tick(ticks_add(t, WINDOW))
    assert kinds(eff) == ["RollBack", "Report"]
    assert "all 3 mesh links lost" in core.reported()["rollback"]["reason"]


def test_links_coming_back_within_window_confirm():
    core = started()
    t = apply_v2(core, links=(3, 3))
    core.handle(sync.LinksCounted(0, 3), ticks_add(t, 500))
    core.handle(sync.BrokerAcked(), ticks_add(t, 600))
    eff = core.handle(sync.LinksCounted(1, 3), ticks_add(t, 4000))
    assert kinds(eff) == ["SaveLastGood", "Report"]


def test_no_links_before_is_not_a_loss():
    core = started()
    t = apply_v2(core, links=(0, 2))
    core.handle(sync.LinksCounted(0, 2), t)
    core.handle(sync.BrokerAcked(), t)
    assert kinds(core.tick(ticks_add(t, 2000))) == ["SaveLastGood", "Report"]


@pytest.mark.parametrize("fact, reason", [
    (arrived(1, digest="other"), "version 1 is not newer than the applied version 1"),
    (arrived(0), "version 0 is not newer than the applied version 1"),
    (arrived(5, fleet="other"), "document is for fleet 'other', this node is in fleet 'acme'"),
    (sync.DocumentRefused("signature does not verify"), "signature does not verify"),
])
def test_rejections_change_nothing(fact, reason):
    core = started()
    eff = core.handle(fact, T0)
    assert kinds(eff) == ["Report"]
    r = core.reported()
    assert r["applied_version"] == 1 and r["pending_version"] is None
    assert r["rejected"][-1]["reason"] == reason
    assert core.handle(fact, T0) == []        # the same rejection is not reported twice


def test_same_document_again_is_silent():
    core = started()
    assert core.handle(arrived(1), T0) == []
    assert core.reported()["rejected"] == []


def test_apply_failure_reported_and_not_retried():
    core = started()
    core.handle(arrived(2), T0)
    eff = core.handle(sync.ApplyFailed(2, "node 'hq' is not in the document"), T0)
    assert kinds(eff) == ["Report"]
    r = core.reported()
    assert r["applied_version"] == 1 and r["pending_version"] is None
    assert "apply failed: node 'hq' is not in the document" in r["rejected"][-1]["reason"]
    assert core.handle(arrived(2), T0) == []


def test_newer_document_supersedes_pending_and_rollback_goes_to_confirmed():
    core = started()
    t = apply_v2(core)
    eff = core.handle(arrived(3), ticks_add(t, 1000))
    assert kinds(eff) == ["SaveFloor", "Report", "Apply"]
    core.handle(sync.ApplySucceeded(3), ticks_add(t, 1000))
    eff = core.tick(ticks_add(t, 1000 + WINDOW))
    assert kinds(eff) == ["RollBack", "Report"] and eff[0].version == 1


def test_first_document_without_previous_is_kept_and_flagged():
    core = sync.NodeSync("acme", None, settle_ms=0)
    core.handle(arrived(1), T0)
    core.handle(sync.ApplySucceeded(1), T0)
    eff = core.tick(ticks_add(T0, WINDOW))
    assert kinds(eff) == ["Report"]
    r = core.reported()
    assert r["applied_version"] == 1 and "no previous document, kept it" in r["rollback"]["reason"]


def test_rejected_list_is_bounded():
    core = started()
    for i in range(20):
        core.handle(sync.DocumentRefused(f"bad {i}"), T0)
    assert [x["reason"] for x in core.reported()["rejected"]] == [f"bad {i}" for i in range(15, 20)]


def test_unknown_fact_is_an_error():
    with pytest.raises(ValueError):
        started().handle(object(), T0)


MP_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
from lanmesh.fleet import sync, topics
from lanmesh.ticks import ticks_add, TICKS_PERIOD
T0 = TICKS_PERIOD - 500
c = sync.NodeSync("acme", (1, "d1", "s1"), settle_ms=1000)
out = []
def step(effects):
    out.append([type(x).__name__ for x in effects])
step(c.handle(sync.LinksCounted(3, 3), T0))
step(c.handle(sync.DocumentArrived("acme", 2, "d2", "s2", 5000), T0))
step(c.handle(sync.ApplySucceeded(2), ticks_add(T0, 10)))
step(c.handle(sync.LinksCounted(0, 3), ticks_add(T0, 20)))
step(c.handle(sync.BrokerAcked(), ticks_add(T0, 30)))
step(c.tick(ticks_add(T0, 5010)))
step(c.handle(sync.DocumentArrived("other", 3, "d", "x", 1), T0))
step(c.handle(sync.DocumentArrived("acme", 3, "d3", "s3", 5000), T0))
step(c.handle(sync.ApplySucceeded(3), T0))
step(c.handle(sync.LinksCounted(3, 3), T0))
step(c.handle(sync.BrokerConnected(), ticks_add(T0, 1000)))
print(out)
r = c.reported()
r["rejected"] = [sorted(x.items()) for x in r["rejected"]]
print(sorted(r.items()))
print(topics.parse_node_topic("lanmesh/acme/", "lanmesh/acme/node/hq/cmd/7"))
"""


def test_same_results_under_micropython(tmp_path):
    import os
    import shutil
    import subprocess
    import sys
    mp = shutil.which("micropython") or os.path.join(os.path.dirname(sys.executable), "micropython")
    if not os.path.exists(mp):
        pytest.skip("micropython not installed")
    script = tmp_path / "mp_sync.py"
    script.write_text(MP_SCRIPT)
    fw = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "firmware")
    outs = [subprocess.run([exe, str(script), fw], capture_output=True, text=True, timeout=30)
            for exe in (sys.executable, mp)]
    assert outs[0].returncode == 0, outs[0].stderr
    assert outs[1].returncode == 0, outs[1].stderr
    assert outs[0].stdout == outs[1].stdout
    assert "'RollBack'" in outs[0].stdout and "('applied_version', 3)" in outs[0].stdout


def test_downgrade_after_rollback_is_refused_and_a_newer_version_heals():
    # the finding: v11 was rolled back to v6, then a genuine (signed) v8 was applied
    core = started(version=6)
    core.handle(sync.LinksCounted(2, 2), T0)
    eff = core.handle(arrived(11), T0)
    assert kinds(eff) == ["SaveFloor", "Report", "Apply"] and eff[0].version == 11
    core.handle(sync.ApplySucceeded(11), T0)
    core.tick(ticks_add(T0, WINDOW))                 # broker never came back: rolled back to v6
    assert core.reported()["applied_version"] == 6 and core.floor == 11
    assert kinds(core.handle(arrived(8), ticks_add(T0, WINDOW + 10))) == ["Report"]
    assert "highest this node has verified" in core.reported()["rejected"][-1]["reason"]
    assert core.reported()["pending_version"] is None
    assert kinds(core.handle(arrived(12), ticks_add(T0, WINDOW + 20))) == ["SaveFloor", "Report", "Apply"]


def test_floor_survives_a_restart_and_a_fresh_node_honours_min_version():
    core = sync.NodeSync("acme", (6, ("doc", 6), "sig6"), floor=11)     # read back from disk
    assert kinds(core.handle(arrived(8), T0)) == ["Report"]
    fresh = sync.NodeSync("acme", None, floor=4)                        # enrolled at v5
    assert kinds(fresh.handle(arrived(1), T0)) == ["Report"]
    assert kinds(fresh.handle(arrived(5), T0)) == ["SaveFloor", "Report", "Apply"]
