# The uapi backend with real wireguard-go in namespaces: each node's backend runs inside its
# namespace (an Agent process, as the daemon would), and packets really cross the tunnels.
import os
import signal
import socket
import subprocess
import time

import pytest

from lanmesh.dataplane.uapi import UapiBackend
from lanmesh.dataplane.linkstate import LinkState
from lanmesh.errors import BackendError
from lanmesh.keys import genkey, pubkey

from test_hostnet import Agent, dump, netns  # noqa: F401  (netns is a fixture)

PORT = 51820


class Node:
    def __init__(self, netns, i):
        self.i = i
        self.ns = netns.add(f"n{i}")
        self.ifname = f"{netns.prefix}w{i}"     # unique per run: the UAPI socket path is global
        self.priv = genkey()
        self.pub = pubkey(self.priv)
        self.agent = None

    def start(self, netns):
        self.agent = Agent(self.ns, "uapi", self.ifname)
        netns.agents.append(self.agent)
        return self.agent


def _topology(netns, n):
    nodes = [Node(netns, i) for i in range(1, n + 1)]
    if n == 2:
        netns.veth(nodes[0].ns, "eth0", nodes[1].ns, "eth0")
    else:
        hub = netns.add("hub")
        dump(hub, "ip", "link", "add", "br0", "up", "type", "bridge")
        for node in nodes:
            netns.veth(hub, f"p{node.i}", node.ns, "eth0")
            dump(hub, "ip", "link", "set", f"p{node.i}", "master", "br0")
    for node in nodes:
        dump(node.ns, "ip", "addr", "add", f"198.18.0.{node.i}/24", "dev", "eth0")
        dump(node.ns, "ip", "addr", "add", f"fd00:18::{node.i}/64", "dev", "eth0", "nodad")
        node.start(netns)
    return nodes


@pytest.fixture
def mesh(netns):  # noqa: F811
    return lambda n: _topology(netns, n)


def state(node, peers, extra=None, port=PORT):
    """Full mesh state: node 2 reaches node 1 over IPv6, everything else over IPv4."""
    extra = extra or {}
    ps = []
    for p in peers:
        ep = f"[fd00:18::{p.i}]:{PORT}" if (node.i, p.i) == (2, 1) else f"198.18.0.{p.i}:{PORT}"
        allowed = [f"100.64.0.{p.i}/32", f"fd00:6c6d::{p.i}/128"] + extra.get(p, [])
        ps.append({"public_key": p.pub, "endpoint": ep, "keepalive": 25, "allowed_ips": allowed})
    routes = ["100.64.0.0/10", "fd00:6c6d::/64"] + [r for rs in extra.values() for r in rs]
    return {"ifname": node.ifname, "private_key": node.priv, "listen_port": port, "peers": ps,
            "addresses": [f"100.64.0.{node.i}/32", f"fd00:6c6d::{node.i}/128"],
            "routes": routes, "mtu": 1420}


def ping(src, dst, timeout=6.0):
    deadline = time.monotonic() + timeout
    while True:
        r = subprocess.run(["ip", "netns", "exec", src.ns, "ping", "-c1", "-W1", "-q", dst],
                           capture_output=True, text=True)
        if r.returncode == 0:
            return True
        if time.monotonic() > deadline:
            return False


def view(node, other):
    p = node.agent.call("peers")[other.pub]
    return p["last_handshake"], p["rx_bytes"], p["tx_bytes"]


def short(node):
    return f"peer {node.pub[:8]}…"


@pytest.mark.netns
def test_two_nodes_ping_v4_v6_and_reapply_changes_nothing(mesh):
    a, b = mesh(2)
    changes = a.agent.apply(state(a, [b]))
    assert f"{short(b)} added" in changes and "listen port set to 51820" in changes
    b.agent.apply(state(b, [a]))
    assert ping(a, "100.64.0.2"), a.agent.output()
    assert ping(a, "fd00:6c6d::2") and ping(b, "100.64.0.1")
    hs, rx, tx = view(a, b)
    assert hs > time.time() - 30 and rx > 0 and tx > 0
    peer = a.agent.call("peers")[b.pub]
    assert peer["allowed_ips"] == ["100.64.0.2/32", "fd00:6c6d::2/128"]
    assert b.agent.call("peers")[a.pub]["endpoint"] == "[fd00:18::1]:51820"
    # b dialled a over IPv6, so a's endpoint for b roamed there: apply must not undo that.
    assert peer["endpoint"] in ("198.18.0.2:51820", "[fd00:18::2]:51820")

    sets = a.agent.attr("set_requests")
    assert a.agent.apply(state(a, [b])) == []
    assert a.agent.attr("set_requests") == sets              # nothing was even sent
    hs2, rx2, _ = view(a, b)
    assert hs2 == hs and rx2 >= rx                           # same session, counters kept
    assert ping(a, "100.64.0.2", timeout=2) and view(a, b)[0] == hs

    rules = dump(a.ns, "nft", "list", "ruleset")
    clamp = "tcp flags syn / syn,rst tcp option maxseg size set rt mtu"
    assert f'oifname "{a.ifname}" {clamp}' in rules and f'iifname "{a.ifname}" {clamp}' in rules


@pytest.mark.netns
def test_three_nodes_one_peer_changed_others_untouched_then_removed(mesh):
    a, b, c = mesh(3)
    for n, others in ((a, [b, c]), (b, [a, c]), (c, [a, b])):
        n.agent.apply(state(n, others))
    assert ping(a, "100.64.0.2") and ping(a, "100.64.0.3"), a.agent.output()
    before, hs_c = view(a, b), view(a, c)[0]

    changes = a.agent.apply(state(a, [b, c], extra={c: ["198.19.3.0/24"]}))
    assert changes == [f"{short(c)} updated", "route add 198.19.3.0/24"]
    assert "198.19.3.0/24" in a.agent.call("peers")[c.pub]["allowed_ips"]
    assert view(a, c)[0] == hs_c                              # edited in place, not re-created
    hs, rx, tx = view(a, b)
    assert hs == before[0] and rx >= before[1] and tx >= before[2]

    # A changed configured endpoint is set (an unchanged one is left to roam).
    moved = state(a, [b, c], extra={c: ["198.19.3.0/24"]})
    moved["peers"][1]["endpoint"] = f"[fd00:18::3]:{PORT}"
    assert a.agent.apply(moved) == [f"{short(c)} updated"]
    assert a.agent.call("peers")[c.pub]["endpoint"] == f"[fd00:18::3]:{PORT}"
    assert ping(a, "100.64.0.3", timeout=2)

    changes = a.agent.apply(state(a, [b]))
    assert changes == [f"{short(c)} removed", "route del 198.19.3.0/24"]
    assert set(a.agent.call("peers")) == {b.pub}
    assert view(a, b)[0] == before[0]
    assert ping(a, "100.64.0.2", timeout=2)
    assert not ping(a, "100.64.0.3", timeout=0)


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.netns
def test_kill9_is_repaired_by_supervise_and_close_leaves_nothing(mesh):
    a, b = mesh(2)
    assert a.agent.call("supervise") is False                # nothing applied yet
    a.agent.apply(state(a, [b]))
    b.agent.apply(state(b, [a]))
    assert ping(a, "100.64.0.2")
    old = a.agent.attr("pid")
    os.kill(old, signal.SIGKILL)                               # we started it (via the agent)
    deadline = time.monotonic() + 3
    while not a.agent.call("supervise"):
        assert time.monotonic() < deadline, "supervise() did not notice the dead wireguard-go"
        time.sleep(0.02)
    new = a.agent.attr("pid")
    assert new != old and _alive(new)
    assert ping(a, "100.64.0.2") and ping(b, "fd00:6c6d::1"), a.agent.output()
    assert a.agent.call("supervise") is False

    a.agent.call("close")
    assert subprocess.run(["ip", "netns", "exec", a.ns, "ip", "link", "show", a.ifname],
                          capture_output=True).returncode != 0
    assert a.ifname not in dump(a.ns, "ip", "-4", "route") + dump(a.ns, "ip", "-6", "route")
    assert "lanmesh" not in dump(a.ns, "nft", "list", "ruleset")
    assert not _alive(new)
    assert not os.path.exists(f"/var/run/wireguard/{a.ifname}.sock")


@pytest.mark.netns
def test_errno_is_readable_and_the_next_apply_repairs(mesh, netns):  # noqa: F811
    a, b = mesh(2)
    blocker = netns.popen(a.ns, ["python3", "-c", "import socket, time\n"
                                 "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                                 f"s.bind(('0.0.0.0', {PORT})); print('ok', flush=True)\n"
                                 "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert blocker.stdout.readline().strip() == "ok"
    with pytest.raises(BackendError, match=r"errno=-98 \(Address already in use\)"):
        a.agent.apply(state(a, [b]))
    assert a.agent.call("peers") == {}                       # the set stopped at listen_port
    assert a.agent.call("supervise") is False                # alive: retrying is the applier's
    blocker.kill()
    blocker.wait()
    a.agent.apply(state(a, [b]))                             # the next apply repairs it
    assert set(a.agent.call("peers")) == {b.pub}
    b.agent.apply(state(b, [a]))
    assert ping(b, "100.64.0.1")


@pytest.mark.netns
def test_adopts_its_own_namespace_process_only(mesh, netns):  # noqa: F811
    a, b = mesh(2)
    a.agent.apply(state(a, [b]))
    pid = a.agent.attr("pid")
    # A restarted daemon finds wireguard-go still running and takes it over, changing nothing.
    again = Agent(a.ns, "uapi", a.ifname)
    netns.agents.append(again)
    again.apply(state(a, [b]))
    assert again.attr("pid") == pid and again.attr("set_requests") == 0
    # The socket path is shared by all namespaces: another namespace must not grab it.
    stranger = Agent(b.ns, "uapi", a.ifname)
    netns.agents.append(stranger)
    with pytest.raises(BackendError, match="in another network namespace"):
        stranger.apply(state(a, [b]))
    assert _alive(pid)


# --- no root needed ----------------------------------------------------------------------------

def test_resolve_endpoints(monkeypatch):
    import logging
    from lanmesh.dataplane.endpoint import resolve

    def res(ep):
        return resolve(ep, logging.getLogger("test"), "lmtest0")
    assert res("[fd00::0:1]:51820") == ["[fd00::1]:51820"]
    assert "127.0.0.1:51820" in res("localhost:51820")
    with pytest.raises(BackendError, match="expected host:port"):
        res("fd00::1")

    def fail(*a, **kw):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.setattr(socket, "getaddrinfo", fail)
    assert res("gone.example.net:51820") == []       # keep the current endpoint


def test_bad_state_fails_before_starting_anything():
    be = UapiBackend("lmtest0")
    good = dict(ifname="lmtest0", private_key=genkey(), listen_port=PORT)
    with pytest.raises(BackendError, match="this backend drives 'lmtest0'"):
        be.apply(LinkState(**dict(good, ifname="other")))
    with pytest.raises(BackendError, match="not a WireGuard key"):
        be.apply(LinkState(**dict(good, private_key="nope")))
    assert be.pid is None
