# Issue 11: does lanmesh's userspace data plane lose throughput against wireguard-go set up
# by hand? Two 2-site labs side by side: one run by lanmesh (uapi backend), one where each
# router runs wireguard-go configured with `wg` and `ip` the way a person would, with the same
# keys, MTU, keepalive and allowed IPs. iperf3 from LAN host a to LAN host b, 1 and 4 streams,
# alternated round by round; throughput ratio and wireguard-go CPU per bit (lanmesh / hand).
#   .venv/bin/python bench/uapi_vs_hand.py [--rounds 3] [--seconds 5]
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "firmware"))
sys.path.insert(0, HERE)

from lanmesh_lab.sites import Lab          # noqa: E402
from startup_idle import cpu_ticks         # noqa: E402


def wg_pids(lab):
    out = []
    for s in lab.sites:
        for pid in lab.ns.pids(s.router):
            try:
                if open(f"/proc/{pid}/comm").read().strip() == "wireguard-go":
                    out.append(pid)
            except OSError:
                pass
    return out


def by_hand(lab, setsid=False):
    """Each router: wireguard-go + wg set + ip, as a person configures it from the document.
    setsid: in a session of its own, as lanmesh starts it."""
    doc = lab.document()
    for s in lab.sites:
        ns = s.router
        lab.ns.popen(ns, ["wireguard-go", "-f", s.ifname], env=dict(os.environ, WG_PROCESS_FOREGROUND="1"),
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=setsid)
        for _ in range(100):
            if lab.ns.exec(ns, "wg", "show", s.ifname, check=False).returncode == 0:
                break
            time.sleep(0.05)
        key = os.path.join(s.dir, "private.key")
        lab.ns.exec(ns, "wg", "set", s.ifname, "private-key", key, "listen-port", "51820")
        for n in doc["nodes"]:
            if n["name"] == s.name:
                continue
            lab.ns.exec(ns, "wg", "set", s.ifname, "peer", n["public_key"], "endpoint", n["endpoints"][0],
                        "persistent-keepalive", "25", "allowed-ips", ",".join(n["address"] + n["lan"]))
        lab.ns.exec(ns, "ip", "link", "set", s.ifname, "mtu", "1420", "up")
        for a in (s.overlay4 + "/32", s.overlay6 + "/128"):
            lab.ns.exec(ns, "ip", "addr", "add", a, "dev", s.ifname)
        for o in lab.sites:
            if o is not s:
                for p in (o.lan4, o.lan6, o.overlay4 + "/32", o.overlay6 + "/128"):
                    lab.ns.exec(ns, "ip", "route", "add", p, "dev", s.ifname)
        lab.ns.exec(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")


def mirror(mesh, hand, skip=()):
    """The hand lab made a copy of what lanmesh configured, piece by piece (wg showconf,
    MTU, addresses, routes, nft table, sysctls), with wireguard-go started as by_hand does:
    if this copy is as slow as lanmesh, the cause is in the configuration, else in how
    lanmesh starts and runs wireguard-go. skip: pieces to leave out, to bisect."""
    for m, h in zip(mesh.sites, hand.sites):
        ns = h.router
        hand.ns.popen(ns, ["wireguard-go", "-f", h.ifname],
                      env=dict(os.environ, WG_PROCESS_FOREGROUND="1"),
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if hand.ns.exec(ns, "wg", "show", h.ifname, check=False).returncode == 0:
                break
            time.sleep(0.05)
        conf = mesh.ns.exec(m.router, "wg", "showconf", m.ifname).stdout
        path = os.path.join(h.dir, "mirror.conf")
        with open(path, "w") as f:
            f.write(conf)
        hand.ns.exec(ns, "wg", "setconf", h.ifname, path)
        link = json.loads(mesh.ns.exec(m.router, "ip", "-j", "link", "show", m.ifname).stdout)[0]
        hand.ns.exec(ns, "ip", "link", "set", h.ifname, "mtu", str(link["mtu"]), "up")
        for a in json.loads(mesh.ns.exec(m.router, "ip", "-j", "addr", "show", m.ifname).stdout)[0]["addr_info"]:
            if "addr" in skip or (a["family"] == "inet6" and a["local"].startswith("fe80")):
                continue
            if "v6" in skip and a["family"] == "inet6":
                continue
            hand.ns.exec(ns, "ip", "addr", "add", f"{a['local']}/{a['prefixlen']}", "dev", h.ifname)
        for fam in ("-4", "-6"):
            if fam == "-6" and "v6" in skip:
                continue
            for r in json.loads(mesh.ns.exec(m.router, "ip", fam, "-j", "route", "show", "dev",
                                             m.ifname, "proto", "108").stdout):
                hand.ns.exec(ns, "ip", fam, "route", "replace", r["dst"], "dev", h.ifname)
        if "nft" not in skip:
            table = mesh.ns.exec(m.router, "nft", "list", "table", "inet", "lanmesh_" + m.ifname).stdout
            hand.ns.exec(ns, "nft", "-f", "-", input=table.replace(m.ifname, h.ifname))
        hand.ns.exec(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")


def iperf(lab, streams, seconds):
    a, b = lab.sites
    pids = wg_pids(lab)
    t0 = sum(cpu_ticks(p) for p in pids)
    r = lab.ns.exec(a.host, "iperf3", "-c", b.host4, "-t", str(seconds), "-P", str(streams), "-J",
                    check=False, timeout=seconds + 30)
    ticks = sum(cpu_ticks(p) for p in pids) - t0
    data = json.loads(r.stdout)["end"]["sum_received"]
    return data["bits_per_second"], ticks / os.sysconf("SC_CLK_TCK") / (data["bytes"] * 8) * 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--mirror", action="store_true",
                    help="configure the second lab as a copy of lanmesh's configuration")
    ap.add_argument("--skip", default="", help="with --mirror: pieces to leave out (nft,v6,addr)")
    ap.add_argument("--control", action="store_true",
                    help="both labs by hand (no lanmesh): shows what the lab order alone does")
    ap.add_argument("--hand-setsid", action="store_true",
                    help="start the by-hand wireguard-go in a session of its own, as lanmesh does")
    ap.add_argument("--swap", action="store_true",
                    help="build the by-hand lab first and lanmesh's second")
    a = ap.parse_args()
    with Lab(2) as first, Lab(2) as second:
        mesh, hand = (second, first) if a.swap else (first, second)
        if a.control:
            by_hand(mesh)
        else:
            mesh.start_all()
        mesh.wait_ping(*mesh.sites)
        if a.mirror:
            for m, h in zip(mesh.sites, hand.sites):     # the same keys: wg showconf carries them
                h.overlay4, h.overlay6 = m.overlay4, m.overlay6
            mirror(mesh, hand, set(filter(None, a.skip.split(","))))
        else:
            by_hand(hand, setsid=a.hand_setsid)
        hand.wait_ping(*hand.sites)
        for lab in (mesh, hand):
            lab.ns.popen(lab.sites[1].host, ["iperf3", "-s"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
        time.sleep(1)
        for streams in (1, 4):
            ratios, cpu = [], []
            for _ in range(a.rounds):
                (m_bps, m_cpu), (h_bps, h_cpu) = iperf(mesh, streams, a.seconds), iperf(hand, streams, a.seconds)
                ratios.append(m_bps / h_bps)
                cpu.append(m_cpu / h_cpu)
                print(f"  {streams} stream(s): lanmesh {m_bps / 1e6:.0f} Mbit/s, by hand "
                      f"{h_bps / 1e6:.0f} Mbit/s; wireguard-go CPU s per Gbit {m_cpu:.2f} vs {h_cpu:.2f}",
                      flush=True)
            print(f"{streams} stream(s), {a.rounds} alternated rounds: throughput lanmesh / hand "
                  f"median {statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}); "
                  f"CPU per bit lanmesh / hand median {statistics.median(cpu):.2f}", flush=True)


if __name__ == "__main__":
    main()
