# The router's own MQTT 3.1.1 client (lanmesh.adapters.mqtt + mqtt_codec): the codec's
# bounds and refusals (fuzzed), and the session against a real mosquitto (TLS, passwords,
# ACL): events, retained messages, QoS 1 publishes queued offline and sent on reconnect,
# and failures that say what is wrong (refused port, wrong CA, bad password, unknown
# name). (mosquitto 2.0 grants an ACL-denied MQTT 3.1.1 subscription and then drops its
# messages, so a SUBACK refusal, which the client reports, cannot be shown with it.)
import os
import socket
import struct

import pytest
from hypothesis import given, settings, strategies as st

from lanmesh import aio
from lanmesh.adapters import mqtt, mqtt_codec as codec
from mqtt_broker import Broker, free_port, make_ca

PREFIX = "lanmesh/acme/"


# --- codec -------------------------------------------------------------------------------

def test_packets_round_trip_through_the_decoder():
    d = codec.Decoder()
    # what a broker sends: CONNACK, a retained QoS 1 PUBLISH, PUBACK, SUBACK, PINGRESP
    big = b"x" * 300                                        # a 2-byte remaining length
    wire = (bytes([0x20, 2, 0, 0]) + codec.publish("a/b", big, 1, True, 7)
            + bytes([0x40, 2, 0, 9]) + bytes([0x90, 4, 0, 1, 1, 0x80]) + bytes([0xD0, 0]))
    got = []
    for i in range(0, len(wire), 5):                        # arrives in pieces
        got += d.feed(wire[i:i + 5])
    assert got == [("connack", False, 0), ("publish", "a/b", big, 1, True, 7), ("puback", 9),
                   ("suback", 1, [1, 0x80]), ("pingresp",)]


def test_connect_carries_will_and_credentials():
    pkt = codec.connect("lanmesh-hq", 30, "hq", "pw", will=("t/state", "lost"))
    assert pkt[0] == 0x10
    body = pkt[2:]
    assert body[:6] == b"\x00\x04MQTT" and body[6] == 4
    assert body[7] == 0x02 | 0x04 | 0x08 | 0x20 | 0x80 | 0x40
    assert struct.unpack("!H", body[8:10]) == (30,)


@pytest.mark.parametrize("wire, why", [
    (bytes([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]), "longer than 4 bytes"),
    (bytes([0x30]) + bytes([0xFF, 0xFF, 0x7F]), "over the"),           # 2 MB announced
    (bytes([0x34, 4, 0, 1, ord("a"), 0]), "QoS 2"),
    (bytes([0x20, 3, 0, 0, 0]), "CONNACK: malformed"),
    (bytes([0x30, 3, 0, 9, ord("a")]), "truncated"),
    (bytes([0x30, 4, 0, 2, 0xFF, 0xFE]), "not UTF-8"),
    (bytes([0xA0, 0]), "unexpected packet type 10"),
])
def test_malformed_or_oversized_packets_are_refused(wire, why):
    with pytest.raises(codec.ProtocolError, match=why):
        codec.Decoder(max_packet=1 << 20).feed(wire)


def test_an_oversized_packet_is_refused_before_it_is_buffered():
    d = codec.Decoder(max_packet=1000)
    with pytest.raises(codec.ProtocolError, match="over the 1000-byte limit"):
        d.feed(bytes([0x30, 0xE9, 0x07]))                  # 1001 announced, nothing sent yet


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_the_decoder_refuses_or_parses_but_never_crashes(data):
    try:
        codec.Decoder(max_packet=4096).feed(data)
    except codec.ProtocolError:
        pass


# --- sessions against mosquitto -----------------------------------------------------------

@pytest.fixture
def broker(tmp_path):
    b = Broker(str(tmp_path / "broker"), {"hq": "pw-hq", "controller": "pw-ctl"}, prefix=PREFIX)
    b.start()
    yield b
    b.stop()


def _link(broker, user="hq", password="pw-hq", **kw):
    kw.setdefault("ca_file", broker.ca_file)
    return mqtt.MqttLink(broker.url, "lanmesh-" + user, username=user, password=password,
                         keepalive=kw.pop("keepalive", 5), backoff=kw.pop("backoff", (0.2, 0.5)),
                         **kw)


async def _expect(link, kind, timeout_ms=5000):
    while True:
        ev = await link.next_event(timeout_ms)
        assert ev is not None, f"no {kind} event"
        if ev[0] == kind:
            return ev


def test_session_subscribes_receives_retained_and_gets_acks(broker):
    async def main():
        a = _link(broker)
        a.subscribe(PREFIX + "net")
        a.start()
        await _expect(a, mqtt.CONNECTED)
        ctl = mqtt.MqttLink(broker.controller_url, "ctl", ca_file=broker.ca_file,
                            username="controller", password="pw-ctl")
        ctl.start()
        await _expect(ctl, mqtt.CONNECTED)
        mid = ctl.publish(PREFIX + "net", b"doc-v1", qos=1, retain=True)
        assert (await _expect(ctl, mqtt.ACKED))[1] == mid
        ev = await _expect(a, mqtt.MESSAGE)
        assert ev[1:] == (PREFIX + "net", b"doc-v1", False)
        # a new session gets the retained copy
        b = _link(broker)
        b.subscribe(PREFIX + "net")
        b.start()
        ev = await _expect(b, mqtt.MESSAGE)
        assert ev[1:] == (PREFIX + "net", b"doc-v1", True)
        for link in (a, b, ctl):
            link.close()
    aio.run(main())


def test_qos1_publishes_made_offline_are_sent_after_reconnect(broker):
    async def main():
        a = _link(broker)
        a.start()
        await _expect(a, mqtt.CONNECTED)
        broker.stop()
        await _expect(a, mqtt.LOST)
        mid = a.publish(PREFIX + "node/hq/reported", b'{"v": 1}', qos=1)
        broker.start()
        await _expect(a, mqtt.CONNECTED, 10000)
        assert (await _expect(a, mqtt.ACKED))[1] == mid
        a.close()
    aio.run(main())


def _first_loss(broker, **kw):
    async def main():
        a = _link(broker, **kw)
        a.start()
        ev = await _expect(a, mqtt.LOST)
        a.close()
        return ev[1]
    return aio.run(main())


def test_failures_say_what_is_wrong(broker, tmp_path):
    assert "not authorized (wrong password" in _first_loss(broker, password="wrong")
    os.makedirs(tmp_path / "other")
    other = make_ca(str(tmp_path / "other"), ("127.0.0.1",))
    why = _first_loss(broker, ca_file=other["ca.pem"])
    assert "does not verify against" in why and other["ca.pem"] in why
    closed = mqtt.MqttLink(f"mqtts://127.0.0.1:{free_port()}", "x", ca_file=broker.ca_file,
                           backoff=(0.2, 0.5))

    async def refused():
        closed.start()
        ev = await _expect(closed, mqtt.LOST)
        closed.close()
        return ev[1]
    assert "connection refused" in aio.run(refused())
    # DNS, no route and no answer: tests/test_fleet_diagnosis.py, in a namespace with the
    # lab's resolver (a lookup from here would leave the machine).


def test_a_clean_close_publishes_the_final_state_not_the_will(broker):
    async def main():
        a = _link(broker, will=(PREFIX + "node/hq/state", "lost"))
        a.start()
        await _expect(a, mqtt.CONNECTED)
        a.close(final=(PREFIX + "node/hq/state", "offline"))
        watcher = mqtt.MqttLink(broker.controller_url, "w", ca_file=broker.ca_file,
                                username="controller", password="pw-ctl")
        watcher.subscribe(PREFIX + "node/hq/state")
        watcher.start()
        ev = await _expect(watcher, mqtt.MESSAGE)
        watcher.close()
        return ev[2]
    assert aio.run(main()) == b"offline"


def test_tls_through_the_public_ssl_module_too(broker, tmp_path):
    # lanmesh.adapters.tls uses _ssl directly where it can; LANMESH_TLS=ssl takes the
    # public module (another Python): both verify and carry the session alike
    import subprocess
    import sys
    code = (
        "import sys\n"
        "from lanmesh import aio\n"
        "from lanmesh.adapters import mqtt, tls\n"
        "async def main():\n"
        f"    a = mqtt.MqttLink({broker.url!r}, 'x', ca_file={broker.ca_file!r}, username='hq',"
        " password='pw-hq', backoff=(0.2, 0.5))\n"
        "    a.start()\n"
        "    ev = await a.next_event(5000)\n"
        "    a.close()\n"
        "    return ev\n"
        "print(tls.PRIVATE, aio.run(main()), 'ssl' in sys.modules)\n")
    out = {}
    for mode in ("", "ssl"):
        env = dict(os.environ, LANMESH_TLS=mode)
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                           timeout=30)
        out[mode] = r.stdout.strip() or r.stderr
    assert out[""] == "True ('connected',) False"          # ssl.py never loaded
    assert out["ssl"] == "False ('connected',) True"


def test_lanmesh_status_names_the_broker_and_why_it_is_not_connected():
    from lanmesh.status_view import render
    base = {"node": "hq", "interface": "lm0", "backend": "kernel", "fleet": "acme", "version": 3,
            "uptime": 5, "peers": [], "links": [], "routes": [], "process": {"rss_kb": 19000}}
    down = dict(base, fleet_state={"connected": False, "broker": "mqtts://b:8883",
                                   "broker_error": "connection refused (nothing listens on port 8883?)"})
    text = render(down)
    assert "fleet broker mqtts://b:8883: NOT connected (connection refused" in text
    assert "18.6 MB RSS" in text
    up = dict(base, fleet_state={"connected": True, "broker": "mqtts://b:8883", "broker_error": None})
    assert "fleet broker mqtts://b:8883: connected" in render(up)
    assert "fleet broker" not in render(dict(base, fleet_state=None))


def test_a_changed_password_file_is_used_at_the_next_connect(broker, tmp_path):
    pw = tmp_path / "hq.pass"
    pw.write_text("wrong\n")

    async def main():
        a = mqtt.MqttLink(broker.url, "lanmesh-hq", ca_file=broker.ca_file, username="hq",
                          password=lambda: mqtt.read_secret(str(pw)), backoff=(0.2, 0.4))
        a.start()
        assert "not authorized" in (await _expect(a, mqtt.LOST))[1]
        pw.write_text("pw-hq\n")                # the operator fixes the file; no restart
        await _expect(a, mqtt.CONNECTED, 10000)
        a.close()
    aio.run(main())
