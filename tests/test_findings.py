# The security review's findings (issue 10), each with its exact input: a clean rejection
# with a reason, nothing half-applied, no secret echoed. The mesh-core findings (forged
# adverts, seq wrap, amplification) are in test_mesh_attack.py; the LAN-host spoof and the
# half-applied document in test_mesh_security.py; the MQTT client-id takeover in
# test_fleet_mqtt.py.
import ipaddress
import json
import os
import socket
import time

import pytest

from lanmesh import aio, atomic, boundjson, netdoc
from lanmesh.adapters import control
from lanmesh.config import ConfigError, parse_config
from lanmesh.console import protocol, session
from lanmesh.errors import DocumentError, KeyError_
from lanmesh.fleet import signing
from lanmesh.operator import controller
from lanmesh.keys import genkey, pubkey, read_private_key
from lanmesh.mesh import wire
from lanmesh.mesh.node import MeshNode

from test_mesh_sim import FakeKeys, doc_nodes

NESTED = b"[" * 100000 + b"]" * 100000
BIG_INT = b"1" * 5000


def document(**over):
    k = [pubkey(genkey()) for _ in range(2)]
    doc = {"fleet": "acme", "version": 3, "overlay": {"ipv4": "100.64.0.0/10", "ipv6": "fd00:6c6d::/64"},
           "nodes": [{"name": f"site-{i}", "public_key": k[i], "address": [f"100.64.0.{i + 1}/32",
                                                                          f"fd00:6c6d::{i + 1}/128"],
                      "lan": [f"198.19.{i + 1}.0/24"], "endpoints": [f"198.18.0.{i + 1}:51820"]}
                     for i in range(2)]}
    doc.update(over)
    return doc


# -- 6: fleet parsing ---------------------------------------------------------------------------
@pytest.mark.parametrize("payload", [NESTED, b'{"doc": ' + NESTED + b', "sig": "x"}',
                                     b'{"doc": {"version": ' + BIG_INT + b'}, "sig": "x"}',
                                     b'{"doc": {"version": NaN}, "sig": "x"}'])
def test_nested_or_huge_payload_on_net_is_rejected_before_anything(payload):
    key = signing.public_key(signing.generate_key())
    with pytest.raises(signing.SignatureError) as e:
        signing.verify_document(payload, key)
    assert "nested" in str(e.value) or "digits" in str(e.value) or "not JSON" in str(e.value)


def test_nested_and_huge_documents_and_configs_are_rejected_with_a_reason():
    with pytest.raises(DocumentError, match="nested deeper"):
        netdoc.loads(NESTED)
    raw = json.dumps(document()).replace('"version": 3', '"version": ' + BIG_INT.decode())
    with pytest.raises(DocumentError, match="5000 digits"):
        netdoc.loads(raw)
    with pytest.raises(boundjson.JsonError):
        boundjson.loads(b'{"a": ' + NESTED + b"}", 1 << 22)


def test_provisioning_tool_survives_a_nested_reply_from_the_device():
    host = protocol.Host()
    host.request("hello", 0)
    bad = protocol.frame(protocol.REP, host.seq, b"OK " + b"[" * 5000 + b"]" * 5000)
    assert host.receive_data(bad, 1) == []                  # skipped, the retry covers it
    good = protocol.frame(protocol.REP, host.seq, b'OK {"protocol": 1}')
    assert [type(e).__name__ for e in host.receive_data(good, 2)] == ["Reply"]


def test_control_socket_request_is_bounded():
    for data in (NESTED[:4000], b"[1]", b"1" * 4000, b'{"cmd": ' + BIG_INT[:50] + b"}"):
        with pytest.raises(ValueError):
            control.parse_request(data)
    assert control.parse_request(b'{"cmd": "status"}') == {"cmd": "status"}


class _Reg:
    fleet = "acme"

    def nodes(self):
        return [{"name": "hq"}]

    def last_published(self):
        return (7, b"")

    def get(self, k, default=None):
        return default


class _Fd:
    registry = _Reg()

    def prefix(self):
        return "lanmesh/acme/"


def test_one_nodes_malformed_report_never_breaks_fleet_status():
    evil = {"applied_version": "v9\x1b[2J", "pending_version": 2 ** 60, "links_up": "all",
            "rollback": {"version": [], "reason": "\x1b]0;pwned\x07 boom\r\n"},
            "rejected": [{"version": 1, "reason": "x" * 5000}, 5, "junk"], "time": "now"}
    msgs = {"lanmesh/acme/node/hq/reported": json.dumps(evil).encode(),
            "lanmesh/acme/node/hq/state": b"online\x1b[31m",
            "lanmesh/acme/node/ev\x1bil/reported": NESTED,
            "lanmesh/acme/node/x/reported": b"[1, 2]",
            "lanmesh/acme/node/y/reported": b'{"applied_version": ' + BIG_INT + b"}"}
    rows = controller.status_rows(_Fd(), msgs, time.time())
    hq = rows[0]
    assert hq["applied_version"] is None and hq["pending_version"] is None
    assert hq["links_up"] is None and hq["last_seen"] is None
    assert hq["rollback"] == {"version": None, "reason": "]0;pwned boom"}
    assert len(hq["rejected"]) == 1 and len(hq["rejected"][0]["reason"]) <= 200
    table = controller.format_table(rows)
    assert not any(ord(c) < 32 and c != "\n" or 0x7f <= ord(c) < 0xa0 for c in table)
    assert "unreadable report" in table


# -- 9: low -------------------------------------------------------------------------------------
def test_console_err_never_echoes_the_request():
    c = session.Console()
    secret = "hunter2-correct-horse-battery"
    out = b"".join(e.args[0] for e in c.receive_data(secret.encode() + b"\r"))
    assert b"unknown-command" in out and secret.encode() not in out
    out = b"".join(e.args[0] for e in c.receive_data(b"set " + secret.encode() + b" x\r"))
    assert b"bad-key" in out and secret.encode() not in out


@pytest.mark.parametrize("name", ["site-1\n", "site-1\r", "site-1 ", "Site-1"])
def test_names_need_a_full_match(name):
    doc = document()
    doc["nodes"][0]["name"] = name
    assert any("nodes[0].name" in p for p in netdoc.validate(doc))
    assert any(p.startswith("fleet:") for p in netdoc.validate(document(fleet=name)))
    with pytest.raises(ConfigError):
        parse_config({"name": name})


@pytest.mark.parametrize("endpoint", ["host\n:51820", "evil\nset=1:51820", "a b:51820", "-x:1",
                                      "x..y:51820", "[::1\n]:51820", "host:５１８２０"])
def test_endpoint_hosts_are_names_or_addresses(endpoint):
    doc = document()
    doc["nodes"][0]["endpoints"] = [endpoint]
    assert any("endpoints[0]" in p for p in netdoc.validate(doc)), endpoint


def test_mesh_port_must_differ_from_listen_port():
    doc = document(settings={"mesh_port": 51820})
    assert any("mesh_port" in p for p in netdoc.validate(doc))
    doc = document(settings={"listen_port": 51821})      # the default mesh port
    assert any("mesh_port" in p for p in netdoc.validate(doc))


def test_lan_overlap_check_is_n_log_n_and_finds_what_brute_force_finds():
    import random
    rnd = random.Random(7)
    for _ in range(200):
        nets = []
        for i in range(12):
            plen = rnd.choice((16, 20, 24, 28))
            base = int(ipaddress.ip_address("198.18.0.0")) + (rnd.randrange(1 << 12) << 8)
            nets.append((("n%d" % rnd.randrange(4), "lan%d" % i),
                         ipaddress.ip_network((base >> (32 - plen) << (32 - plen), plen))))
        found = []
        netdoc._lan_overlaps(nets, found)
        brute = any(a[0][0] != b[0][0] and a[1].overlaps(b[1]) for i, a in enumerate(nets)
                    for b in nets[i + 1:])
        assert bool(found) == brute
    # the finding: 4,000 prefixes took 6.7 s on the loop
    nets = [(("n%d" % i, "x"), ipaddress.ip_network(f"10.{i // 250}.{i % 250}.0/24")) for i in range(4000)]
    t = time.perf_counter()
    netdoc._lan_overlaps(nets, [])
    assert time.perf_counter() - t < 1.0


def test_trickling_control_client_neither_holds_the_loop_nor_the_socket(tmp_path):
    path = str(tmp_path / "c.sock")

    async def main():
        from lanmesh import aio
        server = control.listen(path)
        stop = aio.Event()
        aio.create_task(control.serve(server, lambda req: {"ok": req.get("cmd")}, stop))
        loop = aio.get_running_loop()
        trickler = socket.socket(socket.AF_UNIX)
        trickler.connect(path)              # a local socket: connects at once
        trickler.setblocking(False)
        late = []

        async def ticker():
            for _ in range(30):
                t = time.monotonic()
                await aio.sleep(0.1)
                late.append(time.monotonic() - t - 0.1)
        tick = aio.create_task(ticker())
        for b in b'{"cmd": "st':
            trickler.send(bytes((b,)))        # one byte always fits the buffer
            await aio.sleep(0.25)
            if len(late) > 10:
                break
        other = await loop.run_in_executor(None, control.request, path, {"cmd": "status"}, 2.0)
        await tick
        await aio.wait_readable(trickler)
        gone = trickler.recv(100)
        stop.set()
        server.close()
        return late, other, gone
    late, other, gone = aio.run(main())
    assert other == {"ok": "status"}
    assert max(late) < 0.2, late          # the loop never waited for the trickler
    assert gone == b""                    # dropped at its deadline


def test_atomic_write_never_follows_a_planted_symlink(tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    target = tmp_path / "state.json"
    # the old predictable name, and the next "random" one, planted in advance
    os.symlink(victim, f"{target}.tmp.{os.getpid()}")
    names = iter([b"\x01" * 8, b"\x01" * 8, b"\x02" * 8])
    monkeypatch.setattr(os, "urandom", lambda n: next(names))
    os.symlink(victim, tmp_path / f".state.json.{'01' * 8}.tmp")
    atomic.write_atomic(str(target), "new")
    assert victim.read_text() == "untouched" and target.read_text() == "new"
    assert not (tmp_path / f".state.json.{'02' * 8}.tmp").exists()


def test_malformed_private_key_is_not_echoed(tmp_path):
    p = tmp_path / "private.key"
    p.write_text("SECRETSECRETSECRET-not-a-key")
    os.chmod(p, 0o600)
    with pytest.raises(KeyError_) as e:
        read_private_key(str(p))
    assert "SECRET" not in str(e.value)


def test_relay_is_off_unless_the_document_says_so():
    d = netdoc.loads(json.dumps(document()))
    assert not any(n.relay for n in d.nodes.values())


# -- 3: seq wrap --------------------------------------------------------------------------------
def test_own_sequence_number_saturates_instead_of_wrapping():
    n = MeshNode("a", doc_nodes(["a", "b"]), keys=FakeKeys("k0"))
    n.tick(0)
    n.seq = wire.U32 - 1
    n._originate(1, [])
    n._originate(2, [])
    assert n.seq == wire.U32 and n.lsdb.get("a").seq == wire.U32
