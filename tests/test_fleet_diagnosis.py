# Issue 13: a router says why it is not on its broker — each failure its own reason, in the
# log and in `lanmesh status`, within 5 s. Whole daemons in-process (lanmesh_lab.inprocess)
# against the real mosquitto of test_fleet_mqtt; the failures that need a network of their
# own (DNS, no route, no answer) run in a namespace with the lab's DNS server.
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from lanmesh import keys
from lanmesh_lab.inprocess import Background
from lanmesh_lab.netns import Namespaces
from mqtt_broker import free_port, make_ca
from test_fleet_mqtt import FIRMWARE, fleet, lanmesh, node_cfg  # noqa: F401 (fixture)


def _status(cfg):
    r = lanmesh("status", "--config", cfg.path, timeout=10)
    return r.stdout + r.stderr


def _wait_reasons(cfgs, reasons, started, limit=5.0):
    """Each node's `lanmesh status` names its reason within `limit` s of `started`."""
    seen = {}
    while len(seen) < len(cfgs) and time.monotonic() - started < limit + 3:
        for cfg, reason in zip(cfgs, reasons):
            if cfg.name not in seen:
                text = _status(cfg)
                if (": NOT connected (" in text or ": connected, NOT working (" in text) \
                        and reason in text:
                    seen[cfg.name] = round(time.monotonic() - started, 1)
        time.sleep(0.2)
    missing = {c.name: (r, _status(c)) for c, r in zip(cfgs, reasons) if c.name not in seen}
    assert not missing, missing
    assert max(seen.values()) <= limit, seen
    return seen


def _write_cfg(tmp, name, **fleet_settings):
    d = tmp / name
    d.mkdir()
    keys.write_private_key(str(d / "private.key"), keys.genkey())
    (d / "mqtt.pass").write_text("pw\n")
    from lanmesh.config import parse_config
    raw = {"name": name, "interface": "lmd-" + name, "state_dir": "state", "run_dir": "run",
           "private_key_file": "private.key", "document": "network.json",
           "fleet": dict({"name": "acme", "public_key": keys_pub(), "username": name,
                          "password_file": "mqtt.pass"}, **fleet_settings)}
    (d / "node.json").write_text(json.dumps(raw))
    return parse_config(raw, str(d / "node.json"))


def keys_pub():
    from lanmesh.fleet import signing
    return signing.public_key(signing.generate_key())


def test_each_broker_failure_has_its_own_reason_in_log_and_status(fleet, tmp_path, caplog):
    os.makedirs(tmp_path / "other-ca")
    other = make_ca(str(tmp_path / "other-ca"), ("127.0.0.1",))
    f = fleet
    cfgs = [
        _write_cfg(tmp_path, "refused", broker=f"mqtts://127.0.0.1:{free_port()}",
                   ca_file=f.broker.ca_file),
        _write_cfg(tmp_path, "wrongca", broker=f.broker.url, ca_file=other["ca.pem"]),
        f.cfg("hq"),                                       # its password, changed below
        node_cfg(f.tmp, "branch", f.fd, f.broker, f.passwords["branch"], keys.genkey(),
                 fleet={"name": "acne", "topic_prefix": "lanmesh/acne/"}),   # wrong fleet name
    ]
    with open(cfgs[2].fleet["password_file"], "w") as fh:
        fh.write("wrong\n")
    reasons = ["connection refused (nothing listens on port",
               "certificate does not verify against " + other["ca.pem"],
               "not authorized (wrong password",
               "does not deliver this node's own messages back"]
    t0 = time.monotonic()
    b = Background(cfgs)
    f.running.append(b)
    seen = _wait_reasons(cfgs, reasons, t0)
    for r in reasons:
        assert r in caplog.text, r
    fs = b.daemons[3].status()["fleet_state"]
    assert "fleet name (acne: topics under lanmesh/acne/)" in fs["broker_error"], fs
    print("reasons shown after", seen)


NODE_PROC = r"""
import json, sys
from lanmesh.config import parse_config
from lanmesh_lab.inprocess import Background
Background([parse_config(c, p) for c, p in json.loads(sys.argv[1])]).thread.join()
"""


@pytest.mark.netns
def test_dns_no_route_and_no_answer_each_say_so(tmp_path):
    """In a namespace of its own: a name the resolver does not know, a broker with no route
    to it, and one whose SYNs vanish (dropped by the namespace behind the link)."""
    ns = Namespaces()
    etc = None
    try:
        n, void = ns.add("diag"), ns.add("void")
        ns.veth(n, "wan0", void, "wan0")
        ns.exec(n, "ip", "addr", "add", "198.18.0.1/24", "dev", "wan0")
        ns.exec(void, "ip", "addr", "add", "198.18.0.9/24", "dev", "wan0")
        ns.exec(void, "nft", "-f", "-", input="table inet lmdiag {\n chain input {\n  type filter "
                "hook input priority 0;\n  tcp dport 1883 drop\n }\n}\n")   # SYNs vanish there
        table = tmp_path / "dns.json"
        table.write_text(json.dumps({"known.lab": "198.18.0.9"}))
        dns = ns.popen(n, [sys.executable, "-m", "lanmesh_lab.dns", str(table), "0"],
                       stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=FIRMWARE))
        assert dns.stdout.readline().strip() == "ready"
        etc = f"/etc/netns/{n}"
        os.makedirs(etc, exist_ok=True)
        with open(os.path.join(etc, "resolv.conf"), "w") as fh:
            fh.write("nameserver 127.0.0.1\noptions timeout:2 attempts:1\n")
        cfgs = [_write_cfg(tmp_path, "dns", broker="mqtt://no-such-broker.lab:1883"),
                _write_cfg(tmp_path, "noroute", broker="mqtt://198.19.9.9:1883"),
                _write_cfg(tmp_path, "silent", broker="mqtt://known.lab:1883")]
        reasons = ["cannot resolve no-such-broker.lab", "unreachable: Network is unreachable",
                   "unreachable: connect timed out"]
        log = open(tmp_path / "daemons.log", "w")
        t0 = time.monotonic()
        ns.popen(n, [sys.executable, "-c", NODE_PROC, json.dumps([[c.raw, c.path] for c in cfgs])],
                 stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=FIRMWARE))
        seen = _wait_reasons(cfgs, reasons, t0)
        text = (tmp_path / "daemons.log").read_text()
        for r in reasons:
            assert r in text, (r, text)
        print("reasons shown after", seen)
    finally:
        ns.teardown()
        if etc:
            shutil.rmtree(etc, ignore_errors=True)


def test_sighup_on_a_fleet_router_says_nothing_about_a_local_document(tmp_path, caplog):
    """A fleet router has no network.json: a reload must not log an ERROR about it."""
    import logging
    cfg = _write_cfg(tmp_path, "quiet", broker=f"mqtt://127.0.0.1:{free_port()}")
    b = Background([cfg])
    try:
        with caplog.at_level(logging.INFO):
            b.daemons[0].request_reload()
            time.sleep(1.5)                 # the supervisor handles it within a second
        assert b.alive()
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert not errors, errors
        assert "network.json" not in caplog.text
    finally:
        b.stop()
