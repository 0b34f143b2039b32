# Console protocol and session cores as tables of (state, input) -> output, a host and a
# device joined over a lossy fake wire, property tests over noise, and a MicroPython run.
import json
import os
import shutil
import subprocess

import pytest
from hypothesis import given, settings, strategies as st

from lanmesh.console import protocol, session
from lanmesh.console.protocol import (REQ, REP, Write, SetMode, SetEcho, Perform, Exit, Reply,
                                      Resend, GaveUp, frame, unframe)

KEY = "A" * 43 + "="
FLEET_KEY = "B" * 43 + "="
CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def plain(line):
    return [Write((line + "\r\n" + session.PROMPT).encode())]


def framed(seq, line):
    return [Write(frame(REP, seq, line))]


def console(**kw):
    return session.Console(info={"software": "0.1.0", "board": {"model": "t"}}, **kw)


# --- framing --------------------------------------------------------------------------

@pytest.mark.parametrize("line, expect", [
    (b"#>5 hello 90a90126", (5, b"hello")),
    (b"[  1.000000] usb 1-1: x#>5 hello 90a90126", (5, b"hello")),   # noise before: found
    (b"#>5 hello 90a90127", "crc"),                                 # one bit off
    (b"#>5 hellO 90a90126", "crc"),
    (b"#>5 hello 90a90126junk", "crc"),                            # noise after: damaged
    (b"#>x hello 90a90126", "crc"),
    (b"root@OpenWrt:~# ls", None),                                  # not a frame at all
    (b"#>5 a #>6 b 00000000", "crc"),
])
def test_unframe(line, expect):
    assert frame(REQ, 5, "hello") == b"#>5 hello 90a90126\r\n"
    assert unframe(REQ, line) == expect


def test_frame_payload_may_contain_the_marker():
    f = frame(REQ, 9, '"pa#>ss #<word"').rstrip()
    assert unframe(REQ, b"xx" + f) == (9, b'"pa#>ss #<word"')


@pytest.mark.parametrize("chunks, expect", [
    ([b"abc\r\n"], [("line", b"abc")]),
    ([b"ab", b"c\rde\n"], [("line", b"abc"), ("line", b"de")]),
    ([b"\r\n\r\n"], []),
    ([b"x" * 9, b"\n"], [("long", None)]),
    ([b"x" * 20 + b"\nok\n"], [("long", None), ("line", b"ok")]),
])
def test_line_buffer(chunks, expect):
    lb = protocol.LineBuffer(limit=8)
    out = []
    for c in chunks:
        out += lb.feed(c)
    assert out == expect


# --- session: (state, input) -> output --------------------------------------------------

PLAIN_TABLE = [
    # (setup lines, input line, expected effects)
    ([], b"bogus", plain("ERR unknown-command unknown command; try 'help'")),   # never echoed
    ([], b"set colour red", plain("ERR bad-key unknown key; keys: " + " ".join(session.KEYS))),
    ([], b"set name Bad_Name", plain("ERR bad-value name: 'Bad_Name' is not a name (a-z, 0-9, '-', up to 31)")),
    ([], b"set lan 198.19.300.0/24", plain("ERR bad-value lan: '198.19.300.0/24' is not an IP prefix")),
    ([], b"set lan 198.19.7.1/24", plain("ERR bad-value lan: '198.19.7.1/24' is not an IP prefix")),
    ([], b"set lan 198.19.7.0/24, fd00:1:7::/64", plain('OK {"set":"lan"}')),
    ([b"set name hq"], b"set name", plain('OK {"name":"hq"}')),
    ([], b"set password x", plain("ERR secret send password with 'set-secret password' (not echoed)")),
    ([], b"set broker http://x", plain("ERR bad-value broker: 'http://x' is not an mqtt:// or mqtts:// URL")),
    ([], b"set fleet-key abc", plain("ERR bad-value fleet-key: is not a base64 Ed25519 public key (44 characters)")),
    ([], b"set-secret password", [SetEcho(False)] + plain('OK {"awaiting":"password"}')),
    ([b"set-secret password"], b"hunter2 #", [SetEcho(True)] + plain('OK {"set":"password"}')),
    ([b"set-secret password"], b"\xff\xfe", [SetEcho(True)] + plain("ERR bad-utf8 request is not UTF-8")),
    ([], b"\xc3\x28", plain("ERR bad-utf8 request is not UTF-8")),
    ([], b"keygen", [Perform("keygen", {})]),
    ([], b"keygen sideways", plain("ERR bad-args usage: keygen [rekey]")),
    ([], b"pubkey", plain("ERR no-key no key yet; run keygen")),
    ([], b"commit", plain("ERR incomplete name: not set")),
    ([b"set name hq"], b"commit", plain("ERR no-key no key yet; run keygen first")),
    ([b"set name hq"], b"reboot", plain("ERR staged uncommitted changes; commit or abort first")),
    ([b"set name hq"], b"abort", plain('OK {"aborted":["name"]}')),
    ([], b"reboot", [Perform("reboot", {})]),
    ([], b"show nothing", plain("ERR bad-args usage: show config")),
    ([], b"append name x", plain("ERR bad-key append works for: ca")),
    ([], b"machine", [SetMode("machine")] + framed(0, 'OK {"mode":"machine"}')),
    ([], b"exit", plain('OK {"bye":true}') + [Exit()]),
    ([], b"   ", [Write(session.PROMPT.encode())]),
]


@pytest.mark.parametrize("setup, line, expect", PLAIN_TABLE)
def test_plain_mode_table(setup, line, expect):
    c = console()
    for s in setup:
        c.receive_data(s + b"\r")
    assert c.receive_data(line + b"\r") == expect


def test_long_line_in_plain_mode():
    c = console()
    assert c.receive_data(b"x" * 5000 + b"\r") == plain("ERR too-long line longer than 1024 bytes")


def test_status_and_show_never_print_secrets():
    c = console()
    c.receive_data(b"set-secret password\rs3cr3t\rset ca \"" + CA.replace("\n", "\\n").encode() + b"\"\r")
    out = b"".join(e.args[0] for e in c.receive_data(b"show config\rstatus\rset password\rhelp\r"))
    assert b"s3cr3t" not in out and b"(secret)" in out and b"(PEM, " in out


MACHINE_TABLE = [
    # (input bytes, expected effects) from a console already in machine mode, last seq 4
    (frame(REQ, 5, "hello"), None),                                      # checked separately
    (frame(REQ, 4, "set name other"), framed(4, 'OK {"set":"name"}')),  # repeat: replayed
    (b"garbage\r", framed(0, "ERR no-frame machine mode expects '#>SEQ REQUEST CRC32' lines")),
    (b"#>6 hello 00000000\r", framed(0, "ERR bad-crc damaged frame")),
    (frame(REQ, 6, b"set name \xff"), framed(6, "ERR bad-utf8 request is not UTF-8")),
    (frame(REQ, 6, "nope"), framed(6, "ERR unknown-command unknown command; try 'help'")),
    (b"\r\n\r\n", []),
    (b"#>" + b"9" * 2000 + b"\r", framed(0, "ERR too-long line longer than 1024 bytes")),
    (frame(REQ, 6, "plain"), [SetMode("plain")] + framed(6, 'OK {"mode":"plain"}')),
    (frame(REQ, 6, "exit"), [SetMode("plain")] + framed(6, 'OK {"bye":true}') + [Exit()]),
    (frame(REQ, 6, "set-secret password"), framed(6, 'OK {"awaiting":"password"}')),
]


@pytest.mark.parametrize("data, expect", MACHINE_TABLE[1:])
def test_machine_mode_table(data, expect):
    c = console()
    assert c.receive_data(frame(REQ, 4, "set name hq")) == [SetMode("machine")] + framed(4, 'OK {"set":"name"}')
    assert c.receive_data(data) == expect
    assert c.staged == {"name": "hq"}  # nothing but the first request changed the staging


def test_secret_in_machine_mode_and_its_replay():
    c = console(machine=True)
    c.receive_data(frame(REQ, 1, "set-secret password"))
    assert c.receive_data(frame(REQ, 2, '"p w\\u00e9"')) == framed(2, 'OK {"set":"password"}')
    assert c.receive_data(frame(REQ, 2, '"p w\\u00e9"')) == framed(2, 'OK {"set":"password"}')
    assert c.staged["password"] == "p w\u00e9"


def test_keygen_keeps_the_committed_key_unless_rekey():
    c = console(committed={"name": "hq", "public_key": KEY}, machine=True)
    assert c.receive_data(frame(REQ, 1, "keygen")) == framed(1, 'OK {"public_key":"%s","new":false}' % KEY)
    assert c.receive_data(frame(REQ, 2, "keygen rekey")) == [Perform("keygen", {})]
    assert c.receive_data(frame(REQ, 3, "hello")) == []          # queued behind the Perform
    out = c.done({"public_key": FLEET_KEY})
    assert out[0] == framed(2, 'OK {"public_key":"%s","new":true}' % FLEET_KEY)[0]
    assert b'"provisioned":true' in out[1].args[0]               # the queued hello follows
    assert c.receive_data(frame(REQ, 4, "commit")) == [Perform("commit", {"values": {}, "new_key": FLEET_KEY})]
    out = c.done({"committed": {"name": "hq", "public_key": FLEET_KEY}, "changed": True, "generation": 2})
    assert json.loads(unframe(REP, out[0].args[0].rstrip())[1][3:]) == {
        "public_key": FLEET_KEY, "changed": True, "rekeyed": True, "generation": 2}
    assert c.staged == {} and c.key is None


def test_commit_needs_the_whole_fleet_and_a_pem():
    c = console(committed={"name": "hq", "public_key": KEY})
    assert c.receive_data(b"set broker mqtts://b:8883\rcommit\r")[-1] == plain(
        "ERR incomplete fleet settings need: fleet fleet-key")[0]
    c.receive_data(("set fleet acme\rset fleet-key %s\rset ca nonsense\r" % FLEET_KEY).encode())
    assert c.receive_data(b"commit\r") == plain("ERR bad-value ca: not a PEM certificate")
    c.receive_data(b"append ca \"" + CA.replace("\n", "\\n").encode() + b"\"\r")
    c.receive_data(b"set ca \"" + CA.replace("\n", "\\n").encode() + b"\"\r")
    assert c.receive_data(b"commit\r")[0].args[0] == "commit"


def test_a_frame_in_plain_mode_switches_to_machine_mode():
    c = console()
    assert c.receive_data(b"#>3 hello 0bad0bad\r") == framed(0, "ERR bad-crc damaged frame")
    out = c.receive_data(frame(REQ, 3, "status"))
    assert out[0] == SetMode("machine") and b'"mode":"machine"' in out[1].args[0]


@pytest.mark.parametrize("text, ok", [
    ("198.19.7.0/24", True), ("0.0.0.0/0", True), ("198.19.7.0/33", False), ("1.2.3/24", False),
    ("fd00:1:7::/64", True), ("::/0", True), ("fd00::1/64", False), ("fd00:::1/128", False),
    ("1:2:3:4:5:6:7:8/128", True), ("1:2:3:4:5:6:7::8/128", False), ("g::/16", False), ("x", False),
])
def test_is_prefix(text, ok):
    assert session.is_prefix(text) is ok


# --- host and device over a fake wire ----------------------------------------------------

def test_host_retransmits_and_gives_up():
    h = protocol.Host(seq=10, retry_ms=100, tries=3, backoff=2)
    assert h.request("hello", 0) == frame(REQ, 11, "hello")
    assert h.tick(99) == [] and h.next_deadline() == 100
    assert h.tick(100) == [Resend(frame(REQ, 11, "hello"))] and h.next_deadline() == 300
    assert h.tick(300) == [Resend(frame(REQ, 11, "hello"))]
    assert h.tick(700) == [GaveUp(11)] and h.next_deadline() is None


def test_host_ignores_echo_stale_replies_and_kernel_lines():
    h = protocol.Host(seq=10)
    req = h.request("hello", 0)
    stream = (req + b"[ 12.345678] usb 1-1: new device\r\n" + frame(REP, 10, "OK {}") +
              b"#<11 OK {} 00000000\r\n" + b"[ 1.0] x" + frame(REP, 11, 'OK {"a":1}'))
    assert h.receive_data(stream, 5) == [Reply(11, True, {"a": 1})]
    h.request("x", 6)
    assert h.receive_data(frame(REP, 0, "ERR bad-crc damaged frame"), 7) == [Resend(frame(REQ, 12, "x"))]


def test_pair_over_a_wire_that_loses_every_other_reply():
    dev, host = console(), protocol.Host(seq=100, retry_ms=10)
    now, drop = 0, [True]
    script = ["hello", "set name hq", "set fleet acme", "set fleet-key " + FLEET_KEY,
              "set broker mqtts://b", "set-secret password", '"pw"', "keygen", "commit"]
    replies = []
    for req in script:
        out = [host.request(req, now)]
        while True:
            for data in out:
                for e in dev.receive_data(data):
                    if isinstance(e, Perform):
                        eff = dev.done({"public_key": KEY} if e.args[0] == "keygen" else
                                       {"committed": {"name": "hq", "public_key": KEY}, "changed": True})
                    else:
                        eff = [e]
                    for x in eff:
                        drop[0] = not drop[0]
                        if isinstance(x, Write) and not drop[0]:
                            got = host.receive_data(x.args[0], now)
                            replies += [g for g in got if isinstance(g, Reply)]
            if len(replies) == script.index(req) + 1:
                break
            now += 10
            out = [e.args[0] for e in host.tick(now)]
    assert [r.args[1] for r in replies] == [True] * len(script)
    assert dev.committed["name"] == "hq" and dev.staged == {}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=12))
def test_noise_never_crashes_or_stages(chunks):
    for machine in (False, True):
        c = console(machine=machine)
        for chunk in chunks:
            for e in c.receive_data(chunk.replace(b"set", b"get")):
                assert isinstance(e, (Write, SetMode, SetEcho, Perform, Exit))
                if isinstance(e, Perform):
                    c.done({"public_key": KEY} if e.args[0] == "keygen" else {"rebooting": True}) \
                        if e.args[0] != "commit" else c.failed("io", "x")
        assert c.staged == {} or c.awaiting is None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 2 ** 31), st.text(max_size=100))
def test_frames_survive_prefix_noise(noise, seq, payload):
    f = frame(REQ, seq, payload)
    assert unframe(REQ, noise.replace(b"\r", b"").replace(b"\n", b"") + f.rstrip()) == (seq, payload.encode())


# --- MicroPython ------------------------------------------------------------------------

MP = os.path.join(os.path.dirname(os.path.abspath(__import__("sys").executable)), "micropython")


@pytest.mark.skipif(not (os.path.exists(MP) or shutil.which("micropython")), reason="no micropython binary")
def test_micropython_roundtrip():
    mp = MP if os.path.exists(MP) else shutil.which("micropython")
    firmware = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "firmware")
    code = """
import sys
sys.path.insert(0, %r)
from lanmesh.console import protocol, session
c = session.Console(info={"software": "t"})
h = protocol.Host(seq=1)
out = c.receive_data(b"noise" + h.request("set lan 198.19.7.0/24,fd00:1::/64", 0))
got = h.receive_data(b"[ 1.5] usb" + out[1].args[0], 1)
print(got[0].args, c.staged["lan"], c.receive_data(b"#>9 x 00000000\\r")[0].args[0])
""" % firmware
    r = subprocess.run([mp, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ("(2, True, {'set': 'lan'}) ['198.19.7.0/24', 'fd00:1::/64'] "
                                "b'#<0 ERR bad-crc damaged frame %08x\\r\\n'" % protocol.crc(b"0 ERR bad-crc damaged frame"))


def test_show_config_gives_the_committed_ca_size_not_the_summary_length():
    # the agent's summary is redacted already; `show config` redacts again (was "16 bytes")
    from lanmesh.console.session import _redact
    once = _redact({"ca": "-----BEGIN CERTIFICATE-----" + "x" * 507})
    assert once["ca"] == "(PEM, 534 bytes)" and _redact(once)["ca"] == "(PEM, 534 bytes)"
