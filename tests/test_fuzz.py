# Fuzzing every parser that takes outside input (tests/fuzz.py): only the module's own error
# type escapes, and a rejected input changes nothing (the console's staged values, the mesh
# node's link-state database). `make test` runs LANMESH_FUZZ_CASES (default 1,500) per
# parser; `make fuzz` runs 1,000,000 each.
import json

from lanmesh import netdoc, uci
from lanmesh.adapters import control
from lanmesh.config import ConfigError, loads_config
from lanmesh.console import protocol, session
from lanmesh.dataplane import uapi_proto
from lanmesh.errors import DocumentError
from lanmesh.fleet import agent, signing
from lanmesh.operator import controller
from lanmesh.keys import genkey, pubkey
from lanmesh.mesh import wire
from lanmesh.mesh.node import MeshNode, MessageReceived

import fuzz
from test_findings import document, _Fd
from test_mesh_sim import FakeKeys, doc_nodes, path_msg


def test_fuzz_mesh_wire_and_node():
    sig = FakeKeys("k2").sign
    lsa = wire.Lsa("c", 7, {"a": 3, "b": 9})
    lsa.sig = sig(wire.signed_bytes(lsa))
    seeds = [path_msg(wire.encode_probe, "b", 5, 77, "k1", "k0"),
             path_msg(wire.encode_ack, "b", 5, 9, "k1", "k0"),
             wire.encode_relay("b", "b", "c", True), wire.encode_relayed("b", "a", "c", 0, 1, 2),
             wire.encode_lsas("b", [lsa])[0], wire.encode_summary("b", [("c", 7), ("a", 1)])[0],
             wire.encode_request("b", ["c", "a"])[0]]
    node = MeshNode("a", doc_nodes(["a", "b", "c"]), keys=FakeKeys("k0"))
    node.tick(0)
    keys = {n["name"]: n["public_key"] for n in doc_nodes(["a", "b", "c"])}

    def parse(data):
        try:
            msg = wire.decode(data)
        except wire.WireError:
            msg = None
        before = node.lsdb.digest()
        effects = node.handle(MessageReceived("b", data), 1000)
        if msg is None:                 # refused: nothing stored, nothing sent back
            assert node.lsdb.digest() == before and effects == [], data
            return
        for lsa in msg.lsas:            # whatever got in carries its origin's signature
            got = node.lsdb.get(lsa.origin)
            if got is not None and got.seq == lsa.seq and got.sig == lsa.sig and lsa.origin != "a":
                assert FakeKeys(keys[lsa.origin]).verify(keys[lsa.origin], wire.signed_bytes(got),
                                                         got.sig), lsa
    fuzz.run("mesh", seeds, parse, ())


def test_fuzz_network_document():
    fuzz.run("netdoc", [json.dumps(document()).encode(), json.dumps(document(), indent=1).encode()],
             netdoc.loads, (DocumentError,))


def test_fuzz_signed_envelope():
    key = signing.generate_key()
    env = signing.envelope_bytes(signing.sign(document(), key))
    pub = signing.public_key(key)
    fuzz.run("envelope", [env], lambda d: signing.verify_document(d, pub),
             (signing.SignatureError, DocumentError))
    fuzz.run("envelope-peek", [env], lambda d: (agent._digest(d), agent._version_in(d)), ())


def test_fuzz_fleet_reported():
    rep = json.dumps({"node": "hq", "applied_version": 3, "pending_version": None,
                      "rollback": {"version": 4, "reason": "broker"}, "links_up": [1, 2],
                      "rejected": [{"version": 2, "reason": "old"}], "time": 1,
                      "software": "0.1.0", "update": {"state": "rejected", "version": "0.2.0",
                                                      "chunks": [1, 5], "reason": "truncated"}}).encode()

    def parse(data):
        rows = controller.status_rows(_Fd(), {"lanmesh/acme/node/hq/reported": data,
                                              "lanmesh/acme/node/hq/state": data[:20]}, 2)
        table = controller.format_table(rows)
        assert not any(ord(c) < 32 and c != "\n" for c in table)
    fuzz.run("reported", [rep], parse, ())


def test_fuzz_release_manifest_and_chunk_topics():
    # the signature is checked first on a router; past it, the manifest's shape is judged by
    # validate() and Release, which must refuse with reasons, never raise anything else
    from lanmesh import boundjson
    from lanmesh.fleet import topics
    from lanmesh.release import manifest as mf
    doc = {"kind": mf.KIND, "fleet": "acme", "version": "0.2.0-r1", "boards": ["x"],
           "min_from": "0.1.0", "artefacts": {"ipk": {
               "file": "lanmesh_0.2.0-r1_all.ipk", "size": 40000, "sha256": "ab" * 32,
               "chunk_size": 32768, "chunks": ["cd" * 32, "ef" * 32]}}}
    seed = json.dumps(doc).encode()

    def parse(data):
        d = boundjson.loads(data, mf.MAX_MANIFEST_BYTES, "manifest")
        if not isinstance(d, dict):
            return
        if not mf.validate(d) and "ipk" in d["artefacts"]:
            r = mf.Release(d, "ipk", data)
            assert sum(r.chunk_length(i) for i in range(r.chunks)) == r.artefact["size"]
            mf.parse_version(r.version)
    fuzz.run("release-manifest", [seed], parse, (boundjson.JsonError,))
    fuzz.run("release-peek", [json.dumps({"doc": doc, "sig": "x"}).encode()], mf.peek_version, ())
    fuzz.run("chunk-topic", [b"lanmesh/acme/update/0.2.0/ipk/3"],
             lambda d: topics.parse_chunk("lanmesh/acme/", d.decode("utf-8", "replace")), ())


def test_fuzz_console_device_side():
    lines = [b"help", b"status", b"set name hq", b'set lan ["198.19.1.0/24"]', b"set fleet acme",
             b"set-secret password", b'"pw"', b"append ca abc", b"show config", b"abort",
             protocol.frame(protocol.REQ, 9, "set name hq").rstrip(), b"machine", b"plain",
             b"keygen", b"commit", b"set broker mqtts://b:8883"]
    state = {"c": session.Console()}

    def parse(data):
        c = state["c"]
        before = dict(c.staged)
        effects = c.receive_data(data + b"\r")
        out = b""
        while effects:
            e = effects.pop(0)
            if isinstance(e, protocol.Write):
                out += e.args[0]
            elif isinstance(e, protocol.Perform):
                effects += c.failed("io", "fuzz")
            elif isinstance(e, protocol.Exit):
                state["c"] = session.Console()
        if b"ERR " in out and b"OK " not in out and not c.awaiting:
            assert c.staged == before, (data, before, c.staged)
    fuzz.run("console-device", lines, parse, ())


def test_fuzz_console_host_side():
    host = protocol.Host()
    host.request("hello", 0)
    seeds = [protocol.frame(protocol.REP, host.seq, 'OK {"protocol":1,"name":"hq"}'),
             protocol.frame(protocol.REP, host.seq, "ERR bad-key unknown key"),
             protocol.frame(protocol.REP, 0, "ERR bad-crc damaged frame"), b"[  12.3] usb 1-1: new\r\n"]

    def parse(data):
        host.receive_data(data, 1)
        if host.out is None:
            host.request("hello", 2)
    fuzz.run("console-host", seeds, parse, ())


def test_fuzz_uci():
    text = uci.dump_uci({"name": "hq", "interface": "lanmesh0", "backend": "kernel",
                         "listen_port": 51820, "fleet": {"name": "acme", "public_key": "x" * 44,
                                                         "broker": "mqtts://b:8883",
                                                         "ca_file": "/etc/lanmesh/ca.pem"}},
                        {"enabled": True, "lan_prefix": ["198.19.1.0/24"]}).encode()

    def parse(data):
        try:
            t = data.decode("utf-8")
        except UnicodeDecodeError:
            return
        uci.node_from_uci(t)
        uci.service_from_uci(t)
    fuzz.run("uci", [text], parse, (ConfigError,))


def test_fuzz_uapi_replies():
    get = ("private_key=" + "a" * 64 + "\nlisten_port=51820\npublic_key=" + "b" * 64 +
           "\nendpoint=198.18.0.1:51820\nallowed_ip=198.19.1.0/24\nallowed_ip=fd00::1/128\n"
           "last_handshake_time_sec=5\nlast_handshake_time_nsec=7\nrx_bytes=1\ntx_bytes=2\n"
           "persistent_keepalive_interval=25\nprotocol_version=1\nerrno=0\n\n").encode()

    def parse(data):
        text = data.decode("utf-8", "replace")
        uapi_proto.parse_get(text)
    fuzz.run("uapi-get", [get], parse, (uapi_proto.UapiError,))
    fuzz.run("uapi-set", [b"errno=0\n\n", b"errno=-22\n\n"],
             lambda d: uapi_proto.check_errno(d.decode("utf-8", "replace")), (uapi_proto.UapiError,))


def test_fuzz_control_socket_requests():
    fuzz.run("control", [b'{"cmd": "status"}', b"{}"], control.parse_request, (ValueError,))


def test_fuzz_node_config():
    cfg = json.dumps({"name": "hq", "interface": "lanmesh0", "backend": "uapi", "listen_port": 51820,
                      "fleet": {"name": "acme", "public_key": pubkey(genkey()),
                                "broker": "mqtts://198.18.1.1:8883", "min_version": 3}}).encode()
    fuzz.run("config", [cfg], lambda d: loads_config(d, "/etc/lanmesh/node.json"), (ConfigError,))
