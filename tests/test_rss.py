# Issues 2 and 12: the idle daemon must fit a 128 MB router (DESIGN §2.6). What keeps it
# small: no `cryptography` (keys.pubkey is pure-Python X25519, Ed25519 checks use
# libsodium or pure Python), no asyncio and no ssl unless the fleet uses TLS (lanmesh.loop
# is our own loop), no pyroute2 (lanmesh.netlink is a small codec of its own).
import os
import subprocess
import sys
import textwrap
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

FIRMWARE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "firmware")
RSS_LIMIT_MB = 20.0


def _run(code, **kw):
    env = dict(os.environ, PYTHONPATH=FIRMWARE)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, timeout=60, **kw)


def test_the_loop_needs_neither_asyncio_nor_ssl():
    # lanmesh.aio runs on lanmesh.loop: CPython's asyncio (~6.7 MB, 100 modules) and the
    # OpenSSL it drags in stay out of the daemon unless the fleet's MQTT over TLS needs ssl
    r = _run("""
        import sys
        before = len(sys.modules)
        from lanmesh import aio
        async def main():
            await aio.sleep(0.01)
            return "ran"
        print(aio.run(main()), sorted({"asyncio", "ssl", "_ssl"} & set(sys.modules)),
              len(sys.modules) - before)
    """)
    ran, heavy, added = r.stdout.strip().rsplit(" ", 2)
    assert (ran, heavy) == ("ran", "[]"), r.stdout + r.stderr
    assert int(added) < 35, f"lanmesh.aio imported {added} modules"   # asyncio: ~130


def test_daemon_imports_stay_small():
    # what `lanmesh run` loads before it touches the network, measured in a fresh process
    # (every backend and the fleet over TLS: subprocess and base64 cost ~0.4 MB together,
    # lanmesh.spawn and keys.b64* do their jobs)
    r = _run("""
        import sys
        from lanmesh import daemon, keys
        from lanmesh.dataplane import uapi, kernel, nft
        from lanmesh.adapters import mqtt, tls, echo, openwrt_firewall
        from lanmesh.fleet import agent
        keys.pubkey(keys.genkey())
        heavy = sorted({m.split(".")[0] for m in sys.modules} & daemon.HEAVY_MODULES)
        # software updates load their code when a release is assigned, not before
        heavy += sorted(m for m in sys.modules if m.startswith("lanmesh.release"))
        rss = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
        print(heavy, round(rss, 1))
    """)
    heavy, rss = r.stdout.rsplit(" ", 1)
    assert heavy == "[]", r.stdout + r.stderr
    assert float(rss) < RSS_LIMIT_MB


def _status_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _anon_maps(pid, floor_kb=64):
    """The mappings holding anonymous memory, largest first: what to look at when the
    production configuration goes over its budget (heap, pymalloc arenas, thread arenas)."""
    out, cur = [], None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and not line.startswith(("Anon", "Rss")):
                cur = " ".join(head[5:]) or head[0]
            elif line.startswith("Anonymous:") and int(head[1]) >= floor_kb:
                out.append((int(head[1]), cur))
    return sorted(out, reverse=True)


def bytecode_copy(directory):
    """The package byte-compiled, as routers run it (OpenWrt ships .pyc): compiling from
    source at start-up, as the test bed otherwise does, costs ~1.3 MB more RSS."""
    import compileall
    import shutil
    dest = os.path.join(directory, "pylib")
    shutil.copytree(os.path.join(FIRMWARE, "lanmesh"), os.path.join(dest, "lanmesh"),
                    ignore=shutil.ignore_patterns("__pycache__", "lab"))
    assert compileall.compile_dir(dest, quiet=1)
    return dest


@pytest.mark.netns
def test_idle_daemon_rss_and_no_heavy_libraries(make_lab, tmp_path):
    lab = make_lab(2)
    lab.write_document(lab.document())
    pylib = bytecode_copy(str(tmp_path))
    for s in lab.sites:
        lab.start(s, extra_env={"PYTHONPATH": pylib})
    assert lab.wait_ping(lab.sites[0], lab.sites[1])
    time.sleep(2)                       # a few probe rounds: the mesh's steady state
    for s in lab.sites:
        pid = s.proc.pid                # `ip netns exec` execs: this is the daemon itself
        with open(f"/proc/{pid}/maps") as f:
            maps = f.read()
        # cryptography's Rust extension, OpenSSL (asyncio's ssl, cryptography), and
        # pyroute2 (pure Python: seen through its modules' files never being mapped is not
        # possible, so the RSS bound below is what catches it: it alone costs ~20 MB)
        for lib in ("_rust.abi3.so", "libcrypto", "libssl", "_ssl."):
            assert lib not in maps, f"{s.name}: {lib} is loaded in the daemon"
        with open(f"/proc/{pid}/environ", "rb") as f:
            assert f"PYTHONPATH={pylib}".encode() in f.read().split(b"\0")   # the bytecode copy
        rss = _status_kb(pid, "VmRSS") / 1024
        assert rss <= RSS_LIMIT_MB, f"{s.name}: daemon RSS {rss:.1f} MB > {RSS_LIMIT_MB} MB"


def test_netlink_step_runs_only_when_something_changed(monkeypatch):
    # Mesh failovers re-apply the LinkState with new allowed IPs only: they must not redo
    # the link/address/route step. A new device (wireguard-go restarted: new ifindex), a
    # failed run or a changed MTU/address/route set does.
    from lanmesh.dataplane import hostnet
    from lanmesh.dataplane.linkstate import LinkState
    from lanmesh.errors import BackendError

    calls, index, fail = [], [7], []

    def run(self, mtu, addrs, routes, changes, problems):
        calls.append({"mtu": mtu, "owned": sorted(self._owned_addrs)})
        self._owned_addrs = set(addrs)
        changes.append("x")
        problems.extend(fail)

    monkeypatch.setattr(hostnet.HostNet, "_run_netlink", run)
    monkeypatch.setattr(hostnet, "_ifindex", lambda name: index[0])
    monkeypatch.setattr(hostnet.HostNet, "_apply_sysctl", lambda self, fwd, changes: None)
    monkeypatch.setattr(hostnet.HostNet, "_apply_nft", lambda self, state, changes: None)
    hn = hostnet.HostNet("lm0")

    def st(**kw):
        base = dict(ifname="lm0", private_key="", listen_port=0, addresses=["100.64.0.1/32"],
                    routes=["100.64.0.0/10"])
        base.update(kw)
        return LinkState(**base)

    hn.apply(st())
    hn.apply(st(listen_port=1))             # only WireGuard-side changes: no netlink step
    assert len(calls) == 1
    hn.apply(st(mtu=1300))
    assert len(calls) == 2 and calls[-1]["mtu"] == 1300
    index[0] = 8                            # the device was recreated
    hn.apply(st(mtu=1300))
    assert len(calls) == 3
    fail.append("route 100.64.0.0/10: boom")
    with pytest.raises(BackendError, match="boom"):
        hn.apply(st(mtu=1400))
    fail.clear()
    hn.apply(st(mtu=1400))                  # a failed run is retried
    hn.apply(st(mtu=1400))
    assert len(calls) == 5
    assert calls[-1]["owned"] == ["100.64.0.1/32"]
    index[0] = None                         # gone: close() has nothing to undo via netlink
    hn.close()
    assert len(calls) == 5


def _installed_launcher(directory):
    """The router package as installed (packaging/router.py, byte code) and how its
    /usr/bin/lanmesh runs (its #! line: python3 -S)."""
    sys.path.insert(0, os.path.join(FIRMWARE, "..", "packaging"))
    from router import install
    return install(directory)


@pytest.mark.netns
def test_production_configuration_fits_verifies_and_reroutes(make_lab, tmp_path):
    """Issue 12: `kernel` backend, fleet over TLS, 4 peers, the installed package. Runs
    inside the kernel VM (tests/test_kernel_vm.py); skipped where WireGuard is missing.
    Five sites are in the fleet (4 peers each); three run, the other two are offline
    sites (the emulated VM cannot run five routers' probes in time)."""
    from lanmesh.dataplane.kernel import kernel_available
    from lanmesh_lab.fleetlab import FleetLab
    if not kernel_available():
        pytest.skip("needs kernel WireGuard: tests/test_kernel_vm.py runs this in the VM")
    launcher = _installed_launcher(str(tmp_path / "root"))
    # what the daemon's interpreter can import: no cryptography, paho or pyroute2
    for lib in ("cryptography", "paho", "pyroute2"):
        r = subprocess.run(launcher[:2] + ["-c", f"import {lib}"], capture_output=True)
        assert r.returncode != 0, f"{lib} is importable by the daemon"
    slow = float(os.environ.get("LANMESH_LAB_SLOW", "1"))
    lab = make_lab(5, backend="kernel")
    for s in lab.sites:
        s.relay = True
    fl = FleetLab(lab, tmp_path / "fleet")
    try:
        fl.start_broker()
        running = lab.sites[:3]
        for s in running:
            lab.start(s, wait=False, command=launcher)
        for s in running:
            lab.wait_ready(s, timeout=15 * slow)
        v = fl.publish(settings={"keepalive": 25})     # a signed document, verified by each
        fl.wait_applied(v, timeout=30 * slow, sites=running)
        time.sleep(5)
        for s in running:
            st = lab.status(s)
            assert st["backend"] == "kernel" and st["version"] == v and len(st["peers"]) == 4
            assert st["fleet_state"]["connected"], st["fleet_state"]
            assert st["process"]["heavy"] == [], st["process"]
            rss = st["process"]["rss_kb"] / 1024
            pid = st["process"]["pid"]
            parts = {f: _status_kb(pid, f) / 1024 for f in ("RssAnon", "RssFile")}
            print(f"{s.name}: VmRSS {rss:.1f} MB, anon {parts['RssAnon']:.1f}, "
                  f"file {parts['RssFile']:.1f}, {st['process']['modules']} modules")
            assert rss <= RSS_LIMIT_MB, (f"{s.name}: {rss:.1f} MB > {RSS_LIMIT_MB} MB ({parts}; "
                                         f"anonymous memory by mapping: {_anon_maps(pid)})")
        a, c = lab.sites[0], lab.sites[2]
        assert lab.wait_ping(a, c, timeout=10 * slow)
        lab.cut(a, c)
        end = time.monotonic() + 10 * slow
        while lab.routes(a).get(c.name) in (c.name, None) and time.monotonic() < end:
            time.sleep(0.2)
        assert lab.routes(a)[c.name] not in (c.name, None), lab.routes(a)
        assert lab.wait_ping(a, c, timeout=10 * slow)
    finally:
        for s in lab.sites[:3]:
            lab.stop(s)
        fl.close()
