"""TCP throughput through the tunnel, kernel WireGuard vs wireguard-go, inside the qemu VM
(lanmesh_lab.vm): two namespaces joined by a veth, iperf3 over the bare veth, then over a
`kernel` backend tunnel, then over a `uapi` (wireguard-go) one. Everything runs under
software emulation, so absolute figures are far below real hardware; the ratios between
the three are what this shows.

Issue 3 (lanmesh adds nothing on the data path): the same two-namespace kernel WireGuard
tunnel (same keys, addresses, allowed IPs, endpoints, MTU 1420) is set up alternately by
lanmesh's `kernel` backend and by hand with `ip`/`wg`, ROUNDS times each (ABAB…) in one VM
boot; the median of the per-round ratios lanmesh/hand should be 1.0.

    .venv/bin/python bench/vm_iperf.py [--seconds 5] [--rounds 3]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "firmware"))
from lanmesh_lab.netns import entered  # noqa: E402

NS = {"a": f"lmi{os.getpid() % 10000}a", "b": f"lmi{os.getpid() % 10000}b"}
WAN = {"a": "198.18.0.1", "b": "198.18.0.2"}
OVL = {"a": "100.64.0.1", "b": "100.64.0.2"}


def host(seconds, rounds):
    from lanmesh_lab.vm import run_in_vm, vm_unavailable_reason
    reason = vm_unavailable_reason()
    if reason:
        print(f"skipped: {reason}")
        return 0
    res = run_in_vm([sys.executable, os.path.abspath(__file__), "--guest", "--seconds",
                     str(seconds), "--rounds", str(rounds)],
                    timeout=180 + (3 + 2 * rounds) * (seconds + 25))
    report = next((json.loads(line[7:]) for line in res.output.splitlines()
                   if line.startswith("RESULT ")), None)
    if report is None:
        print(f"guest failed (rc={res.returncode}):\n{res.output[-3000:]}")
        return 1
    base = report.get("veth") or 0
    print(f"VM boot {res.boot_seconds:.1f} s, wall {res.wall_seconds:.1f} s "
          f"(qemu TCG, {seconds} s per iperf3 run)")
    for mode in ("veth", "kernel", "uapi"):
        mbit = report.get(mode)
        if mbit is None:
            print(f"  {mode:7} failed: {report.get(mode + '_error')}")
            continue
        ratio = f"  ({mbit / base:.2f} of bare veth)" if base and mode != "veth" else ""
        print(f"  {mode:7} {mbit:8.1f} Mbit/s{ratio}")
    if report.get("kernel") and report.get("uapi"):
        print(f"  kernel / wireguard-go = {report['kernel'] / report['uapi']:.2f}")
    print("issue 3: kernel WireGuard configured by lanmesh vs by hand (ip/wg), alternating")
    ratios = []
    for i, rnd in enumerate(report.get("rounds", []), 1):
        cells = []
        for who in ("lanmesh", "hand"):
            v = rnd.get(who)
            cells.append(f"{who} {v:8.1f} Mbit/s" if v is not None
                         else f"{who} failed: {rnd.get(who + '_error')}")
        if rnd.get("lanmesh") and rnd.get("hand"):
            ratios.append(rnd["lanmesh"] / rnd["hand"])
            cells.append(f"ratio {ratios[-1]:.3f}")
        print(f"  round {i}: " + "   ".join(cells))
    got = {who: [r[who] for r in report.get("rounds", []) if r.get(who)]
           for who in ("lanmesh", "hand")}
    if got["lanmesh"] and got["hand"]:
        ml, mh = statistics.median(got["lanmesh"]), statistics.median(got["hand"])
        print(f"  median lanmesh {ml:.1f} Mbit/s, median hand {mh:.1f} Mbit/s "
              f"(ratio of medians {ml / mh:.3f})")
    if ratios:
        print(f"  median ratio lanmesh/hand = {statistics.median(ratios):.3f} "
              f"over {len(ratios)} paired rounds (1.0 = no overhead)")
    else:
        print("  no complete lanmesh/hand pair")
        return 1
    return 0


# --- inside the VM ---------------------------------------------------------------------------



def netns(side):
    return entered(NS[side])


def sh(*argv, ns=None):
    if ns:
        argv = ("ip", "netns", "exec", NS[ns]) + argv
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def iperf(dst, seconds):
    server = subprocess.Popen(["ip", "netns", "exec", NS["b"], "iperf3", "-s", "-1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        out = json.loads(sh("iperf3", "-c", dst, "-t", str(seconds), "-J", ns="a"))
        if "sum_received" not in out.get("end", {}):
            raise RuntimeError(f"iperf3: {out.get('error', 'no result')}")
        return round(out["end"]["sum_received"]["bits_per_second"] / 1e6, 1)
    finally:
        if server.poll() is None:
            server.kill()       # our own iperf3 server, by its handle
        server.wait()


def new_keys():
    from lanmesh.keys import genkey
    return {s: genkey() for s in NS}


def tunnel(kind, seconds, keys=None):
    from lanmesh.dataplane import make_backend
    from lanmesh.dataplane.linkstate import LinkState, PeerState
    from lanmesh.keys import pubkey
    keys = keys or new_keys()
    # Distinct names: wireguard-go's UAPI socket path is shared by all namespaces.
    ifname = {s: f"lmi{kind[0]}{s}" for s in NS}
    be = {}
    try:
        for s, o in (("a", "b"), ("b", "a")):
            st = LinkState(ifname[s], keys[s], 51820, addresses=[f"{OVL[s]}/32"],
                           routes=[f"{OVL[o]}/32"],
                           peers=[PeerState(pubkey(keys[o]), [f"{OVL[o]}/32"],
                                            endpoint=f"{WAN[o]}:51820")])
            with netns(s):
                be[s] = make_backend(kind, ifname[s])
                be[s].apply(st)
        sh("ping", "-c", "1", "-W", "10", OVL["b"], ns="a")     # first handshake
        return iperf(OVL["b"], seconds)
    finally:
        for s, b in be.items():
            with netns(s):
                b.close()


def hand_tunnel(seconds, keys):
    """The same tunnel as tunnel("kernel", …, keys) (same names, keys, port, peer, allowed IPs,
    addresses, routes, MTU), configured the way an admin would: ip link / wg set / ip addr /
    ip route. Only what carries packets: no nft table, no forwarding sysctl (neither is on
    the path of traffic the two namespaces send to each other)."""
    from lanmesh.keys import pubkey
    ifname = {s: f"lmik{s}" for s in NS}
    made = []
    try:
        with tempfile.TemporaryDirectory(prefix="lmi-hand-") as tmp:
            for s, o in (("a", "b"), ("b", "a")):
                keyfile = os.path.join(tmp, f"{s}.key")
                fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(keys[s] + "\n")
                dev = ifname[s]
                sh("ip", "link", "add", dev, "type", "wireguard", ns=s)
                made.append(s)
                sh("wg", "set", dev, "listen-port", "51820", "private-key", keyfile,
                   "peer", pubkey(keys[o]), "allowed-ips", f"{OVL[o]}/32",
                   "endpoint", f"{WAN[o]}:51820", ns=s)
                sh("ip", "link", "set", dev, "mtu", "1420", "up", ns=s)
                sh("ip", "addr", "add", f"{OVL[s]}/32", "dev", dev, ns=s)
                sh("ip", "route", "add", f"{OVL[o]}/32", "dev", dev, ns=s)
        sh("ping", "-c", "1", "-W", "10", OVL["b"], ns="a")     # first handshake
        return iperf(OVL["b"], seconds)
    finally:
        for s in made:
            subprocess.run(["ip", "netns", "exec", NS[s], "ip", "link", "del", ifname[s]],
                           capture_output=True)


def compare_hand(seconds, rounds):
    """lanmesh `kernel` backend vs hand-made, alternating (ABAB…), same keys every time."""
    keys = new_keys()
    out = []
    for _ in range(rounds):
        rnd = {}
        for who, fn in (("lanmesh", lambda: tunnel("kernel", seconds, keys)),
                        ("hand", lambda: hand_tunnel(seconds, keys))):
            try:
                rnd[who] = fn()
            except Exception as exc:
                err = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else ""
                rnd[who + "_error"] = f"{type(exc).__name__}: {exc} {err}".strip()
        out.append(rnd)
    return out


def guest(seconds, rounds):
    report = {}
    try:
        for s in NS:
            sh("ip", "netns", "add", NS[s])
            sh("ip", "link", "set", "lo", "up", ns=s)
        sh("ip", "link", "add", "wan", "netns", NS["a"], "type", "veth", "peer", "wan",
           "netns", NS["b"])
        for s in NS:
            sh("ip", "addr", "add", f"{WAN[s]}/24", "dev", "wan", ns=s)
            sh("ip", "link", "set", "wan", "up", ns=s)
        report["veth"] = iperf(WAN["b"], seconds)
        for kind in ("kernel", "uapi"):
            try:
                report[kind] = tunnel(kind, seconds)
            except Exception as exc:
                report[kind + "_error"] = f"{type(exc).__name__}: {exc}"
        report["rounds"] = compare_hand(seconds, rounds)
    finally:
        for name in NS.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
    print("RESULT " + json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3,
                    help="lanmesh/hand-configured pairs for the issue-3 comparison")
    ap.add_argument("--guest", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    sys.exit(guest(a.seconds, a.rounds) if a.guest else host(a.seconds, a.rounds))
