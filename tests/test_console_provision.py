# Provisioning over real pseudo-terminals: a real /bin/sh behind OpenWrt's banner (and a
# login), kernel log lines injected at random moments, pyserial on the host end.
import json
import os
import stat
import subprocess
import sys
import time

import pytest
import serial

from console_device import Device
from lanmesh.operator import provision
from lanmesh.console.agent import Store
from lanmesh.keys import pubkey

FLEET_KEY = "u8YkRKsNMlcy6GBsvCEH9Y1sIWqBFo7mHJkLJ0SRqDY="
CA = ("-----BEGIN CERTIFICATE-----\n" + "\n".join(["MIIBszCCAVmgAwIBAgIUQ" + "x" * 43] * 30) +
      "\n-----END CERTIFICATE-----\n")
PASSWORD = "mqtt-s3cret-Zq9"


@pytest.fixture
def files(tmp_path):
    (tmp_path / "ca.pem").write_text(CA)
    (tmp_path / "pass").write_text(PASSWORD + "\n")
    (tmp_path / "login").write_text("toor\n")
    return tmp_path


@pytest.fixture
def device(tmp_path):
    made = []

    def make(**kw):
        path = tmp_path / ("etc-lanmesh-%d" % len(made))
        path.mkdir()
        d = Device(str(path), **kw)
        made.append(d)
        return d
    yield make
    for d in made:
        d.stop()


def argv(d, files, *extra, name="branch-7", lan="198.19.7.0/24"):
    a = ["--port", d.host_port, "--name", name, "--lan", lan, "--fleet", "acme",
         "--fleet-key", FLEET_KEY, "--broker", "mqtts://broker.example:8883",
         "--ca-file", str(files / "ca.pem"), "--password-file", str(files / "pass"),
         "--agent-cmd", d.agent_cmd]
    return a + list(extra)


def run_cli(a):
    lines = []
    rc = provision.main(a, out=lines.append)
    return rc, "\n".join(lines)


def provisioned_state(config_dir):
    """None if the device is untouched, else (config, public key); fails on anything in between."""
    from lanmesh.config import load_config
    node = os.path.join(config_dir, "node.json")
    gens = os.path.join(config_dir, "provisioned")
    leftovers = os.listdir(gens) if os.path.isdir(gens) else []
    if not os.path.exists(node):
        assert leftovers == [], "no node.json but files: %s" % leftovers
        return None
    cfg = load_config(node)
    assert len(leftovers) == 1 and not leftovers[0].startswith("."), leftovers
    st = os.stat(cfg.private_key_file)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(cfg.fleet["password_file"]).st_mode) == 0o600
    with open(cfg.fleet["password_file"]) as f:
        assert f.read() == PASSWORD
    with open(cfg.fleet["ca_file"]) as f:
        assert f.read() == CA
    with open(cfg.private_key_file) as f:
        key = f.read().strip()
    return cfg, pubkey(key), key


def test_provision_through_banner_login_and_kernel_noise(device, files):
    d = device(login="root", password="toor")
    rc, out = run_cli(argv(d, files, "--login", "root", "--login-password-file", str(files / "login")))
    assert rc == 0, out + "\n" + bytes(d.to_host[-2000:]).decode("latin-1")
    cfg, pub, private = provisioned_state(d.config_dir)
    assert cfg.name == "branch-7" and cfg.fleet["name"] == "acme" and cfg.fleet["username"] == "branch-7"
    assert cfg.fleet["public_key"] == FLEET_KEY and cfg.fleet["broker"] == "mqtts://broker.example:8883"
    with open(os.path.join(os.path.dirname(cfg.private_key_file), "provision.json")) as f:
        assert json.load(f)["lan"] == ["198.19.7.0/24"]
    assert "public key  %s (new)" % pub in out and "lanmesh fleet node add branch-7" in out
    assert b"Please press Enter" in d.to_host and b"] usb 1-1: new high-speed" in d.to_host
    # The private key crossed nothing; the MQTT password only went towards the device.
    wire = bytes(d.to_host) + bytes(d.to_device)
    assert private.encode() not in wire and private not in out
    assert PASSWORD.encode() not in d.to_host and PASSWORD.encode() in d.to_device
    assert b"toor" not in d.to_host  # the login password is not echoed either
    time.sleep(0.3)
    assert not d.agent_running()  # the agent left and gave the console back to the shell


def test_rerun_is_idempotent_and_rekey_rotates(device, files):
    d = device()
    rc, out = run_cli(argv(d, files))
    assert rc == 0, out
    _, pub1, _ = provisioned_state(d.config_dir)
    node_before = open(os.path.join(d.config_dir, "node.json")).read()
    rc, out = run_cli(argv(d, files))
    assert rc == 0 and "(kept)" in out and "unchanged" in out, out
    assert open(os.path.join(d.config_dir, "node.json")).read() == node_before
    rc, out = run_cli(argv(d, files, lan="198.19.8.0/24"))
    assert rc == 0 and "(kept)" in out and "generation 2" in out, out
    assert provisioned_state(d.config_dir)[1] == pub1
    rc, out = run_cli(argv(d, files, "--rekey", lan="198.19.8.0/24"))
    _, pub2, _ = provisioned_state(d.config_dir)
    assert rc == 0 and pub2 != pub1 and "rotated (--rekey)" in out and pub2 in out, out
    rc, out = run_cli(argv(d, files, "--dry-run", lan="198.19.9.0/24"))
    assert rc == 0 and "checked (dry run)" in out and "would keep the key" in out, out
    assert provisioned_state(d.config_dir)[1] == pub2


def test_errors_name_their_step(device, files):
    d = device()
    rc, out = run_cli(argv(d, files, lan="198.19.7.1/24"))
    assert rc == 1 and "failed at check: lan" in out
    rc, out = run_cli(argv(d, files, "--agent-cmd", "lanmesh-missing console"))
    assert rc == 1 and "failed at start agent" in out and "not found" in out, out
    d2 = device(login="root", password="toor")
    rc, out = run_cli(argv(d2, files))
    assert rc == 1 and "failed at wake console: the console asks for a login" in out, out


def test_batch_csv(device, files, tmp_path):
    d = device()
    csv = tmp_path / "batch.csv"
    csv.write_text("name,lan,port\nbranch-7,198.19.7.0/24 fd00:1:7::/64,%s\nbad,x,/nonexistent\n" % d.host_port)
    rc, out = run_cli(argv(d, files, "--batch", str(csv))[4:])
    assert rc == 1 and "batch: 1 provisioned, 1 failed" in out and "FAILED bad" in out, out
    cfg, _, _ = provisioned_state(d.config_dir)
    assert cfg.name == "branch-7"


def _frames_of_a_clean_run(device, files):
    d = device(kernel_log=False)
    rc, out = run_cli(argv(d, files))
    assert rc == 0, out
    n = d.frames
    d.stop()
    for p in ("node.json",):
        os.unlink(os.path.join(d.config_dir, p))
    import shutil
    shutil.rmtree(os.path.join(d.config_dir, "provisioned"))
    return n


def _provision_fast(d, files, tries):
    node = provision.Node("branch-7", ["198.19.7.0/24"], "acme", FLEET_KEY, "mqtts://broker.example:8883",
                          CA, None, PASSWORD)
    with serial.Serial(d.host_port, 115200, timeout=0.05) as port:
        return provision.provision(port, node, agent_cmd=d.agent_cmd, retry_ms=250, tries=tries,
                                   out=lambda s: None, wake_timeout=5)


@pytest.mark.parametrize("phase", ["after", "before"])
def test_cable_cut_at_every_step(device, files, phase):
    total = _frames_of_a_clean_run(device, files)
    assert total >= 12
    d = device()
    states = []
    for n in range(1, total + 1):
        if phase == "before" and n % 3:
            continue  # the request-lost half: every third step keeps the run short
        d.reconnect()
        d.cut(at=n, phase=phase)
        with pytest.raises(provision.ProvisionError):
            _provision_fast(d, files, tries=2)
        state = provisioned_state(d.config_dir)   # untouched or complete, never between
        states.append(state is not None)
        d.reconnect()
        s = _provision_fast(d, files, tries=6)    # re-running completes it
        cfg, pub, _ = provisioned_state(d.config_dir)
        assert s["public_key"] == pub and cfg.name == "branch-7"
        if state is not None:
            assert state[1] == pub  # a finished commit is kept, not redone with a new key
        for p in ("node.json",):
            os.unlink(os.path.join(d.config_dir, p))
        import shutil
        shutil.rmtree(os.path.join(d.config_dir, "provisioned"))
    assert False in states and (True in states or phase == "before")


def test_noise_during_provisioning(device, files):
    d = device()
    d.noise = True
    node = provision.Node("branch-7", ["198.19.7.0/24"], "acme", FLEET_KEY, "mqtts://broker.example:8883",
                          CA, None, PASSWORD)
    with serial.Serial(d.host_port, 115200, timeout=0.05) as port:
        s = provision.provision(port, node, agent_cmd=d.agent_cmd, retry_ms=400, tries=12, out=lambda s: None)
    assert s["changed"]
    assert provisioned_state(d.config_dir)[1] == s["public_key"]


def _agent_on_pty(config_dir):
    import pty
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "lanmesh.console.agent", "--config-dir", config_dir,
                          "--reboot-cmd", "true"], stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    return p, master


def _read_until(fd, token, timeout=5.0):
    import select
    buf, end = b"", time.monotonic() + timeout
    while token not in buf and time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            buf += os.read(fd, 65536)
    return buf


def test_agent_survives_garbage(tmp_path):
    from lanmesh.console.protocol import frame, REQ
    p, m = _agent_on_pty(str(tmp_path))
    try:
        assert b"lanmesh> " in _read_until(m, b"lanmesh> ")
        os.write(m, b"helpme now\r")
        assert b"ERR unknown-command" in _read_until(m, b"ERR")
        os.write(m, b"x" * 3000 + b"\r")
        assert b"ERR too-long" in _read_until(m, b"too-long")
        os.write(m, b"set name \xff\xfe\r")
        assert b"ERR bad-utf8" in _read_until(m, b"bad-utf8")
        os.write(m, b"set-secret password\r")
        got = _read_until(m, b"awaiting")
        os.write(m, b"typed-secret\r")
        got += _read_until(m, b'"set":"password"')
        assert b"typed-secret" not in got  # echo was off
        os.write(m, frame(REQ, 5, "status"))
        assert b"#<5 OK" in _read_until(m, b"#<5 OK")
        import random
        rng = random.Random(7)
        noise = bytes(rng.randrange(256) for _ in range(20000))
        for i in range(0, len(noise), 512):
            os.write(m, noise[i:i + 512])
        os.write(m, b"\r" + frame(REQ, 6, "abort") + frame(REQ, 7, "status"))
        got = _read_until(m, b"#<7 OK")
        assert b"#<7 OK" in got and b'"staged":[]' in got.split(b"#<7 OK")[1]
        assert p.poll() is None
        assert os.listdir(str(tmp_path)) == []  # nothing was written
        os.write(m, frame(REQ, 8, "exit"))
        p.wait(timeout=5)
    finally:
        if p.poll() is None:
            p.kill()
        os.close(m)


def test_store_crash_at_every_filesystem_step(tmp_path, monkeypatch):
    """A power cut (here: an exception) at any write/rename of a commit leaves the old state."""
    from lanmesh.keys import genkey
    from lanmesh.console import agent
    staged = {"name": "hq", "lan": ["198.19.1.0/24"], "fleet": "acme", "fleet-key": FLEET_KEY,
              "broker": "mqtts://b:8883", "ca": CA, "password": PASSWORD}
    base = Store(str(tmp_path / "ref"))
    key1, key2 = genkey(), genkey()
    base.commit(staged, key1)
    calls = {"n": 0, "fail": None}

    def counting(fn):
        def wrapped(*a, **kw):
            calls["n"] += 1
            if calls["n"] == calls["fail"]:
                raise OSError(5, "simulated power cut")
            return fn(*a, **kw)
        return wrapped

    for name in ("_write", "write_atomic", "_fsync_dir"):
        monkeypatch.setattr(agent, name, counting(getattr(agent, name)))
    monkeypatch.setattr(agent.os, "rename", counting(os.rename))
    fail = 1
    while True:
        d = tmp_path / ("c%d" % fail)
        s = Store(str(d))
        calls["fail"] = None
        s.commit(staged, key1)
        calls["n"], calls["fail"] = 0, fail
        try:
            s.commit(dict(staged, lan=["198.19.2.0/24"]), key2)
            done = True
        except OSError:
            done = False
        values, private = Store(str(d)).load()
        if done:
            assert private == key2 and values["lan"] == ["198.19.2.0/24"]
            break
        assert private == key1 and values["lan"] == ["198.19.1.0/24"], fail
        Store(str(d)).collect()
        assert os.listdir(str(d / "provisioned")) == ["1"]
        fail += 1
    assert fail >= 6
