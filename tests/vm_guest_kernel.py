# Runs INSIDE the test VM (tests/test_vm.py boots it): the kernel backend against a real
# kernel WireGuard. Two namespaces joined by a veth (WAN 198.18.0.0/24), one KernelBackend
# in each (overlay 100.64.0.x, fd00:64::x), then: ping through the tunnel, `wg show` equals
# the intended peers, an unchanged apply touches nothing, a changed peer does not disturb
# the others, supervise() recreates a deleted link, close() leaves nothing behind.
# One process for everything: Python imports over 9p under emulation cost seconds.
# Prints one line per check ("CHECK name ok|FAIL detail") and a "GUEST-RESULT {json}" line.
import json
import os
import subprocess
import sys
import time
import traceback

T0 = time.monotonic()
from lanmesh.dataplane.kernel import KernelBackend, kernel_available  # noqa: E402
from lanmesh.dataplane.linkstate import LinkState, PeerState  # noqa: E402
from lanmesh.dataplane.uapi_proto import norm_prefix  # noqa: E402
from lanmesh.keys import genkey, pubkey  # noqa: E402
from lanmesh_lab.netns import entered  # noqa: E402

IMPORT_S = time.monotonic() - T0
PREFIX = f"lmk{os.getpid() % 10000}"
NS = {"a": f"{PREFIX}a", "b": f"{PREFIX}b"}
WAN = {"a": "198.18.0.1", "b": "198.18.0.2"}
OVL = {"a": ("100.64.0.1", "fd00:64::1"), "b": ("100.64.0.2", "fd00:64::2")}
IF = "lmwg0"
PORT = 51820
checks, timings = [], {"import_s": round(IMPORT_S, 2)}


def check(name, ok, detail=""):
    detail = "" if ok else str(detail)      # what was seen, when it was not what we wanted
    checks.append({"name": name, "ok": bool(ok), "detail": detail})
    print(f"CHECK {name} {'ok' if ok else 'FAIL ' + detail}", flush=True)
    return ok


def sh(*argv, ns=None, check_rc=True):
    if ns:
        argv = ("ip", "netns", "exec", NS[ns]) + argv
    r = subprocess.run(argv, capture_output=True, text=True)
    if check_rc and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def netns(side):
    return entered(NS[side])


def setup_namespaces():
    for side in NS:
        sh("ip", "netns", "add", NS[side])
        sh("ip", "link", "set", "lo", "up", ns=side)
    sh("ip", "link", "add", "wan", "netns", NS["a"], "type", "veth", "peer", "wan", "netns", NS["b"])
    for side in NS:
        sh("ip", "addr", "add", f"{WAN[side]}/24", "dev", "wan", ns=side)
        sh("ip", "link", "set", "wan", "up", ns=side)


def teardown_namespaces():
    for name in NS.values():
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def state(side, keys, ghost=None, extra_b=()):
    other = "b" if side == "a" else "a"
    v4, v6 = OVL[other]
    peers = [PeerState(keys[other][1], [f"{v4}/32", f"{v6}/128", *(extra_b if side == "a" else ())],
                       endpoint=f"{WAN[other]}:{PORT}")]
    if ghost:     # a peer that never answers: changing it must not disturb the real one
        peers.append(PeerState(ghost[0], ghost[1], endpoint="198.18.0.99:51820", keepalive=25))
    return LinkState(IF, keys[side][0], PORT, peers=peers,
                     addresses=[f"{OVL[side][0]}/32", f"{OVL[side][1]}/128"],
                     routes=[f"{v4}/32", f"{v6}/128", "198.19.2.0/24"] if side == "a"
                     else [f"{v4}/32", f"{v6}/128"])


def ping(side, addr, tries=3):
    for _ in range(tries):
        if sh("ping", "-c", "1", "-W", "5", addr, ns=side, check_rc=False).returncode == 0:
            return True
    return False


def wg_dump(side):
    """`wg show <if> dump` → {peer: (endpoint, sorted allowed ips, keepalive)}."""
    out = sh("wg", "show", IF, "dump", ns=side).stdout.strip().splitlines()
    peers = {}
    for line in out[1:]:
        f = line.split("\t")
        ips = tuple(sorted(f[3].split(","))) if f[3] != "(none)" else ()
        peers[f[0]] = (f[2], ips, f[7])
    return peers


def many_peers(n=200):
    """A device big enough that the kernel dumps it over several netlink messages: the
    read-back must merge them, or the second apply would see differences and rewrite peers."""
    be = KernelBackend("lmwg1")
    peers = [PeerState(pubkey(genkey()), [f"100.65.{i // 256}.{i % 256}/32",
                                          f"fd00:65::{i:x}/128", f"198.19.{i % 250}.{i // 250 * 16}/28"],
                       endpoint=f"198.18.1.{i % 250 + 1}:{51000 + i}", keepalive=i % 3 * 10)
             for i in range(n)]
    st = LinkState("lmwg1", genkey(), 51900, peers=peers, addresses=["100.65.255.1/32"])
    with netns("b"):
        try:
            t = time.monotonic()
            be.apply(st)
            timings[f"apply_{n}_peers_s"] = round(time.monotonic() - t, 2)
            sets = be.set_requests
            t = time.monotonic()
            changes = be.apply(st)
            timings[f"reapply_{n}_peers_s"] = round(time.monotonic() - t, 2)
            got = be.peers()
            from lanmesh.netlink import wgnl
            with wgnl.open_socket() as nl:
                parts = wgnl.get_device(nl, wgnl.family_id(nl), "lmwg1")
            timings["many_peers_dump_messages"] = len(parts)
        finally:
            be.close()
    want = {p.public_key: tuple(sorted(norm_prefix(a) for a in p.allowed_ips)) for p in peers}
    have = {k: v.allowed_ips for k, v in got.items()}
    check("many_peers_read_back", have == want,
          [(k[:8], have.get(k), want.get(k)) for k in set(have) | set(want)
           if have.get(k) != want.get(k)][:3])
    check("many_peers_split_dump", timings["many_peers_dump_messages"] > 1,
          timings["many_peers_dump_messages"])
    check("many_peers_reapply_no_change", changes == [] and be.set_requests == sets, changes[:5])


def run():
    check("kernel_available", kernel_available())
    keys = {s: (k, pubkey(k)) for s, k in ((s, genkey()) for s in NS)}
    ghost_key = pubkey(genkey())
    ghost = (ghost_key, ["100.64.0.3/32"])
    be = {s: KernelBackend(IF) for s in NS}
    st = {"a": state("a", keys, ghost), "b": state("b", keys)}
    try:
        t = time.monotonic()
        for s in NS:                    # both ends configured before any traffic
            with netns(s):
                be[s].apply(st[s])
        timings["first_apply_s"] = round(time.monotonic() - t, 2)
        t = time.monotonic()
        check("ping_v4", ping("a", OVL["b"][0], tries=4))
        timings["first_ping_s"] = round(time.monotonic() - t, 2)
        check("ping_v6", ping("b", OVL["a"][1]))

        dump = wg_dump("a")
        want = {keys["b"][1]: (f"{WAN['b']}:{PORT}", ("100.64.0.2/32", "fd00:64::2/128"), "off"),
                ghost_key: ("198.18.0.99:51820", ("100.64.0.3/32",), "25")}
        check("wg_show_matches", dump == want, dump)

        with netns("a"):
            before = be["a"].peers()
            sets = be["a"].set_requests
            changes = be["a"].apply(st["a"])
            after = be["a"].peers()
        pb, pa = before[keys["b"][1]], after[keys["b"][1]]
        check("peers_status", pb.last_handshake > 0 and pb.rx_bytes > 0 and
              pb.allowed_ips == ("100.64.0.2/32", "fd00:64::2/128"), pb.as_dict())
        check("reapply_no_change", changes == [] and be["a"].set_requests == sets, changes)
        check("reapply_session_kept", (pa.last_handshake, pa.rx_bytes) ==
              (pb.last_handshake, pb.rx_bytes), (pb.as_dict(), pa.as_dict()))

        # Change the ghost's allowed IPs: the live peer's session must stay exactly as it was.
        st["a"] = state("a", keys, (ghost_key, ["100.64.0.3/32", "198.19.3.0/24"]))
        with netns("a"):
            changes = be["a"].apply(st["a"])
            after = be["a"].peers()
        check("change_other_peer_only", len(changes) == 1 and ghost_key[:8] in changes[0], changes)
        pa = after[keys["b"][1]]
        check("untouched_peer_kept", (pa.last_handshake, pa.rx_bytes) ==
              (pb.last_handshake, pb.rx_bytes), pa.as_dict())
        check("ghost_allowed_ips", after[ghost_key].allowed_ips ==
              ("100.64.0.3/32", "198.19.3.0/24"), after[ghost_key].allowed_ips)

        # Change the live peer's allowed IPs: edited in place, the session survives.
        st["a"] = state("a", keys, (ghost_key, ["100.64.0.3/32", "198.19.3.0/24"]),
                        extra_b=["198.19.2.0/24"])
        with netns("a"):
            changes = be["a"].apply(st["a"])
            after = be["a"].peers()
        pa = after[keys["b"][1]]
        check("live_peer_updated_in_place", len(changes) == 1 and pa.last_handshake ==
              pb.last_handshake and "198.19.2.0/24" in pa.allowed_ips, (changes, pa.as_dict()))
        check("ping_after_update", ping("a", OVL["b"][0]))
        with netns("a"):
            hs = be["a"].peers()[keys["b"][1]].last_handshake
        check("no_new_handshake", hs == pb.last_handshake, (hs, pb.last_handshake))

        # Drop the ghost: only it goes.
        st["a"] = state("a", keys, None, extra_b=["198.19.2.0/24"])
        with netns("a"):
            changes = be["a"].apply(st["a"])
        check("remove_peer", changes == [f"peer {ghost_key[:8]}… removed"] and
              set(wg_dump("a")) == {keys["b"][1]}, changes)

        # Someone deletes the link: supervise() puts everything back.
        sh("ip", "link", "del", IF, ns="a")
        with netns("a"):
            repaired = be["a"].supervise()
            again = be["a"].supervise()
        routes = sh("ip", "route", "show", "dev", IF, ns="a").stdout
        check("supervise_recreates", repaired and not again and "100.64.0.2" in routes, routes)
        check("ping_after_recreate", ping("a", OVL["b"][0], tries=4))
        many_peers()
    finally:
        for s in NS:
            with netns(s):
                try:
                    be[s].close()
                except Exception as exc:
                    check(f"close_{s}", False, exc)
    for s in NS:
        links = sh("ip", "-o", "link", "show", ns=s).stdout
        tables = sh("nft", "list", "tables", ns=s).stdout
        check(f"close_leaves_nothing_{s}", IF not in links and "lanmesh" not in tables,
              links + tables)


def main():
    t = time.monotonic()
    rc = 0
    try:
        setup_namespaces()
        run()
    except Exception:
        traceback.print_exc()
        check("guest_completed", False, "exception (traceback above)")
    finally:
        teardown_namespaces()
    timings["guest_s"] = round(time.monotonic() - t, 2)
    if not all(c["ok"] for c in checks):
        rc = 1
    print("GUEST-RESULT " + json.dumps({"checks": checks, "timings": timings}), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
