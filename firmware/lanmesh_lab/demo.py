# `make demo`: three sites come up from nothing in network namespaces, every LAN host pings
# every other site's LAN host through the mesh, a table shows the result, everything is torn
# down. Exit status 0 only if every LAN pair reached each other.
import argparse
import re
import sys
import time

from lanmesh.status_view import table
from .failover import PingWatch
from .fleetlab import FleetLab
from .sites import Lab


def say(msg):
    print(msg, flush=True)


def rtt_ms(output):
    m = re.search(r"time=([\d.]+) ms", output)
    return float(m.group(1)) if m else None


def mesh_table(lab):
    rows, all_ok = [], True
    for s in lab.sites:
        st = lab.status(s)
        up = [p for p in st["peers"] if p["last_handshake_age"] is not None]
        ages = [p["last_handshake_age"] for p in up]
        cells = []
        for d in lab.sites:
            if d is s:
                continue
            ok, out = lab.ping(s, d, count=1, wait_s=2)
            all_ok &= ok
            cells.append(f"{d.letter}:{rtt_ms(out):.2f}ms" if ok else f"{d.letter}:FAIL")
        rows.append((s.name, s.lan4, f"v{st['version']}", f"{len(up)}/{len(st['peers'])}",
                     f"{max(ages):.0f}s" if ages else "-", " ".join(cells)))
    return table(rows, ("site", "LAN", "document", "peers up", "handshake", "ping RTT to other LANs")), all_ok


def route_lines(lab, s):
    return "\n".join(f"  {r['prefix']:<16} → {r['node']} via {r['via'] or 'unreachable'}"
                     for r in lab.status(s)["routes"] if ":" not in r["prefix"])


def failover(lab):
    """Cut the a↔c WAN path under a 10 ms ping, show the relay route and the gap, restore."""
    a, c = lab.sites[0], lab.sites[2]
    if not lab.wait_direct(timeout=20):
        say("mesh did not converge to direct routes")
        return False
    watch = PingWatch(lab, a, c)
    time.sleep(1)
    say(f"\ncutting the WAN path {a.name} ↔ {c.name} (ping {a.host4} → {c.host4} every 10 ms)")
    t_cut = time.time()
    lab.cut(a, c)
    relayed = any(lab.wait_routes(a, {c.name: r.name}, timeout=5 if i == 0 else 0.1)
                  for i, r in enumerate(x for x in lab.sites if x not in (a, c)))
    time.sleep(1.5)
    say(f"{a.name} routes while cut:\n{route_lines(lab, a)}")
    t_restore = time.time()
    lab.restore(a, c)
    say(f"restored {a.name} ↔ {c.name}")
    back = lab.wait_routes(a, {c.name: c.name}, timeout=20)
    back_after = time.time() - t_restore
    time.sleep(1)
    watch.stop()
    gap = watch.gap_after(t_cut, until=t_restore)
    say(f"{a.name} routes after restore:\n{route_lines(lab, a)}")
    say(f"\nfailover: traffic resumed through a relay after a {gap * 1000:.0f} ms gap" if relayed and gap
        else "failover: NO reroute")
    say(f"recovery: back on the direct path {back_after:.1f} s after the restore" if back
        else "recovery: did NOT return to the direct path")
    return bool(relayed and gap is not None and gap < 3 and back)


def main(argv=None):
    ap = argparse.ArgumentParser(description="lanmesh demo: a multi-site mesh in network namespaces")
    ap.add_argument("--sites", type=int, default=3)
    ap.add_argument("--backend", default="uapi")
    ap.add_argument("--no-fleet", action="store_true", help="static local document, no MQTT broker")
    args = ap.parse_args(argv)
    ok = False
    with Lab(args.sites, backend=args.backend) as lab:
        say(f"lanmesh demo: {args.sites} sites in namespaces {lab.ns.prefix}-*, backend {args.backend}")
        fleet = None
        if args.no_fleet:
            lab.write_document(lab.document())
        else:
            # Sites are provisioned with the signed v1; the broker (TLS, passwords, ACL) runs
            # in the WAN namespace and holds it retained.
            fleet = FleetLab(lab, lab.workdir)
            fleet.start_broker()
            say(f"fleet acme: broker {fleet.url} in namespace {lab.wan}, signed document v1")
        t0 = time.monotonic()
        for s in lab.sites:
            lab.start(s, wait=False)
        for s in lab.sites:
            lab.wait_ready(s)
        first, last = lab.sites[0], lab.sites[-1]
        reached = lab.wait_ping(first, last, timeout=20)
        say(f"mesh up: first LAN-to-LAN ping after {time.monotonic() - t0:.2f}s" if reached
            else "mesh did not come up")
        if fleet is not None:
            t_pub = time.monotonic()
            version = fleet.publish(settings={"keepalive": 20})
            try:
                fleet.wait_applied(version, timeout=30)
                say(f"controller published v{version}: applied and confirmed by every site "
                    f"after {time.monotonic() - t_pub:.2f}s\n")
            except TimeoutError as e:
                say(f"fleet: {e}")
                reached = False
            say(fleet.table())
        text, ok = mesh_table(lab)
        ok = ok and reached
        if fleet is not None:
            ok = ok and all(f"v{version}" in line for line in text.splitlines()[1:])
        say("")
        say(text)
        v6, _ = lab.ping(first, last, family=6, count=1, wait_s=2)
        say(f"\nIPv6 {first.host6} → {last.host6}: {'ok' if v6 else 'FAIL'}")
        ok = ok and v6
        if args.sites >= 3:
            ok = failover(lab) and ok
        for s in lab.sites:
            lab.stop(s)
        if fleet is not None:
            fleet.close()
    say(f"\ntorn down. demo {'PASSED' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
