# Issue 15: the daemon's side of an update trial (lanmesh.release.trial) without a fleet:
# what it writes for the guard, the init hooks it leaves (and that they parse in OpenWrt's
# shell), and what it refuses to write.
import os
import shutil
import subprocess

import pytest

from lanmesh.release import trial


def _begin(t, root, init, **kw):
    args = dict(frm="0.1.0", to="0.2.0", fmt="ipk", new="/x/new.ipk", old="/x/keep/old.ipk",
                pm="true", restart="true", manifest=b'{"doc": "signed"}', root=root, window=10,
                links_up=2, init=init)
    args.update(kw)
    t.begin(**args)


def test_trial_facts_hook_and_result(tmp_path):
    root, d = str(tmp_path / "root"), str(tmp_path / "update")
    os.makedirs(os.path.join(root, "etc"))
    open(os.path.join(root, "etc/rc.common"), "w").close()
    os.makedirs(d)
    assert trial.init_system(root) == "procd"
    t = trial.Trial(d)
    # the guard's package manager takes its time: what matters here is what was written
    _begin(t, root, "procd", pm=_slow_pm(tmp_path))
    facts = t.facts()
    assert facts["FROM"] == "0.1.0" and facts["TO"] == "0.2.0" and facts["LINKS_UP"] == "2"
    hook = os.path.join(root, "etc/init.d/lanmesh-guard")
    assert os.readlink(os.path.join(root, "etc/rc.d/S94lanmesh-guard")) == "../init.d/lanmesh-guard"
    assert facts["HOOK"].split() == [hook, os.path.join(root, "etc/rc.d/S94lanmesh-guard")]
    for shell in (["sh", "-n"], ["busybox", "sh", "-n"]):
        if shutil.which(shell[0]):
            subprocess.run(shell + [hook], check=True)
    if shutil.which("shellcheck"):
        r = subprocess.run(["shellcheck", "-s", "dash", hook], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout
    assert os.access(os.path.join(d, "guard.sh"), os.X_OK)
    assert open(os.path.join(d, "next.manifest"), "rb").read() == b'{"doc": "signed"}'
    pid = int(_wait_for(os.path.join(d, "guard.pid")))
    assert t.guard_alive()
    os.killpg(pid, 9)                   # its own session: its sleep too
    _wait_gone(pid)
    assert not t.guard_alive()          # the pid file stays, the guard is gone
    with open(os.path.join(d, "guard.pid"), "w") as f:
        f.write(f"{os.getpid()}\n")     # a pid reused by another process is not the guard
    assert not t.guard_alive()
    with open(os.path.join(d, "result"), "w") as f:
        f.write("rolled-back 0.2.0 it did not confirm within 10s\n")
    assert t.result() == ("rolled-back", "0.2.0", "it did not confirm within 10s")


def _wait_gone(pid, timeout=10):
    import time
    end = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < end:
        try:
            os.waitpid(pid, os.WNOHANG)     # our child: reap it
        except ChildProcessError:
            pass
        time.sleep(0.02)


def _slow_pm(tmp_path):
    path = str(tmp_path / "slow-pm")
    with open(path, "w") as f:
        f.write("#!/bin/sh\nsleep 30\n")
    os.chmod(path, 0o755)
    return path


def _wait_for(path, timeout=10):
    import time
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if os.path.exists(path) and open(path).read().strip():
            return open(path).read().strip()
        time.sleep(0.02)
    raise AssertionError(f"{path} never written")


def test_systemd_hook_orders_before_lanmesh(tmp_path):
    root, d = str(tmp_path / "root"), str(tmp_path / "update")
    os.makedirs(os.path.join(root, "lib/systemd/system"))
    os.makedirs(d)
    assert trial.init_system(root) == "systemd"
    t = trial.Trial(d)
    _begin(t, root, "systemd", pm=_slow_pm(tmp_path))
    unit = open(os.path.join(root, "etc/systemd/system/lanmesh-guard.service")).read()
    assert "Before=lanmesh.service" in unit and f"{d}/guard.sh {d} boot" in unit
    link = os.path.join(root, "etc/systemd/system/multi-user.target.wants/lanmesh-guard.service")
    assert os.readlink(link) == "/etc/systemd/system/lanmesh-guard.service"
    os.killpg(int(_wait_for(os.path.join(d, "guard.pid"))), 9)   # its own session: sleep too


def test_nothing_that_could_break_the_trial_file_is_written(tmp_path):
    d = str(tmp_path / "update")
    os.makedirs(d)
    t = trial.Trial(d)
    with pytest.raises(ValueError):
        _begin(t, str(tmp_path), None, restart="x'; rm -rf /; '")
    assert t.facts() is None
