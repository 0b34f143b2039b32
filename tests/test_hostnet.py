# HostNet (addresses, routes, forwarding sysctls, nft table) against a real kernel, in
# namespaces. The object under test runs inside the namespace, in an agent process, the way
# the daemon does (`ip netns exec NS …`); Agent is reused by test_dataplane_uapi.
import json
import os
import subprocess
import sys
import tempfile
import time

import pytest

from lanmesh.dataplane import nft
from lanmesh.errors import BackendError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

AGENT = r"""
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
from lanmesh.dataplane.linkstate import LinkState, PeerState
kind, ifname = sys.argv[1], sys.argv[2]
if kind == "uapi":
    from lanmesh.dataplane.uapi import UapiBackend as Impl
else:
    from lanmesh.dataplane.hostnet import HostNet as Impl
obj = Impl(ifname, log=logging.getLogger(kind))

def state(d):
    d = dict(d, peers=[PeerState(**p) for p in d.get("peers", ())])
    return LinkState(**d)

def call(req):
    op = req["op"]
    if op == "apply":
        return obj.apply(state(req["state"]))
    if op == "peers":
        return {k: v.as_dict() for k, v in obj.peers().items()}
    if op == "supervise":
        return obj.supervise()
    if op == "close":
        return obj.close()
    if op == "apply_in_loop":           # as if called from the daemon's event loop thread
        from lanmesh import aio
        async def run():
            return obj.apply(state(req["state"]))
        return aio.run(run())
    return getattr(obj, req["name"])

closed = False
for line in sys.stdin:
    req = json.loads(line)
    try:
        out = {"ok": True, "result": call(req)}
        closed = closed or req["op"] == "close"
    except Exception as e:
        out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    print(json.dumps(out), flush=True)
if not closed:
    obj.close()         # the test process went away: still clean up
"""


class Agent:
    """A UapiBackend or HostNet living in namespace `ns`, driven over JSON lines."""

    def __init__(self, ns, kind, ifname):
        self.log = tempfile.NamedTemporaryFile("w+", prefix="lmt-agent-", suffix=".log")
        env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "firmware"))
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", AGENT, kind, ifname],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        self.pids = set()       # every wireguard-go it reported, for a last-resort cleanup

    def call(self, op, **kw):
        self.proc.stdin.write(json.dumps(dict(kw, op=op)) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"agent died:\n{self.output()}")
        reply = json.loads(line)
        if not reply["ok"]:
            raise BackendError(reply["error"])
        return reply["result"]

    def apply(self, state):
        return self.call("apply", state=state)

    def attr(self, name):
        value = self.call("attr", name=name)
        if name == "pid" and value:
            self.pids.add(value)
        return value

    def output(self):
        self.log.seek(0)
        return self.log.read()[-4000:]

    def close(self):
        if self.proc.poll() is None:
            try:
                self.call("close")
            except Exception:
                pass
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def dump(ns, *argv):
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                          check=True).stdout


def sysctl(ns, path):
    return dump(ns, "cat", f"/proc/sys/{path}").strip()


@pytest.fixture
def netns():
    from lanmesh_lab.netns import Namespaces
    spaces = Namespaces()
    agents = []
    spaces.agents = agents
    try:
        yield spaces
    finally:
        for a in agents:
            a.close()
        spaces.teardown()


# --- nft rendering (no root needed) -----------------------------------------------------------

def test_render_has_mss_clamp_both_ways_and_forward_accepts():
    text = nft.render("lm-0.x")
    assert text.startswith("table inet lanmesh_lm_0_x {")
    assert 'oifname "lm-0.x" tcp flags syn / syn,rst tcp option maxseg size set rt mtu' in text
    assert 'iifname "lm-0.x" tcp flags syn / syn,rst tcp option maxseg size set rt mtu' in text
    assert 'iifname "lm-0.x" accept' in text and 'oifname "lm-0.x" accept' in text
    assert "maxseg" not in nft.render("wg0", mss_clamp=False)
    assert "accept\n" not in nft.render("wg0", forwarding=False)
    assert nft.render("wg0", mss_clamp=False, forwarding=False) == ""
    # the mesh port is dropped on every interface but the tunnel, in a base chain of its own
    text = nft.render("wg0", mss_clamp=False, forwarding=False, mesh_port=51821)
    assert 'udp dport 51821 iifname != "wg0" counter drop' in text and "hook input" in text
    with pytest.raises(BackendError):
        nft.render("wg0", mesh_port=70000)


def test_render_refuses_names_that_would_break_the_rule():
    for bad in ('wg"0', "wg 0", "", "x" * 16):
        with pytest.raises(BackendError):
            nft.render(bad)


# --- the real thing ----------------------------------------------------------------------------

def _state(ifname, **kw):
    base = dict(ifname=ifname, private_key="", listen_port=0, mtu=1380,
                addresses=["100.64.0.1/32", "fd00:6c6d::1/128"],
                routes=["100.64.0.0/10", "fd00:6c6d::/64", "198.19.2.0/24"])
    base.update(kw)
    return base


def _setup(netns):
    ns = netns.add("h")
    ifname = f"{netns.prefix}d"
    # Link-local addresses and DAD arriving late on a busy machine are kernel events, not
    # ours: keep them out of the "second apply changes nothing" comparison.
    dump(ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0",
         "net.ipv6.conf.default.addr_gen_mode=1")
    # No dummy module on the test hosts: one end of a veth pair is the "tunnel" device.
    dump(ns, "ip", "link", "add", ifname, "type", "veth", "peer", "name", f"{ifname}p")
    dump(ns, "ip", "link", "set", f"{ifname}p", "up")
    # Somebody else's address and route on the same device: must survive everything.
    dump(ns, "ip", "addr", "add", "198.18.5.1/24", "dev", ifname)
    dump(ns, "ip", "link", "set", ifname, "up")
    dump(ns, "ip", "route", "add", "198.19.50.0/24", "dev", ifname, "proto", "static")
    dump(ns, "sysctl", "-qw", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0")
    agent = Agent(ns, "hostnet", ifname)
    netns.agents.append(agent)
    return ns, ifname, agent


def _routes(ns, ifname):
    out = set()
    for fam in ("-4", "-6"):
        for r in json.loads(dump(ns, "ip", "-j", fam, "route", "show", "dev", ifname)):
            if r.get("protocol") != "kernel":
                out.add((r["dst"], r.get("protocol")))
    return out


def _addrs(ns, ifname):
    info = json.loads(dump(ns, "ip", "-j", "addr", "show", "dev", ifname))[0]
    return {f"{a['local']}/{a['prefixlen']}" for a in info["addr_info"]
            if not a["local"].startswith("fe80")}


def _snapshot(ns):
    return (dump(ns, "ip", "addr"), dump(ns, "ip", "-4", "route"), dump(ns, "ip", "-6", "route"),
            dump(ns, "nft", "list", "ruleset"), sysctl(ns, "net/ipv4/ip_forward"))


@pytest.mark.netns
def test_apply_reconciles_and_second_apply_changes_nothing(netns):
    ns, ifname, agent = _setup(netns)
    changes = agent.apply(_state(ifname))
    assert "route add 198.19.2.0/24" in changes and "address add 100.64.0.1/32" in changes
    assert _addrs(ns, ifname) == {"198.18.5.1/24", "100.64.0.1/32", "fd00:6c6d::1/128"}
    routes = _routes(ns, ifname)
    for dst in ("100.64.0.0/10", "fd00:6c6d::/64", "198.19.2.0/24"):
        assert (dst, "108") in routes or (dst, "lanmesh") in routes, routes
    assert ("198.19.50.0/24", "static") in routes
    assert '"mtu":1380' in dump(ns, "ip", "-j", "link", "show", ifname).replace(" ", "")
    assert sysctl(ns, "net/ipv4/ip_forward") == "1"
    assert sysctl(ns, "net/ipv6/conf/all/forwarding") == "1"
    rules = dump(ns, "nft", "list", "table", "inet", f"lanmesh_{ifname}")
    assert "tcp option maxseg size set rt mtu" in rules and f'iifname "{ifname}" accept' in rules

    # Second apply: no change reported, none seen by netlink or nftables listeners.
    before = _snapshot(ns)
    mon = [subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
           for argv in (["ip", "monitor", "link", "address", "route"], ["nft", "monitor"])]
    try:
        time.sleep(0.3)                     # let the monitors subscribe
        assert agent.apply(_state(ifname)) == []
        dump(ns, "ip", "route", "add", "198.19.99.0/24", "dev", ifname)   # proves they listen
        time.sleep(0.3)
    finally:
        for m in mon:
            m.terminate()
    events = mon[0].communicate()[0].strip().splitlines()
    assert len(events) == 1 and "198.19.99.0/24" in events[0], events
    assert mon[1].communicate()[0].strip() == ""
    dump(ns, "ip", "route", "del", "198.19.99.0/24", "dev", ifname)
    assert _snapshot(ns) == before


@pytest.mark.netns
def test_stale_removed_foreign_kept_and_close_restores(netns):
    ns, ifname, agent = _setup(netns)
    agent.apply(_state(ifname))
    # An address somebody else put there, later also desired and then undesired: not ours.
    dump(ns, "ip", "addr", "add", "100.64.9.9/32", "dev", ifname)
    agent.apply(_state(ifname, addresses=["100.64.0.1/32", "100.64.9.9/32"],
                       routes=["100.64.0.0/10", "198.19.3.0/24"], forwarding=False))
    assert _addrs(ns, ifname) == {"198.18.5.1/24", "100.64.0.1/32", "100.64.9.9/32"}
    dsts = {d for d, _ in _routes(ns, ifname)}
    assert {"100.64.0.0/10", "198.19.3.0/24", "198.19.50.0/24"} <= dsts
    assert not dsts & {"198.19.2.0/24", "fd00:6c6d::/64"}
    assert sysctl(ns, "net/ipv4/ip_forward") == "0"        # restored when forwarding turned off
    rules = dump(ns, "nft", "list", "table", "inet", f"lanmesh_{ifname}")
    assert "maxseg" in rules and "accept\n" not in rules

    agent.apply(_state(ifname, addresses=["100.64.0.1/32"], routes=["100.64.0.0/10"]))
    assert "100.64.9.9/32" in _addrs(ns, ifname)          # we never added it: never removed
    agent.call("close")
    assert _addrs(ns, ifname) == {"198.18.5.1/24", "100.64.9.9/32"}
    assert {d for d, _ in _routes(ns, ifname)} == {"198.19.50.0/24"}
    assert "lanmesh" not in dump(ns, "nft", "list", "ruleset")
    assert sysctl(ns, "net/ipv4/ip_forward") == "0"
    assert sysctl(ns, "net/ipv6/conf/all/forwarding") == "0"


@pytest.mark.netns
def test_partial_failure_is_reported_and_repaired_by_next_apply(netns):
    ns, ifname, agent = _setup(netns)
    other = f"{netns.prefix}e"
    dump(ns, "ip", "link", "add", other, "up", "type", "bridge")
    dump(ns, "ip", "route", "add", "198.19.7.0/24", "dev", other)   # conflicts with ours
    with pytest.raises(BackendError, match=r"route 198.19.7.0/24: another route for it exists"):
        agent.apply(_state(ifname, routes=["100.64.0.0/10", "198.19.7.0/24"]))
    # Everything else was still done.
    assert "100.64.0.0/10" in {d for d, _ in _routes(ns, ifname)}
    assert "100.64.0.1/32" in _addrs(ns, ifname)
    dump(ns, "ip", "route", "del", "198.19.7.0/24", "dev", other)
    assert agent.apply(_state(ifname, routes=["100.64.0.0/10", "198.19.7.0/24"])) == \
        ["route add 198.19.7.0/24"]


@pytest.mark.netns
def test_bad_input_changes_nothing(netns):
    ns, ifname, agent = _setup(netns)
    before = _snapshot(ns)
    with pytest.raises(BackendError, match="'100.64.0.300/32' is not an IP address"):
        agent.apply(_state(ifname, addresses=["100.64.0.300/32"]))
    assert _snapshot(ns) == before


@pytest.mark.netns
def test_apply_works_from_inside_an_event_loop(netns):
    # netlink calls block briefly; they must also work on a thread running a loop.
    ns, ifname, agent = _setup(netns)
    assert "address add 100.64.0.1/32" in agent.call("apply_in_loop", state=_state(ifname))
    assert "100.64.0.1/32" in _addrs(ns, ifname)
