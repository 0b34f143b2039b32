# lanmesh.spawn replaces subprocess in the daemon (nft, uci, wireguard-go): what it must do.
import os
import time

import pytest

from lanmesh import spawn


def test_input_output_and_exit_code():
    big = "x" * 300_000                     # larger than a pipe: input and output interleave
    r = spawn.run(["cat"], input=big)
    assert (r.returncode, r.stdout, r.stderr) == (0, big, "")
    r = spawn.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    r = spawn.run(["head", "-c", "1"], input=big)      # stops reading early: no BrokenPipe
    assert (r.returncode, r.stdout) == (0, "x")


def test_failures_are_oserrors_with_reasons():
    with pytest.raises(FileNotFoundError):
        spawn.run(["lanmesh-no-such-program"])
    with pytest.raises(spawn.Failed, match="exited 1: nope"):
        spawn.run(["sh", "-c", "echo nope >&2; exit 1"], check=True)
    t0 = time.monotonic()
    with pytest.raises(spawn.Timeout, match="within 0.3 s"):
        spawn.run(["sleep", "30"], timeout=0.3)
    assert time.monotonic() - t0 < 5               # killed, not waited for
    assert issubclass(spawn.Timeout, OSError) and issubclass(spawn.Failed, OSError)


def test_no_descriptor_leaks_into_or_out_of_the_child(tmp_path):
    before = set(os.listdir("/proc/self/fd"))
    r = spawn.run(["sh", "-c", "ls /proc/self/fd"])
    # the child holds only 0, 1, 2 (and the fd ls opens to read its own directory)
    assert set(r.stdout.split()) <= {"0", "1", "2", "3"}, r.stdout
    for _ in range(20):
        spawn.run(["true"])
    assert set(os.listdir("/proc/self/fd")) == before


def test_started_child_in_its_own_group(tmp_path):
    out = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        child = spawn.start(["sh", "-c", "ps -o pgid= -p $$; exit 4"], stdout=out, stderr=out,
                            own_group=True)
    finally:
        os.close(out)
    assert child.wait() == 4 and child.poll() == 4
    assert int((tmp_path / "log").read_text().split()[0]) == child.pid   # its own group
    sleeper = spawn.start(["sleep", "30"])
    assert sleeper.poll() is None
    os.kill(sleeper.pid, 9)
    assert sleeper.wait() == -9
