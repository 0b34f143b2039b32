# Issue 14: relays that never see plaintext. Four sites over real wireguard-go in
# namespaces; the direct path A↔C is cut while A's LAN host pings C's LAN host every 10 ms
# and streams TCP carrying a marker. The relay's kernel forwards the A–C WireGuard session
# (nftables DNAT/SNAT): packet captures on every interface of the relay site (router and
# LAN host) hold neither the marker nor a plaintext A–C IP packet, the relay's WireGuard
# counters do not grow with that traffic, A and C need no new handshake, and when the path
# heals the traffic goes direct again and the relay forgets the session.
import json
import os
import subprocess
import sys
import time

import pytest

from lanmesh_lab.failover import PingWatch

pytestmark = pytest.mark.netns

MARKER = b"LANMESH-PLAINTEXT-MARKER-7f3a"

# Every frame on every interface of one namespace, for `secs` seconds: how many, how many
# hold the marker, how many are a plaintext IPv4 packet between the two LAN hosts.
CAPTURE = r"""
import socket, sys, time
secs, marker, a, c = float(sys.argv[1]), bytes.fromhex(sys.argv[2]), sys.argv[3], sys.argv[4]
ab = socket.inet_aton(a) + socket.inet_aton(c)
ba = socket.inet_aton(c) + socket.inet_aton(a)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(3))
s.settimeout(0.1)
print("ready", flush=True)
frames = marked = plain = 0
end = time.time() + secs
while time.time() < end:
    try:
        data = s.recv(65535)
    except socket.timeout:
        continue
    frames += 1
    marked += marker in data
    plain += ab in data or ba in data
print(frames, marked, plain, flush=True)
"""

SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5201)); s.listen(1)
print("ready", flush=True)
c, _ = s.accept(); n = 0; seen = 0; marker = bytes.fromhex(sys.argv[1]); tail = b""
while True:
    d = c.recv(65536)
    if not d:
        break
    n += len(d); seen += (tail + d).count(marker); tail = d[-64:]
print(n, seen, flush=True)
"""

CLIENT = r"""
import socket, sys, time
marker = bytes.fromhex(sys.argv[2]); s = socket.create_connection((sys.argv[1], 5201), 5)
line = (marker + b" ") * 64
end = time.time() + float(sys.argv[3])
while time.time() < end:
    try:
        s.sendall(line)
    except OSError:
        time.sleep(0.05)
    time.sleep(0.004)          # ~500 kB/s: a stream, not a flood
s.close()
"""


def _capture(lab, ns, secs, a, c):
    p = lab.ns.popen(ns, [sys.executable, "-c", CAPTURE, str(secs), MARKER.hex(), a.host4, c.host4],
                     stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def _result(p):
    out, _ = p.communicate(timeout=30)
    return tuple(int(x) for x in out.split())


def _wg_bytes(lab, site):
    """rx+tx bytes of the router's WireGuard interface (what it decrypted/encrypted)."""
    out = lab.ns.exec(site.router, "ip", "-j", "-s", "link", "show", site.ifname).stdout
    st = json.loads(out)[0]["stats64"]
    return st["rx"]["bytes"] + st["tx"]["bytes"]


def _handshake(lab, site, peer):
    out = lab.ns.exec(site.router, "wg", "show", site.ifname, "latest-handshakes").stdout
    for line in out.splitlines():
        key, ts = line.split()
        if key == peer.public_key:
            return int(ts)
    return None


def _relay_rules(lab, site):
    out = lab.ns.exec(site.router, "nft", "list", "table", "inet", "lanmesh_" + site.ifname,
                      check=False).stdout
    return [x.strip() for x in out.splitlines() if "dnat ip to" in x]


def test_relayed_session_stays_end_to_end_encrypted(make_lab):
    lab = make_lab(4)
    lab.start_all()
    assert lab.wait_direct(timeout=20), [lab.routes(s) for s in lab.sites]
    a, b, c, d = lab.sites
    assert lab.wait_ping(a, c)
    server = lab.ns.popen(c.host, [sys.executable, "-c", SERVER, MARKER.hex()],
                          stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "ready"
    client = lab.ns.popen(a.host, [sys.executable, "-c", CLIENT, c.host4, MARKER.hex(), "14"])
    watch = PingWatch(lab, a, c)
    time.sleep(1.5)
    hs_a, hs_c = _handshake(lab, a, c), _handshake(lab, c, a)
    assert hs_a and hs_c

    t_cut = time.time()
    lab.cut(a, c)
    assert lab.wait_routes(a, {c.name: b.name}, timeout=5) or \
        lab.wait_routes(a, {c.name: d.name}, timeout=1), lab.routes(a)
    relays = (b, d)           # either may carry it (equal costs): both are checked
    deadline = time.time() + 5
    while not any(_relay_rules(lab, r) for r in relays) and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)                     # the session moved onto the relay
    wg0 = [_wg_bytes(lab, r) for r in relays]
    caps = [_capture(lab, ns, 4, a, c) for r in relays for ns in (r.router, r.host)]
    caps.append(_capture(lab, c.host, 4, a, c))
    time.sleep(4.5)
    results = [_result(p) for p in caps]
    grew = [_wg_bytes(lab, r) - w for r, w in zip(relays, wg0)]
    at_c = results[-1]
    at_relays = results[:-1]
    relay = relays[0] if results[0][0] > results[2][0] else relays[1]

    t_restore = time.time()
    lab.restore(a, c)
    assert lab.wait_routes(a, {c.name: c.name}, timeout=15), lab.routes(a)
    assert lab.wait_routes(c, {a.name: a.name}, timeout=5)
    client.wait(20)
    stream_bytes, stream_markers = (int(x) for x in server.communicate(timeout=20)[0].split())
    watch.stop()

    print("relay", relay.name, "captures (frames, marker, plaintext): relays", at_relays,
          "c-host", at_c, "relay wg bytes grew", grew, "stream", stream_bytes, stream_markers,
          "gap", watch.gap_after(t_cut, until=t_restore))
    # The detector works: C's LAN host sees the marker (and plaintext A–C packets) ...
    assert at_c[1] > 0 and at_c[2] > 0, at_c
    # ... the relay sites see the session's ciphertext only (the relay forwarded >1000
    # frames of it: a 10 ms ping and a ~0.5 MB/s stream for 4 s, in and out).
    assert max(r[0] for r in at_relays) > 1000, at_relays
    assert all(r[1:] == (0, 0) for r in at_relays), at_relays
    # Their WireGuard decrypted none of it: the window carried ~2 MB; a relay's own control
    # traffic over its tunnel is a few kB.
    assert all(g < 100_000 for g in grew), grew
    assert stream_markers > 1000 and stream_bytes > 2_000_000, (stream_bytes, stream_markers)
    # No new handshake was needed between A and C for the reroute.
    assert _handshake(lab, a, c) == hs_a and _handshake(lab, c, a) == hs_c
    gap = watch.gap_after(t_cut, until=t_restore)
    if gap is None or gap >= 1.5:       # rare (1 run in ~20): what each daemon did then
        print(f"cut at {time.strftime('%H:%M:%S', time.localtime(t_cut))}"
              f".{int(t_cut % 1 * 1000):03d}")
        for s in (a, b, c, d):
            print(f"===== {s.name} daemon log (tail)\n{lab.daemon_log(s)[-4000:]}")
    assert gap is not None and gap < 1.5, gap
    assert watch.replies_between(t_cut + 2, t_restore) > 200
    # back direct: traffic flows there (the move back can stall for a few seconds: see #14)
    assert lab.wait_ping(a, c, timeout=10)
    # Healed: direct again, and the relay forgets the session (released by both ends).
    deadline = time.time() + 10
    while any(_relay_rules(lab, r) for r in relays) and time.time() < deadline:
        time.sleep(0.2)
    assert all(_relay_rules(lab, r) == [] for r in relays)
    assert all(lab.status(r)["relay"]["sessions"] == {} for r in relays)


def test_two_relays_in_a_row_stay_blind_and_a_restart_leaves_no_mapping(make_lab):
    """Only a–b, b–d and d–c are up: A's session to C rides b then d (each forwards toward
    the next in its kernel); neither sees plaintext. Then the relays' mappings are gone
    after a clean stop and after kill -9 + restart."""
    lab = make_lab(4)
    lab.start_all()
    assert lab.wait_direct(timeout=20)
    a, b, c, d = lab.sites
    for x, y in ((a, c), (a, d), (b, c)):
        lab.cut(x, y)
    assert lab.wait_routes(a, {c.name: b.name}, timeout=10), lab.routes(a)
    # b's link to c is idle: found dead within ~5.5 s (echoes every 4 s), like a's links
    assert lab.wait_routes(b, {c.name: d.name}, timeout=10), lab.routes(b)
    assert lab.wait_routes(c, {a.name: d.name}, timeout=5), lab.routes(c)
    key = f"{a.name}-{c.name}"

    def session(r):
        return lab.status(r)["relay"]["sessions"].get(key)
    deadline = time.time() + 8
    while not (session(b) and session(d)) and time.time() < deadline:
        time.sleep(0.2)
    assert session(b) and session(d), (lab.status(b)["relay"], lab.status(d)["relay"])

    def rule(r, port):
        return next((x for x in _relay_rules(lab, r) if f"dport {port} " in x), None)
    # b forwards toward c to d's port for the session (not to c); d forwards to c itself
    deadline = time.time() + 5
    while not rule(b, session(b)["ports"][c.name]) and time.time() < deadline:
        time.sleep(0.2)
    assert rule(b, session(b)["ports"][c.name]).endswith(
        f"to {d.wan_ip}:{session(d)['ports'][c.name]}"), _relay_rules(lab, b)
    assert rule(d, session(d)["ports"][c.name]).endswith(f"to {c.wan_ip}:51820"), _relay_rules(lab, d)
    assert rule(d, session(d)["ports"][a.name]).endswith(
        f"to {b.wan_ip}:{session(b)['ports'][a.name]}"), _relay_rules(lab, d)
    assert lab.wait_ping(a, c, timeout=10)
    server = lab.ns.popen(c.host, [sys.executable, "-c", SERVER, MARKER.hex()],
                          stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "ready"
    client = lab.ns.popen(a.host, [sys.executable, "-c", CLIENT, c.host4, MARKER.hex(), "5"])
    time.sleep(0.5)
    wg0 = [_wg_bytes(lab, r) for r in (b, d)]
    caps = [_capture(lab, ns, 3, a, c) for r in (b, d) for ns in (r.router, r.host)]
    results = [_result(p) for p in caps]
    grew = [_wg_bytes(lab, r) - w for r, w in zip((b, d), wg0)]
    client.wait(20)
    stream_bytes, stream_markers = (int(x) for x in server.communicate(timeout=20)[0].split())
    print("two relays: captures", results, "wg grew", grew, "stream", stream_bytes, stream_markers)
    assert stream_markers > 100, (stream_bytes, stream_markers)
    assert results[0][0] > 500 and results[2][0] > 500, results     # both relays carried it
    assert all(r[1:] == (0, 0) for r in results), results
    assert all(g < 100_000 for g in grew), grew

    # kill -9 the first relay, restart it: it comes back with no mapping it was not asked for
    # again (it re-forwards only what a and c ask for now), and a clean stop removes all.
    lab.stop(d, sig=9)
    for pid in lab.ns.pids(d.router):
        os.kill(pid, 9)
    lab.start(d)
    deadline = time.time() + 10
    while not session(d) and time.time() < deadline:
        time.sleep(0.2)
    assert session(d)                              # its users asked again: forwarded again
    assert lab.wait_ping(a, c, timeout=15)
    lab.stop(d)
    out = lab.ns.exec(d.router, "nft", "list", "tables").stdout
    assert "lanmesh_" not in out, out              # a clean stop removes the table, rules and all
