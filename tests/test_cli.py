# The `lanmesh` command line itself: `run` parsed without argparse (it costs the idle
# daemon ~0.6 MB RSS) exactly as argparse would, and output into a closed pipe.
import os
import subprocess
import sys

import pytest

FIRMWARE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "firmware")


@pytest.mark.parametrize("argv", [
    ["run"], ["run", "--config", "/x.json"], ["run", "--uci=/etc/config/lanmesh"],
    ["run", "--uci", "/u", "--log-level", "debug"], ["run", "--log-level=error", "--config=/c"],
])
def test_run_is_parsed_without_argparse_exactly_as_argparse_would(argv):
    from lanmesh import cli
    fast = cli._fast_run_args(argv)
    slow = cli.build_parser().parse_args(argv)
    assert fast is not None
    for name in ("config", "uci", "log_level"):
        assert getattr(fast, name) == getattr(slow, name), name
    assert fast.func is slow.func


@pytest.mark.parametrize("argv", [
    ["run", "--help"], ["run", "--config"], ["run", "--config", "a", "--uci", "b"],
    ["run", "--log-level", "loud"], ["run", "--config", "a", "--config", "b"], ["status"],
])
def test_anything_else_goes_to_argparse(argv):
    from lanmesh import cli
    assert cli._fast_run_args(argv) is None


def test_a_closed_pipe_ends_a_command_quietly():
    # `lanmesh status | head`: the reader leaves early; no BrokenPipe traceback, at the
    # write or at exit (a command that prints 1 MB, so the pipe surely breaks)
    code = ("import sys, lanmesh.cli as c\n"
            "c.cmd_genkey = lambda a: [print('x' * 1000) for _ in range(1000)] and 0\n"
            "sys.exit(c.main(['genkey']))\n")
    r = subprocess.run(f"{sys.executable} -c \"{code}\" | head -c 1", shell=True,
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=FIRMWARE))
    assert r.stdout == "x"
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr
