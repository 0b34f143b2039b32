"""WAN emulator (issue 4): NFQUEUE delay/jitter stage + nftables loss, on the lab's WAN namespace.
Pings go router to router over the WAN (198.18.i.2), no daemons run."""
import json
import os
import random
import re
import signal
import statistics
import struct
import sys
import time

import pytest

from lanmesh_lab import nfqueue
from lanmesh_lab.wanem import CHAIN, NFT_TABLE, WanEmulator


# -- codec: no root needed -----------------------------------------------------------------
def kernel_packet(queue, packet_id, payload, hook=2):
    """An NFQNL_MSG_PACKET as the kernel builds it."""
    attrs = nfqueue.attr(nfqueue.NFQA_PACKET_HDR, struct.pack("!IHB", packet_id, 0x0800, hook))
    attrs += nfqueue.attr(nfqueue.NFQA_PAYLOAD, payload)
    return nfqueue.message(nfqueue.NFQNL_MSG_PACKET, attrs, flags=0, res_id=queue)


def test_codec_roundtrip():
    ip = bytes([0x45, 0, 0, 84]) + bytes(8) + bytes([198, 18, 1, 2, 198, 18, 2, 2])
    buf = kernel_packet(7, 0xDEADBEEF, ip) + kernel_packet(7, 5, ip[:10])
    msgs = list(nfqueue.split_messages(buf))
    assert len(msgs) == 2
    q, pid, proto, hook, head = nfqueue.parse_packet(msgs[0][3])
    assert (q, pid, proto, hook) == (7, 0xDEADBEEF, 0x0800, 2)
    assert nfqueue.ip_pair(head) == (bytes([198, 18, 1, 2]), bytes([198, 18, 2, 2]))
    assert nfqueue.ip_pair(nfqueue.parse_packet(msgs[1][3])[4]) is None   # too short to classify
    v = nfqueue.verdict(7, 42)
    typ, flags, _seq, body = next(nfqueue.split_messages(v))
    assert typ == (3 << 8) | 1 and flags == nfqueue.NLM_F_REQUEST
    assert struct.unpack("!BBH", body[:4])[2] == 7
    assert nfqueue.parse_attrs(body, 4)[nfqueue.NFQA_VERDICT_HDR] == struct.pack("!II", 1, 42)
    assert nfqueue.proc_stats("    7  11528     3 2    40     9     1       20  1\n", 7)["kernel_queue_dropped"] == 9
    assert nfqueue.proc_stats("    0  11528     3 2    40     9     1       20  1\n", 7) is None


def test_codec_garbage_only_raises_malformed():
    rng = random.Random(4)
    good = kernel_packet(0, 1, bytes(40))
    for _ in range(3000):
        buf = bytearray(good) if rng.random() < 0.5 else bytearray(rng.randbytes(rng.randrange(0, 80)))
        for _ in range(rng.randrange(0, 6)):
            if buf:
                buf[rng.randrange(len(buf))] = rng.randrange(256)
        buf = buf[:rng.randrange(len(buf) + 1)]
        try:
            for _typ, _f, _s, body in nfqueue.split_messages(bytes(buf)):
                nfqueue.parse_packet(body)
        except nfqueue.Malformed:
            pass


# -- in namespaces ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lab():
    from lanmesh_lab.sites import Lab
    with Lab(3) as lab:
        yield lab


@pytest.fixture
def wan(lab):
    w = WanEmulator(lab.ns, lab.wan, seed=1)
    yield w
    w.close()
    assert_clean(lab, w)


def ping(lab, src, dst, count=10, interval=0.02):
    """(RTTs in ms, loss fraction) for router-to-router pings across the WAN."""
    r = lab.ns.exec(src.router, "ping", "-n", "-c", str(count), "-i", str(interval), "-W", "1",
                    dst.wan_ip, check=False, timeout=count * interval + 15)
    rtts = [float(x) for x in re.findall(r"time=([\d.]+) ms", r.stdout)]
    return rtts, 1 - len(rtts) / count


def assert_clean(lab, w):
    rules = lab.ns.exec(lab.wan, "nft", "list", "ruleset").stdout
    assert NFT_TABLE not in rules and CHAIN not in rules and "queue" not in rules, rules
    legacy = lab.ns.exec(lab.wan, "iptables-legacy", "-t", "mangle", "-S", check=False).stdout
    assert CHAIN not in legacy
    assert w.proc.poll() is not None and not os.path.exists(f"/proc/{w.proc.pid}/status")
    assert w.kernel_queue() is None            # nobody bound to the queue any more
    assert not os.path.exists(w.dir)


@pytest.mark.netns
def test_delay_is_per_direction_runtime_and_clears(lab, wan):
    a, b, c = lab.sites
    base, _ = ping(lab, a, b)
    assert statistics.median(base) < 1
    wan.set_link(a, b, delay_ms=40)            # each direction: ping RTT ≈ 80 ms
    rtts, loss = ping(lab, a, b, 20)
    assert loss == 0 and min(rtts) >= 80 and statistics.median(rtts) < 80 + 3, rtts
    other, loss = ping(lab, a, c, 20)          # a pair not configured: untouched
    assert loss == 0 and statistics.median(other) < 1, other
    pid = wan.pid
    wan.set_link(a.wan_ip, b.wan_ip, delay_ms=10)          # change at runtime, same process
    rtts, _ = ping(lab, b, a, 10)
    assert wan.pid == pid and 20 <= statistics.median(rtts) < 23, rtts
    s = wan.stats()
    assert s["paths"] == {"198.18.1.2>198.18.2.2": 30, "198.18.2.2>198.18.1.2": 30}
    assert s["malformed"] == s["kernel_queue_dropped"] == s["kernel_user_dropped"] == 0
    assert s["late_ms_mean"] < 2, s
    wan.clear_link(b, a)
    rtts, _ = ping(lab, a, b)
    assert statistics.median(rtts) < 1, rtts
    assert wan.stats()["received"] == s["received"]        # nothing queued after clearing


@pytest.mark.netns
def test_jitter_spreads_rtt(lab, wan):
    a, b, _ = lab.sites
    wan.set_link(a, b, delay_ms=30, jitter_ms=10)   # RTT = 60 ms + two U(-10, 10) draws
    rtts, loss = ping(lab, a, b, 50)
    assert loss == 0
    print(f"jitter 30±10 per way: RTT min {min(rtts):.1f} median {statistics.median(rtts):.1f} "
          f"max {max(rtts):.1f} stdev {statistics.stdev(rtts):.1f} ms")
    assert min(rtts) >= 40 - 1 and sorted(rtts)[-3] <= 80 + 3, rtts   # 2 scheduling outliers ok
    assert max(rtts) - min(rtts) >= 15, rtts
    assert 4 <= statistics.stdev(rtts) <= 12        # theory: 10·√(2/3) ≈ 8.2 ms
    assert 55 <= statistics.mean(rtts) <= 66


@pytest.mark.netns
def test_loss_from_numgen(lab, wan):
    a, b, c = lab.sites
    wan.set_link(a, b, loss_pct=30, both_ways=False)       # request direction only
    _, loss = ping(lab, a, b, 200, 0.005)
    print(f"loss 30% one way: ping loss {loss:.0%}")
    assert 0.15 <= loss <= 0.45
    wan.set_link(a, b, loss_pct=30)            # both crossings: 1 - 0.7² = 51%
    _, loss = ping(lab, a, b, 200, 0.005)
    print(f"loss 30% each way: ping loss {loss:.0%}")
    assert 0.36 <= loss <= 0.66
    _, loss = ping(lab, a, c, 100, 0.005)
    assert loss == 0
    assert wan.stats()["received"] == 0        # loss alone never involves the stage
    wan.clear_link(a, b)
    assert ping(lab, a, b, 50, 0.005)[1] == 0


@pytest.mark.netns
def test_burst_survives_with_cpu_reported(lab, wan):
    a, b, _ = lab.sites
    wan.set_link(a, b, delay_ms=20)
    srv = lab.ns.popen(b.router, ["iperf3", "-s", "-1", "-B", b.wan_ip],
                       stdout=open(os.devnull, "wb"), stderr=open(os.devnull, "wb"))
    try:
        for _ in range(50):                    # the server needs a moment to listen
            r = lab.ns.exec(a.router, "iperf3", "-c", b.wan_ip, "-u", "-b", "20M", "-l", "1200",
                            "-t", "2", "--json", check=False, timeout=30)
            out = json.loads(r.stdout or "{}")
            if r.returncode == 0 and "sum" in out.get("end", {}):
                break
            time.sleep(0.1)
        else:
            pytest.fail(r.stdout[-2000:])
    finally:
        if srv.poll() is None:
            srv.send_signal(signal.SIGTERM)
        srv.wait(5)
    udp = out["end"]["sum"]
    time.sleep(0.1)                            # the last control segments are still in flight
    s = wan.stats()
    print(f"burst: {udp['packets']} UDP datagrams at 20 Mbit/s over 2 s (+ TCP control), "
          f"lost {udp['lost_percent']:.2f}%; stage received {s['received']}, held max "
          f"{s['held_max']}, lateness mean {s['late_ms_mean']} ms max {s['late_ms_max']} ms, "
          f"CPU {s['cpu_s']} s")
    assert udp["packets"] > 3000 and udp["lost_percent"] < 1.0
    assert s["received"] >= udp["packets"] and s["held"] == 0
    assert s["kernel_queue_dropped"] == s["kernel_user_dropped"] == s["enobufs"] == 0
    assert s["late_ms_mean"] < 5


@pytest.mark.netns
@pytest.mark.parametrize("overflow_accept", [False, True])
def test_queue_overflow_policy(lab, overflow_accept):
    a, b, _ = lab.sites
    w = WanEmulator(lab.ns, lab.wan, maxlen=8, overflow_accept=overflow_accept)
    try:
        w.set_link(a, b, delay_ms=50)
        # 40 echo requests at once into an 8-packet queue
        r = lab.ns.exec(a.router, "ping", "-n", "-q", "-f", "-l", "40", "-c", "40", "-W", "1",
                        b.wan_ip, check=False)
        received = int(re.search(r"(\d+) received", r.stdout).group(1))
        s = w.stats()
    finally:
        w.close()
    if overflow_accept:     # full queue: the excess goes through undelayed
        assert received == 40 and s["kernel_queue_dropped"] == 0, (r.stdout, s)
    else:                   # full queue: tail drop, like a full router buffer
        assert received < 40 and s["kernel_queue_dropped"] > 0, (r.stdout, s)
    assert_clean(lab, w)


@pytest.mark.netns
def test_malformed_netlink_is_counted_not_fatal(lab, wan):
    a, b, _ = lab.sites
    wan.set_link(a, b, delay_ms=15)
    portid = wan.kernel_queue()["kernel_portid"]
    # from another netlink socket in the WAN namespace (root may unicast to a port id)
    bad = [b"\x01" * 7,                                               # shorter than a header
           struct.pack("=IHHII", 1000, 0x0300, 0, 0, 0),              # length lies
           nfqueue.message(nfqueue.NFQNL_MSG_PACKET, b"", flags=0),   # packet without header
           nfqueue.message(9, b"", flags=0)]                          # unknown message type
    script = ("import socket,sys,json\n"
              "s=socket.socket(socket.AF_NETLINK,socket.SOCK_RAW,12)\n"
              f"for m in json.loads(sys.stdin.read()): s.sendto(bytes.fromhex(m),({portid},0))\n")
    lab.ns.exec(lab.wan, sys.executable, "-c", script, input=json.dumps([m.hex() for m in bad]))
    time.sleep(0.1)
    rtts, loss = ping(lab, a, b, 5)
    assert loss == 0 and min(rtts) >= 30 and statistics.median(rtts) < 33, rtts
    assert wan.stats()["malformed"] == len(bad)


@pytest.mark.netns
def test_stage_death_fails_open_and_close_cleans(lab):
    a, b, _ = lab.sites
    w = WanEmulator(lab.ns, lab.wan)
    try:
        w.set_link(a, b, delay_ms=25)
        assert statistics.median(ping(lab, a, b, 5)[0]) >= 50
        os.kill(w.pid, signal.SIGKILL)         # our own stage, by PID
        w.proc.wait(5)
        rtts, loss = ping(lab, a, b, 10)       # rules still there, --queue-bypass lets it pass
        assert loss == 0 and statistics.median(rtts) < 1, rtts
    finally:
        w.close()
    assert_clean(lab, w)
