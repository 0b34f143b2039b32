"""TCP throughput through the tunnel, kernel WireGuard vs wireguard-go, inside the qemu VM
(lanmesh.lab.vm): two namespaces joined by a veth, iperf3 over the bare veth, then over a
`kernel` backend tunnel, then over a `uapi` (wireguard-go) one. Everything runs under
software emulation, so absolute figures are far below real hardware; the ratios between
the three are what this shows.

    .venv/bin/python bench/vm_iperf.py [--seconds 5]
"""
import argparse
import contextlib
import ctypes
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "firmware"))

NS = {"a": f"lmi{os.getpid() % 10000}a", "b": f"lmi{os.getpid() % 10000}b"}
WAN = {"a": "198.18.0.1", "b": "198.18.0.2"}
OVL = {"a": "100.64.0.1", "b": "100.64.0.2"}
CLONE_NEWNET = 0x40000000


def host(seconds):
    from lanmesh.lab.vm import run_in_vm, vm_unavailable_reason
    reason = vm_unavailable_reason()
    if reason:
        print(f"skipped: {reason}")
        return 0
    res = run_in_vm([sys.executable, os.path.abspath(__file__), "--guest", "--seconds",
                     str(seconds)], timeout=120 + 10 * seconds)
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
    return 0


# --- inside the VM ---------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def netns(side):
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    fd = os.open(f"/run/netns/{NS[side]}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns failed")
        yield
    finally:
        _libc.setns(home, CLONE_NEWNET)
        os.close(fd)
        os.close(home)


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
        return round(out["end"]["sum_received"]["bits_per_second"] / 1e6, 1)
    finally:
        if server.poll() is None:
            server.kill()       # our own iperf3 server, by its handle
        server.wait()


def tunnel(kind, seconds):
    from lanmesh.dataplane import make_backend
    from lanmesh.dataplane.linkstate import LinkState, PeerState
    from lanmesh.keys import genkey, pubkey
    keys = {s: genkey() for s in NS}
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


def guest(seconds):
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
    finally:
        for name in NS.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
    print("RESULT " + json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--guest", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    sys.exit(guest(a.seconds) if a.guest else host(a.seconds))
