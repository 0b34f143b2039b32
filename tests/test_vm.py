# The kernel backend on a real kernel WireGuard, inside a qemu VM (lanmesh_lab.vm), plus
# the harness itself (exit status, env, output, writable share) and the backend's pure
# reconcile planner. One boot runs every kernel check (tests/vm_guest_kernel.py): imports
# over 9p under emulation are slow, so one process does it all and reports each check.
import json
import os
import subprocess
import sys
import uuid

import pytest

from lanmesh.dataplane.kernel import parse_info, plan

GUEST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vm_guest_kernel.py")
KERNEL_CHECKS = [
    "kernel_available", "ping_v4", "ping_v6", "wg_show_matches", "peers_status",
    "reapply_no_change", "reapply_session_kept", "change_other_peer_only", "untouched_peer_kept",
    "ghost_allowed_ips", "live_peer_updated_in_place", "ping_after_update", "no_new_handshake",
    "remove_peer", "supervise_recreates", "ping_after_recreate", "many_peers_read_back",
    "many_peers_split_dump", "many_peers_reapply_no_change", "close_leaves_nothing_a", "close_leaves_nothing_b",
]


def _skip_reason():
    if os.geteuid() != 0:
        return "needs root (the VM image cache and qemu's 9p export of /)"
    from lanmesh_lab.vm import vm_unavailable_reason
    return vm_unavailable_reason()


@pytest.fixture(scope="session")
def vm_available():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def kernel_run(vm_available):
    """Boot once, run the whole guest script; {"checks": {name: check}, "timings", "result"}."""
    from lanmesh_lab.vm import run_in_vm
    res = run_in_vm([sys.executable, GUEST], timeout=600, cwd=os.path.dirname(GUEST),
                    env={"PYTHONPATH": os.path.join(os.path.dirname(os.path.dirname(GUEST)),
                                                    "firmware")},      # this checkout's code
                    stream=sys.stdout if os.environ.get("LANMESH_VM_VERBOSE") else None)
    print(f"\nVM kernel test: {res}")
    report = None
    for line in res.output.splitlines():
        if line.startswith("GUEST-RESULT "):
            report = json.loads(line[len("GUEST-RESULT "):])
    if report is None:
        pytest.fail(f"guest did not report (rc={res.returncode}, timed out={res.timed_out}); "
                    f"console tail:\n{res.console[-3000:]}")
    print(f"VM timings: boot {res.boot_seconds:.1f} s, wall {res.wall_seconds:.1f} s, "
          f"guest {report['timings']}")
    return {"checks": {c["name"]: c for c in report["checks"]}, "timings": report["timings"],
            "result": res}


@pytest.mark.vm
@pytest.mark.parametrize("name", KERNEL_CHECKS)
def test_kernel_backend_in_vm(kernel_run, name):
    c = kernel_run["checks"].get(name)
    assert c is not None, f"guest never reached check {name!r} (see the guest output)"
    assert c["ok"], c["detail"]


@pytest.mark.vm
def test_kernel_guest_exit_status(kernel_run):
    failed = [n for n, c in kernel_run["checks"].items() if not c["ok"]]
    assert kernel_run["result"].returncode == (1 if failed else 0), failed


@pytest.mark.vm
def test_run_in_vm_exit_env_output_and_writable_share(vm_available, tmp_path):
    from lanmesh_lab.vm import run_in_vm
    share = tmp_path / "share"
    share.mkdir()
    script = ('echo "hello $GREETING from $(uname -r)"\n'
              'touch /probe-ro 2>/dev/null && echo "root is writable"\n'
              f'echo written > {share}/out.txt\n'
              'exit 7\n')
    res = run_in_vm(script, env={"GREETING": "a b'c"}, rw=[str(share)], timeout=300)
    print(f"\nVM harness boot: {res}")
    assert res.returncode == 7, res.console[-2000:]
    assert "hello a b'c from " in res.output
    assert "root is writable" not in res.output
    assert (share / "out.txt").read_text() == "written\n"
    assert res.boot_seconds is not None and res.boot_seconds < res.wall_seconds


# --- host side: what the kernel backend does where there is no WireGuard -------------------

@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace")
def test_no_wireguard_gives_clear_error_in_fresh_netns():
    ns = f"lmkv{uuid.uuid4().hex[:8]}"
    code = ("from lanmesh.dataplane.kernel import KernelBackend, kernel_available\n"
            "from lanmesh.dataplane.linkstate import LinkState\n"
            "from lanmesh.errors import BackendError\n"
            "from lanmesh.keys import genkey\n"
            "import subprocess\n"
            "if kernel_available():\n"
            "    print('HAS-WIREGUARD'); raise SystemExit(0)\n"
            "b = KernelBackend('lmkv0')\n"
            "try:\n"
            "    b.apply(LinkState('lmkv0', genkey(), 51820))\n"
            "except BackendError as e:\n"
            "    print('ERROR', e)\n"
            "print('LINKS', subprocess.run(['ip', '-o', 'link'], capture_output=True, text=True).stdout)\n"
            "print('PEERS', b.peers())\n")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code],
                             capture_output=True, text=True, timeout=60)
    finally:
        subprocess.run(["ip", "netns", "del", ns])
    assert out.returncode == 0, out.stderr
    if "HAS-WIREGUARD" in out.stdout:
        pytest.skip("this kernel has WireGuard: the VM test covers the backend")
    assert "ERROR lmkv0: the kernel has no WireGuard" in out.stdout
    assert "use backend 'uapi'" in out.stdout
    assert "lmwgprobe" not in out.stdout and "lmkv0" not in out.stdout.split("LINKS")[1]
    assert "PEERS {}" in out.stdout


def test_bad_input_is_refused_before_touching_the_kernel():
    from lanmesh.dataplane.kernel import KernelBackend
    from lanmesh.dataplane.linkstate import LinkState, PeerState
    from lanmesh.errors import BackendError
    from lanmesh.keys import genkey, pubkey
    k1, k2 = pubkey(genkey()), pubkey(genkey())
    dup = LinkState("lmkv0", genkey(), 51820, peers=[PeerState(k1, ["100.64.0.2/32"]),
                                                      PeerState(k2, ["100.64.0.2/32"])])
    be = KernelBackend("lmkv0")
    with pytest.raises(BackendError, match="100.64.0.2/32 is given to two peers"):
        be.apply(dup)
    bad = LinkState("lmkv0", genkey(), 51820, peers=[PeerState(k1, ["100.64.0.300/32"])])
    with pytest.raises(BackendError, match="'100.64.0.300/32' is not an IP prefix"):
        be.apply(bad)
    ep = LinkState("lmkv0", genkey(), 51820, peers=[PeerState(k1, [], endpoint="fd00::1:51820")])
    with pytest.raises(BackendError, match="expected host:port or \\[IPv6\\]:port"):
        be.apply(ep)
    with pytest.raises(BackendError, match="not a valid interface name"):
        KernelBackend("lanmesh-too-long0").apply(LinkState("lanmesh-too-long0", genkey(), 1))
    assert be.set_requests == 0 and be._state is None


# --- the reconcile planner (pure) ----------------------------------------------------------

K1 = "A" * 43 + "="
K2 = "B" * 43 + "="
K3 = "C" * 43 + "="
PRIV = "D" * 43 + "="


def _peer(ips=(), endpoint=None, keepalive=0, **kw):
    return dict({"endpoint": endpoint, "allowed_ips": tuple(sorted(ips)), "keepalive": keepalive,
                 "last_handshake": 0.0, "rx_bytes": 0, "tx_bytes": 0}, **kw)


def _want(ips=(), endpoint=None, keepalive=0):
    return {"endpoint": endpoint, "allowed_ips": tuple(sorted(ips)), "keepalive": keepalive}


def _dev(peers, private=PRIV, port=51820):
    return {"private_key": private, "listen_port": port, "peers": peers}


def test_plan_equal_state_is_empty():
    cur = _dev({K1: _peer(["100.64.0.2/32"], "198.18.0.2:51820", 25, rx_bytes=99)})
    want = _dev({K1: _want(["100.64.0.2/32"], None, 25)})
    assert plan(cur, want) == []


def test_plan_new_device_sets_key_port_and_adds_peers():
    steps = plan(_dev({}, private=None, port=0),
                 _dev({K1: _want(["100.64.0.2/32"], "[fd00::2]:51820")}))
    assert steps[0] == ({"private_key": PRIV, "listen_port": 51820},
                        "private key set and listen port set")
    peer = steps[1][0]["peer"]
    assert peer == {"public_key": K1, "endpoint_addr": "fd00::2", "endpoint_port": 51820,
                    "persistent_keepalive": 0, "replace_allowed_ips": True,
                    "allowed_ips": ["100.64.0.2/32"]}      # new: no update_only
    assert len(steps) == 2


def test_plan_touches_only_changed_peers_in_place():
    cur = _dev({K1: _peer(["100.64.0.2/32"], "198.18.0.2:51820"),
                K2: _peer(["100.64.0.3/32"], "198.18.0.3:51820"),
                K3: _peer(["100.64.0.4/32"])})
    want = _dev({K1: _want(["100.64.0.2/32"], None),
                 K2: _want(["100.64.0.3/32", "198.19.3.0/24"], None)})
    steps = plan(cur, want)
    assert steps == [
        ({"peer": {"public_key": K3, "remove": True}}, f"peer {K3[:8]}… removed"),
        ({"peer": {"public_key": K2, "update_only": True, "replace_allowed_ips": True,
                   "allowed_ips": ["100.64.0.3/32", "198.19.3.0/24"]}},
         f"peer {K2[:8]}… updated (allowed_ips)"),
    ]


def test_plan_sets_only_the_endpoint_it_is_given():
    # which endpoint to set (roaming, DNS) is peerdiff.choose_endpoints' job: see test_peerdiff
    cur = _dev({K1: _peer(["100.64.0.2/32"], "198.18.0.7:51820")})
    assert plan(cur, _dev({K1: _want(["100.64.0.2/32"], None)})) == []
    (kw, _), = plan(cur, _dev({K1: _want(["100.64.0.2/32"], "198.18.0.8:51820")}))
    assert kw["peer"] == {"public_key": K1, "update_only": True, "endpoint_addr": "198.18.0.8",
                          "endpoint_port": 51820}


def test_plan_listen_port_zero_means_leave_it():
    assert plan(_dev({}, port=40000), _dev({}, port=0)) == []


def test_parse_info_merges_a_peer_split_over_messages():
    from netlink_frames import wg_dump_part, wg_peer
    priv = "E" * 42 + "A="                  # canonical base64, as the kernel's bytes read back
    first = wg_dump_part(priv, 51820, [wg_peer(K1, endpoint=("fd00::2", 51820), keepalive=25,
                                               handshake=(10, 500_000_000), rx=1, tx=2,
                                               allowed=["100.64.0.2/32"])])
    # the kernel continues the same peer's allowed IPs in the next message, key only
    second = wg_dump_part(None, None, [wg_peer(K1, allowed=["198.19.1.0/24"])])
    from lanmesh.netlink import wgnl
    dev = parse_info(wgnl.parse_device([first, second]))
    assert dev["private_key"] == priv and dev["listen_port"] == 51820
    assert dev["peers"][K1] == _peer(["100.64.0.2/32", "198.19.1.0/24"], "[fd00::2]:51820", 25,
                                     last_handshake=10.5, rx_bytes=1, tx_bytes=2)
