# Mesh routing figures: route computation time on a synthetic 1,000-node link-state database
# (sparse and full mesh), control traffic per node at 4 and 16 sites and failover time, both
# measured on the simulated network of tests/test_mesh_sim.py.
#   .venv/bin/python bench/mesh_compute.py [--quick]
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "firmware"))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from lanmesh.mesh.paths import shortest_paths          # noqa: E402
from lanmesh.mesh.plan import make_plan, node_facts    # noqa: E402
from test_mesh_sim import MeshSim, doc_nodes            # noqa: E402

# per datagram on the wire: inner IPv6 40 + UDP 8, WireGuard data header 16 + tag 16,
# outer UDP 8 + IPv4 20
OVERHEAD = 40 + 8 + 32 + 8 + 20


def synthetic_table(n, degree, rng):
    names = ["n%04d" % i for i in range(n)]
    table = {x: {} for x in names}
    if degree >= n - 1:
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                c = rng.randint(5, 120)
                table[a][b] = c
                table[b][a] = c + rng.choice((0, 0, 1, 3))
    else:
        for i, a in enumerate(names):   # ring for connectivity + random chords
            b = names[(i + 1) % n]
            table[a][b] = table[b][a] = rng.randint(5, 120)
        while sum(len(v) for v in table.values()) < n * degree:
            a, b = rng.sample(names, 2)
            c = rng.randint(5, 120)
            table[a][b] = table[b][a] = c
    return names, table


def bench_compute(n, degree, runs):
    rng = random.Random(7)
    names, table = synthetic_table(n, degree, rng)
    relays = set(x for x in names if rng.random() < 0.8)
    nodes = {f[0]: f for f in (node_facts(d) for d in doc_nodes_big(names))}
    best = None
    for _ in range(runs):
        t0 = time.perf_counter()
        hops, _, _ = shortest_paths(names[0], table, relays)
        t1 = time.perf_counter()
        make_plan(names[0], nodes, hops)
        t2 = time.perf_counter()
        if best is None or t2 - t0 < best[0] + best[1]:
            best = (t1 - t0, t2 - t1)
    links = sum(len(v) for v in table.values()) // 2
    print("  %5d nodes, %7d links: shortest paths %7.1f ms, plan %5.1f ms, reachable %d"
          % (n, links, best[0] * 1000, best[1] * 1000, len(hops)))
    return best


def doc_nodes_big(names):
    return [{"name": x, "address": ["100.64.%d.%d/32" % (i // 250, i % 250 + 1), "fd00::%x/128" % (i + 1)],
             "lan": ["198.19.%d.0/24" % (i % 256)], "relay": True} for i, x in enumerate(names)]


def bench_traffic(sites, seconds):
    names = ["s%02d" % i for i in range(sites)]
    sim = MeshSim(names)
    sim.run_until(sim.converged, 10000)
    sim.run(5000)
    b0 = dict(sim.tx_bytes)
    m0 = dict(sim.tx_msgs)
    sim.run(seconds * 1000)
    per_b = [(sim.tx_bytes[x] - b0[x]) / seconds for x in names]
    per_m = [(sim.tx_msgs[x] - m0[x]) / seconds for x in names]
    avg_b = sum(per_b) / sites
    avg_m = sum(per_m) / sites
    wire = avg_b + avg_m * OVERHEAD
    print("  %2d sites: %6.0f B/s payload, %5.1f msgs/s, ~%6.0f B/s on the wire per node "
          "(%4.0f B/s per peer)" % (sites, avg_b, avg_m, wire, wire / (sites - 1)))
    return avg_b, avg_m, wire


def bench_failover(trials):
    times = []
    for k in range(trials):
        sim = MeshSim(["a", "b", "c"])
        sim.run_until(sim.converged, 5000)
        sim.run(2000 + k * 23)          # cut at varying points of the probe cycle
        sim.cut_link("a", "c")
        took = sim.run_until(lambda: sim.converged() and sim.hop("a", "c") == "b", 5000, step=1)
        times.append(took)
    times.sort()
    print("  failover (cut -> both ends rerouted, %d trials): min %d ms, median %d ms, max %d ms"
          % (trials, times[0], times[len(times) // 2], times[-1]))
    return times


def main():
    quick = "--quick" in sys.argv
    print("route computation (CPython %s, best of runs):" % sys.version.split()[0])
    bench_compute(1000, 8, 5)
    bench_compute(1000, 32, 3)
    if not quick:
        bench_compute(1000, 999, 1)
    print("control traffic, steady state (probes every 250 ms, LSA refresh 30 s):")
    secs = 10 if quick else 60
    bench_traffic(4, secs)
    bench_traffic(16, secs)
    bench_failover(10 if quick else 40)


if __name__ == "__main__":
    main()
