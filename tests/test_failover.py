# Issue 4 acceptance: the self-healing mesh over real wireguard-go in namespaces, no MQTT.
import json
import os
import subprocess
import time

import pytest

from lanmesh_lab.failover import PingWatch

pytestmark = pytest.mark.netns


def mesh(make_lab, n=4, relay=None, **kw):
    lab = make_lab(n, **kw)
    for s, r in zip(lab.sites, relay or [True] * n):
        s.relay = r
    lab.start_all()
    assert lab.wait_direct(timeout=20), [lab.routes(s) for s in lab.sites]
    return lab


def test_cut_direct_path_reroutes_and_returns(make_lab):
    lab = mesh(make_lab)
    a, b, c, d = lab.sites
    assert lab.wait_ping(a, c)
    ttl0 = lab.ttl_exceeded()
    watch = PingWatch(lab, a, c)
    time.sleep(1)
    t_cut = time.time()
    lab.cut(a, c)
    assert lab.wait_routes(a, {c.name: b.name}, timeout=5) or lab.wait_routes(a, {c.name: d.name}, timeout=1)
    assert lab.routes(c)[a.name] == lab.routes(a)[c.name]          # symmetric: same relay both ways
    time.sleep(2)
    t_restore = time.time()
    lab.restore(a, c)
    assert lab.wait_routes(a, {c.name: c.name}, timeout=15), lab.routes(a)
    assert lab.wait_routes(c, {a.name: a.name}, timeout=5)
    time.sleep(1)
    watch.stop()
    gap = watch.gap_after(t_cut, until=t_restore)
    assert gap is not None and gap < 2.0, f"outage {gap}"
    # traffic flowed through the relay while cut, and again after the restore
    assert watch.replies_between(t_cut + 1.5, t_restore) > 50
    assert watch.replies_between(t_restore + 1, time.time()) > 20
    assert lab.ttl_exceeded() == ttl0, "a routing loop sent ICMP time-exceeded"


def test_whole_site_killed_others_route_around(make_lab):
    lab = mesh(make_lab)
    a, b, c, d = lab.sites
    # b relays a↔c while the direct path is cut; then b dies: a↔c must move to d (the cut
    # link is idle: found silent by its 4 s echoes, within ~5.5 s)
    lab.cut(a, c)
    assert lab.wait_routes(a, {c.name: b.name}, timeout=10) or lab.wait_routes(a, {c.name: d.name}, timeout=1)
    if lab.routes(a)[c.name] == d.name:
        b, d = d, b                                     # kill whichever site relays
    watch = PingWatch(lab, a, c)
    time.sleep(1)
    t_kill = time.time()
    lab.stop(b, sig=9)
    for pid in lab.ns.pids(b.router):                   # its tunnel goes with it
        os.kill(pid, 9)
    assert lab.wait_routes(a, {c.name: d.name, b.name: None}, timeout=10), lab.routes(a)
    time.sleep(1)
    watch.stop()
    gap = watch.gap_after(t_kill)
    assert gap is not None and gap < 2.5, f"outage {gap}"
    ok, _ = lab.ping(d, a)
    assert ok


def test_slow_direct_path_avoided_then_back_without_flapping(make_lab):
    lab = mesh(make_lab, n=3)
    a, b, c = lab.sites
    for x, y in ((a, b), (b, c)):
        lab.impair(x, y, delay_ms=5)
    lab.impair(a, c, delay_ms=40)                       # 80 ms RTT vs 2 × 10 ms via b
    assert lab.wait_routes(a, {c.name: b.name}, timeout=20), lab.status(a)["links"]
    assert lab.wait_routes(c, {a.name: b.name}, timeout=5)
    # the route moved; the session follows once the relay granted its port (blind relay)
    end = time.time() + 5
    while True:
        ok, out = lab.ping(a, c, count=5, interval=0.2)
        rtt = [float(x) for x in __import__("re").findall(r"time=([\d.]+)", out)]
        if ok and min(rtt) < 60 or time.time() > end:
            break
    assert ok and min(rtt) < 60, out                     # not the 80 ms direct path
    # back to 5 ms with ±3 ms jitter: returns direct and stays there
    lab.impair(a, c, delay_ms=5, jitter_ms=3)
    for x, y in ((a, b), (b, c)):
        lab.impair(x, y, delay_ms=5, jitter_ms=3)
    assert lab.wait_routes(a, {c.name: c.name}, timeout=20), lab.status(a)["links"]
    assert lab.wait_direct(timeout=5)    # the other end too: the window starts converged
    logs0 = {s.name: len(lab.daemon_log_full(s)) for s in lab.sites}
    time.sleep(20)                      # ~5 idle echoes per link and end (one per 4 s)
    for s in lab.sites:
        assert lab.routes(s) == {d.name: d.name for d in lab.sites if d is not s}
        window = lab.daemon_log_full(s)[logs0[s.name]:]
        reroutes, downs = window.count("routes:"), window.count(" DOWN (")
        # jitter must never move a route; only a link lost outright (a CPU-starved test
        # machine can miss 3 probes in a row) may, and then once away and once back
        assert reroutes <= 2 * downs, f"{s.name} rerouted {reroutes}× under ±3 ms jitter:\n{window}"
        assert downs <= 1, f"{s.name}: links went down under jitter:\n{window}"


def test_saturating_flow_never_moves_its_own_route(make_lab):
    # Issue 14, must show 4: a 30 s iperf3 that saturates the direct 5 ms path queues and
    # delays everything on it, the link's own monitoring included; the route must not move
    # (a sample taken while the link carries traffic may lower its cost, never raise it).
    # The relay path a-b-c (4 ms a hop: 16 ms round trip) is longer than the direct one idle
    # (10 ms) and shorter than it under the flow: the flow's queue on this box tops out at
    # about 20 ms round trip (it reached 19.3-19.4 ms in 2 runs of 8, too little to beat a
    # 5 ms-a-hop relay's 20 ms), so a cost taken from loaded samples would move the route.
    lab = mesh(make_lab, n=3)
    a, b, c = lab.sites
    for x, y, ms in ((a, b, 4), (b, c, 4), (a, c, 5)):
        lab.impair(x, y, delay_ms=ms)
    time.sleep(10)                                  # the costs settle
    assert lab.wait_direct(timeout=10)
    logs0 = {s.name: len(lab.daemon_log_full(s)) for s in lab.sites}
    server = lab.ns.popen(c.host, ["iperf3", "-s", "-1"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        out = lab.ns.exec(a.host, "iperf3", "-c", c.host4, "-t", "30", "-J", timeout=60).stdout
    finally:
        server.kill()
        server.wait()
    res = json.loads(out)
    rtt_ms = max(s["sender"]["max_rtt"] for s in res["end"]["streams"]) / 1000   # µs → ms
    assert res["end"]["sum_received"]["bytes"] > 0
    # queued past the relay path's 16 ms: a cost made of loaded samples would have moved it
    assert rtt_ms > 16, f"the flow never queued (max RTT {rtt_ms} ms): not a saturation test"
    # the flow's own route, at both ends, never moved and its link never went down. (Other
    # links of the same routers may change cost meanwhile: on this shared 2-core box the
    # saturating flow starves wireguard-go, which delays every link's echoes.)
    for s, far in ((a, c), (c, a)):
        window = lab.daemon_log_full(s)[logs0[s.name]:]
        assert f"link {far.name} DOWN (" not in window, f"{s.name}:\n{window}"
        for line in window.splitlines():
            if " routes: " in line:
                hops = dict(h.split("→") for h in line.split(" routes: ", 1)[1].split(", "))
                assert hops.get(far.name) == far.name, f"{s.name}:\n{window}"
    assert lab.routes(a)[c.name] == c.name and lab.routes(c)[a.name] == a.name


def allowed_ips(lab, s):
    """{peer public key: set of prefixes} as WireGuard on s holds them."""
    out = {}
    for line in lab.ns.exec(s.router, "wg", "show", s.ifname, "allowed-ips").stdout.splitlines():
        key, _, prefixes = line.partition("\t")
        out[key] = set(prefixes.split())
    return out


def test_non_relay_never_carries_transit(make_lab):
    lab = mesh(make_lab, n=3, relay=[True, False, True])
    a, b, c = lab.sites
    lab.cut(a, c)
    # an idle link is found silent within ~5.5 s (echoes every 4 s; liveness.py)
    assert lab.wait_routes(a, {c.name: None}, timeout=8) and lab.wait_routes(c, {a.name: None}, timeout=3)
    # the only other node is b, which is not a relay: a and c are unreachable, not relayed
    assert lab.routes(a)[c.name] is None and lab.routes(c)[a.name] is None
    ok, _ = lab.ping(a, c, count=3, wait_s=1)
    assert not ok
    # neither end hands b the other's prefixes, so WireGuard on b could not accept transit
    for src, dst in ((a, c), (c, a)):
        allowed = allowed_ips(lab, src)[b.public_key]
        assert dst.lan4 not in allowed and dst.overlay4 + "/32" not in allowed, (src.name, allowed)
    # with relay=true the same cut is healed through b
    b.relay = True
    lab.write_document(lab.document())
    for s in lab.sites:
        lab.reload(s)
    assert lab.wait_routes(a, {c.name: b.name}, timeout=10)
    assert lab.wait_ping(a, c, timeout=5)
