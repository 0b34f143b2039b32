"""Issue 11: control-plane latency, probe fact → backend update. Three whole daemons in one
process (lanmesh_lab.inprocess: real mesh cores, signed adverts, applier and loop; loopback
UDP for the tunnel, a recording backend), a link cut N times: per cut, when the core
declares the link down (its LinkChanged: the probe fact), when it hands the new routes over
(RoutesChanged), and when the backend's apply runs (on the applier's thread).

    .venv/bin/python bench/control_latency.py [--cuts 10] [--probe-ms 250]
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "firmware"))
from lanmesh import aio  # noqa: E402
from lanmesh.adapters.udp import host_of  # noqa: E402
from lanmesh.mesh.node import LinkChanged  # noqa: E402
from lanmesh_lab.inprocess import FakeNet, make_sites, running  # noqa: E402


async def _until(cond, timeout):
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            return False
        await aio.sleep(0.005)
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cuts", type=int, default=10)
    ap.add_argument("--probe-ms", type=int, default=250, help="the document's probe interval")
    a = ap.parse_args()
    net = FakeNet()
    pair = frozenset((host_of("fd00:6c6d::1/128"), host_of("fd00:6c6d::3/128")))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cfgs = make_sites(Path(tmp), probe_interval_ms=a.probe_ms)

        async def body(daemons, backends):
            d, backend = daemons[0], backends[0]
            assert await _until(lambda: d.mesh is not None, 10), "no document applied"
            marks = {}
            runner = d.mesh
            effects = runner._effects

            def spy(out):                       # timestamps the core's facts as they leave it
                for e in out:
                    if isinstance(e, LinkChanged) and not e.up and e.peer == "site-c":
                        marks.setdefault("down", time.monotonic())
                effects(out)
            runner._effects = spy
            routes = d.set_plan

            def on_routes(plan):
                if plan.next_hops.get("site-c") not in (None, "site-c"):
                    marks.setdefault("routes", time.monotonic())
                routes(plan)
            runner.on_routes = on_routes
            direct = lambda: {r["node"]: r["via"] for r in d.status()["routes"]}.get("site-c") == "site-c"
            assert await _until(direct, 10)
            for i in range(a.cuts):
                await aio.sleep(1.0)
                marks.clear()
                t_cut = time.monotonic()
                net.cut.add(pair)
                await _until(lambda: "routes" in marks and backend.applied_at
                             and backend.applied_at[-1] >= marks["routes"], 10)
                later = [t for t in backend.applied_at if t >= marks.get("routes", float("inf"))]
                if "down" in marks and later:
                    rows.append((marks["down"] - t_cut, marks["routes"] - marks["down"],
                                 later[0] - marks["routes"], later[0] - marks["down"]))
                net.cut.discard(pair)
                back = await _until(direct, 60)     # recovery is slow on purpose (damping)
                print(f"  cut {i + 1}: {'measured' if later else 'not measured'}, "
                      f"{'back' if back else 'not back'} on the direct path", flush=True)
        running(cfgs, net, body)
    if not rows:
        raise SystemExit("no cut was measured")
    cols = list(zip(*rows))

    def f(xs):
        xs = [x * 1000 for x in xs]
        return f"p50 {statistics.median(xs):6.1f} ms, max {max(xs):6.1f} ms"
    print(f"{len(rows)} cuts, probe interval {a.probe_ms} ms, in-process (x86-64 CPython, fake data plane):")
    print(f"  cut → link declared down (detection)        {f(cols[0])}")
    print(f"  link down → new routes (SPF delay + plan)   {f(cols[1])}")
    print(f"  new routes → backend apply (applier)        {f(cols[2])}")
    print(f"  probe fact → backend update                 {f(cols[3])}")


if __name__ == "__main__":
    main()
