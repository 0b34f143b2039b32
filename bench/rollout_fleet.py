# A staged rollout to N simulated routers (issue 15): N real FleetAgents (our MQTT client over
# TLS, passwords, the generated ACL, the real Updater: manifest check, chunked fetch with
# per-chunk hashes, the way-back package, the trial and the real guard script) in one
# process against a real mosquitto on loopback, driven by the real rollout code
# (operator.rollout_cli.drive, as `lanmesh fleet rollout status --watch` runs it). What is
# simulated: the package manager (`true`) and the restart (the guard's restart command
# leaves a mark; the bench then replaces that router's agent by one "running" the new
# version, which confirms once connected). Measures the time per wave (from its assignment
# to its last router confirmed) and the broker's bytes per router (from $SYS).
import argparse
import logging
import os
import shutil
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "firmware"), os.path.join(HERE, "..", "tests"),
                os.path.join(HERE, "..", "packaging")]

from lanmesh import aio  # noqa: E402
from lanmesh.fleet import agent as agent_mod  # noqa: E402
from lanmesh.operator import controller, releases, rollout, rollout_cli  # noqa: E402
from fleet_propagation import RouterStandIn, Timeline, simulated_fleet  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--waves", nargs="+", default=["canary=n0,n1", "10%", "50%", "100%"])
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import build_ipk
    tmp = tempfile.mkdtemp(prefix="lanmesh-bench-")
    broker, agents, loop_thread = None, {}, None
    try:
        v1 = build_ipk.build(os.path.join(tmp, "v1"))
        v2 = build_ipk.build(os.path.join(tmp, "v2"), version="0.2.0")

        def update_settings(n, d):      # the package manager and the restart are simulated
            os.makedirs(os.path.join(d, "root"))
            return {"package_format": "ipk", "board": "lab", "package_manager": "true",
                    "package_root": os.path.join(d, "root"),
                    "restart_command": f"touch {d}/restarted", "confirm_window": 600}
        fd, broker, opts, cfgs = simulated_fleet(tmp, a.nodes, fleet_extra=update_settings)
        names = list(cfgs)
        pending = []                    # agents to start on the loop

        def make(n, running=None):
            g = agent_mod.FleetAgent(cfgs[n], RouterStandIn(n), logging.getLogger(n))
            if running:                 # this router "restarted" into the new version
                g.updater.running = running
                g.updater._look_at_trial()
            agents[n] = g
            return g

        async def supervisor():
            tasks = [aio.create_task(make(n).run()) for n in names]
            while True:
                while pending:
                    tasks.append(aio.create_task(pending.pop().run()))
                await aio.sleep(0.05)
        loop_thread = threading.Thread(target=lambda: aio.run(supervisor()), daemon=True)
        loop_thread.start()
        t0 = time.monotonic()
        while len(agents) < a.nodes or not all(g.core.connected for g in agents.values()):
            if time.monotonic() - t0 > 120:
                raise SystemExit("nodes did not all connect")
            time.sleep(0.2)
        print(f"{a.nodes} agents connected over TLS in {time.monotonic() - t0:.1f}s; package "
              f"{os.path.getsize(v2)} B ({os.path.basename(v2)})")
        tl = Timeline(opts).__enter__()
        tl.client.subscribe([("$SYS/broker/bytes/+", 0)])
        with controller.BrokerSession(opts) as s:
            releases.add_release(fd, [v1], s)
            releases.add_release(fd, [v2], s)
        time.sleep(2.5)
        sys_bytes = lambda: sum(int(tl.sys.get(f"$SYS/broker/bytes/{k}", b"0")) for k in ("received", "sent"))  # noqa: E731
        before = sys_bytes()
        rollouts = rollout.Rollouts(fd.registry)
        waves = rollout.plan_waves(a.waves, names, "0.2.0")
        t_start = time.monotonic()
        with controller.BrokerSession(opts) as session:
            ro = rollouts.start("0.2.0", waves, 1)
            releases.assign(fd, session, "0.2.0", waves[0][1])
            wave_at, wave_done = {0: time.monotonic()}, {}
            while ro["state"] == rollout.RUNNING:
                for n in names:         # the simulated restarts
                    mark = os.path.join(tmp, n, "restarted")
                    if os.path.exists(mark):
                        os.unlink(mark)
                        agents[n].close()
                        pending.append(make(n, running="0.2.0"))
                w = ro["wave"]
                ro, rows, did = rollout_cli.drive(fd, session, rollouts, ro, quiet=0.2)
                if ro["wave"] != w or ro["state"] != rollout.RUNNING:
                    wave_done[w] = time.monotonic()
                if ro["wave"] != w:
                    wave_at[ro["wave"]] = time.monotonic()
                if time.monotonic() - t_start > 900:
                    raise SystemExit(f"rollout stuck: {rollout_cli.format_view(rollout_cli.view(ro, rows))}")
                time.sleep(0.2)
        total = time.monotonic() - t_start
        time.sleep(2.5)                 # $SYS is published every second or so
        moved = sys_bytes() - before
        assert ro["state"] == rollout.DONE, ro
        for i, (label, nodes) in enumerate(waves):
            print(f"wave {label:<8} {len(nodes):>4} routers: {wave_done[i] - wave_at[i]:6.1f}s "
                  f"from assignment to all confirmed")
        got = [agents[n].updater for n in names]
        assert all(u.state == "confirmed" and u.running == "0.2.0" for u in got)
        print(f"SUMMARY nodes={a.nodes} waves={len(waves)}: rollout {total:.1f}s start to done; "
              f"broker bytes in+out {moved / a.nodes / 1024:.0f} KiB per router (package "
              f"{os.path.getsize(v2) / 1024:.0f} KiB and the way back {os.path.getsize(v1) / 1024:.0f} KiB "
              f"out to each router, both published in once; manifests, reports)")
        tl.close()
    finally:
        for g in agents.values():
            g.close()
        if broker is not None:
            broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
