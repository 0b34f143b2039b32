# Fleet document propagation: N simulated nodes = N real FleetAgents (our MQTT client,
# TLS, passwords, ACL, real sync cores, signature checks) with a stand-in router, all in
# one process on one event loop, against a real mosquitto on loopback. Measures, per
# pushed version, the time from publish until every node reports it pending (received,
# verified, applied) and applied (commit confirmed), p50/p99 over nodes, and the broker's
# PUBLISH messages per push per node (from $SYS).
#
# On a 2-core machine the N nodes' CPU work is serialised (each verifies and validates the
# whole document: ~80 ms for 200 nodes); --shared-verify lets the simulated nodes share one
# verification per payload, which shows the protocol's own latency, as on N real routers.
import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "firmware"), os.path.join(HERE, "..", "tests")]

from lanmesh import aio, keys  # noqa: E402
from lanmesh.config import parse_config  # noqa: E402
from lanmesh.fleet import agent as agent_mod, signing, topics  # noqa: E402
from lanmesh.operator import brokerconf, controller  # noqa: E402
from mqtt_broker import Broker  # noqa: E402

PREFIX = "lanmesh/acme/"


class RouterStandIn:
    """What a FleetAgent needs of its router (document, apply_document, links_up, status).
    Not whole in-process daemons (lanmesh_lab.inprocess, as tests/test_fleet_mqtt.py uses):
    200 of them would each probe 199 peers, and this bench measures the broker path."""

    def __init__(self, name):
        self.name, self.document = name, None

    async def apply_document(self, doc):
        self.document = doc

    def links_up(self):
        return (1, 1)

    def status(self):
        return {"links": [], "routes": []}

    def retire_previous_key(self):
        pass


class Timeline(controller.BrokerSession):
    """Controller-side subscriber: first time each node reports version v pending/applied."""

    def __init__(self, opts):
        super().__init__(opts, timeout=30)
        self.first = {}          # (node, kind, version) → monotonic time
        self.sys = {}
        self.reported_msgs = 0
        self.all_msgs = 0

    def _on_message(self, client, userdata, msg):
        now = time.monotonic()
        self.all_msgs += 1
        if msg.topic.startswith("$SYS/"):
            self.sys[msg.topic] = msg.payload
            return
        self.reported_msgs += 1
        r = json.loads(msg.payload)
        for kind in ("pending_version", "applied_version"):
            v = r.get(kind)
            if v is not None:
                self.first.setdefault((r["node"], kind, v), now)
        self.changed.set()

    def count(self, kind, v):
        return sum(1 for (n, k, ver) in self.first if k == kind and ver == v)

    def packets(self):
        """Broker's MQTT packets in/out (all types), less what this watcher itself causes."""
        g = lambda k: int(self.sys.get("$SYS/broker/messages/" + k, b"0"))  # noqa: E731
        return g("received") - self.reported_msgs, g("sent") - self.all_msgs


def simulated_fleet(tmp, nodes, settings=None, fleet_extra=None):
    """A fleet of `nodes` registered routers n0…, a real mosquitto on loopback (TLS, a password
    per router, the generated ACL) and each router's parsed node config, in <tmp>/<name>/.
    fleet_extra(name, dir) → more keys for that router's `fleet` section. Starts the broker:
    the caller stops it. → (FleetDir, Broker, controller broker options, {name: config})."""
    fd = controller.FleetDir.init(os.path.join(tmp, "acme"), "acme", overlay6="fd00:6c6d::/64")
    if settings:
        fd.registry.set_settings(settings)
    names = [f"n{i}" for i in range(nodes)]
    for i, n in enumerate(names):
        fd.registry.add_node(n, keys.pubkey(keys.genkey()), [f"198.19.{i % 256}.{0 if i < 256 else 128}/25"],
                             [f"198.18.{i // 250}.{i % 250 + 1}:51820"])
    pws = {n: brokerconf.new_password() for n in names}
    broker = Broker(os.path.join(tmp, "broker"), dict(pws, controller=open(fd.password_path).read().strip()),
                    prefix=PREFIX, extra_conf="max_queued_messages 5000\n")
    broker.start()
    fd.registry.set("broker", broker.url)
    fd.registry.set("controller_broker", broker.controller_url)
    fd.registry.set("ca_file", broker.ca_file)
    cfgs = {}
    for n in names:
        d = os.path.join(tmp, n)
        os.makedirs(d)
        with open(os.path.join(d, "pw"), "w") as f:
            f.write(pws[n])
        fleet = {"name": "acme", "public_key": fd.public_key(), "broker": broker.url,
                 "ca_file": broker.ca_file, "password_file": "pw"}
        fleet.update(fleet_extra(n, d) if fleet_extra else {})
        cfgs[n] = parse_config({"name": n, "state_dir": "state", "fleet": fleet},
                               os.path.join(d, "node.json"))
    return fd, broker, fd.broker_options(), cfgs


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--pushes", type=int, default=3)
    ap.add_argument("--settle-ms", type=int, default=2000)
    ap.add_argument("--shared-verify", action="store_true")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if a.shared_verify:
        import functools
        agent_mod.signing.verify_document = functools.lru_cache(maxsize=8)(signing.verify_document)
    tmp = tempfile.mkdtemp(prefix="lanmesh-bench-")
    broker, agents, loop_thread = None, [], None
    try:
        fd, broker, opts, cfgs = simulated_fleet(tmp, a.nodes, {"confirm_window": 30})
        names = list(cfgs)
        for n in names:
            agents.append(agent_mod.FleetAgent(cfgs[n], RouterStandIn(n), logging.getLogger(n),
                                               settle_ms=a.settle_ms))
        tl = Timeline(opts).__enter__()
        tl.client.subscribe([(topics.all_reported(PREFIX), 1), ("$SYS/broker/messages/+", 0)])
        t0 = time.monotonic()
        loop_thread = threading.Thread(target=lambda: aio.run(aio.gather(*[g.run() for g in agents])),
                                       daemon=True)
        loop_thread.start()
        while sum(1 for g in agents if g.core.connected) < a.nodes:
            if time.monotonic() - t0 > 120:
                raise SystemExit("nodes did not all connect")
            time.sleep(0.2)
        print(f"{a.nodes} agents connected over TLS in {time.monotonic() - t0:.1f}s "
              f"(one process, one asyncio loop, {threading.active_count()} threads)")
        results = []
        for push in range(a.pushes + 1):       # push 0 is the warm-up (first document)
            doc, env, _, _ = controller.prepare(fd)
            v = doc["version"]
            time.sleep(1.5)
            before = tl.packets()
            node_before = sum(g.link.received + g.link.published for g in agents)
            t = time.monotonic()
            controller.publish(fd, env, v, opts)
            while tl.count("applied_version", v) < a.nodes:
                if time.monotonic() - t > 300:
                    raise SystemExit(f"v{v}: only {tl.count('applied_version', v)} confirmed")
                tl.changed.clear()
                tl.changed.wait(0.2)
            time.sleep(2.5)                     # let $SYS (1 s interval) catch up
            after = tl.packets()
            node_msgs = sum(g.link.received + g.link.published for g in agents) - node_before
            if os.environ.get("BENCH_DEBUG"):
                print(before, after, {k: v for k, v in tl.sys.items()})
            pend = [tl.first[(n, "pending_version", v)] - t for n in names]
            appl = [tl.first[(n, "applied_version", v)] - t for n in names]
            rx, tx = after[0] - before[0], after[1] - before[1]
            results.append((v, pend, appl, node_msgs, rx + tx))
            tag = " (warm-up)" if push == 0 else ""
            print(f"v{v}{tag}: doc {len(env)} B; pending p50 {pct(pend, 50):.2f}s p99 {pct(pend, 99):.2f}s "
                  f"max {max(pend):.2f}s; confirmed p50 {pct(appl, 50):.2f}s p99 {pct(appl, 99):.2f}s "
                  f"max {max(appl):.2f}s; node PUBLISH in+out {node_msgs / a.nodes:.2f}/node; "
                  f"broker packets in+out {(rx + tx) / a.nodes:.2f}/node")
        steady = results[1:]
        if steady:
            p = [x for r in steady for x in r[1]]
            c = [x for r in steady for x in r[2]]
            print(f"SUMMARY nodes={a.nodes} pushes={len(steady)} shared_verify={a.shared_verify} "
                  f"settle_ms={a.settle_ms}: pending p50={pct(p, 50):.2f}s p99={pct(p, 99):.2f}s; "
                  f"confirmed p50={pct(c, 50):.2f}s p99={pct(c, 99):.2f}s; "
                  f"per push per node: {statistics.mean(r[3] for r in steady) / a.nodes:.2f} PUBLISH messages "
                  f"(in+out at the node), {statistics.mean(r[4] for r in steady) / a.nodes:.2f} "
                  f"MQTT packets at the broker (in+out, all types, watcher excluded)")
        tl.close()
    finally:
        for g in agents:
            g.close()
        if loop_thread is not None:
            loop_thread.join(10)
        if broker is not None:
            broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
