# Daemon lifecycle faults a user hit (issue 11), on real daemons in namespaces: a second
# `lanmesh run` on the same interface touches nothing; kill -9 then a restart adopts the
# surviving wireguard-go and the next document applies; SIGTERM at any moment of start-up
# leaves nothing behind; the forwarding sysctls are back to what the host had before
# lanmesh after every way of stopping, a crash and restart included.
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.netns


def sysctls(lab, s):
    return tuple(lab.ns.exec(s.router, "cat", f"/proc/sys/net/{p}").stdout.strip()
                 for p in ("ipv4/ip_forward", "ipv6/conf/all/forwarding"))


def leftovers(lab, s):
    """What a stopped daemon must not leave: wireguard-go, the tunnel link, the nft table."""
    out = []
    pids = lab.ns.pids(s.router)
    for pid in pids:
        try:
            comm = open(f"/proc/{pid}/comm").read().strip()
        except OSError:
            continue
        if comm == "wireguard-go":
            out.append(f"wireguard-go pid {pid}")
    if lab.ns.exec(s.router, "ip", "link", "show", s.ifname, check=False).returncode == 0:
        out.append(f"link {s.ifname}")
    if lab.ns.exec(s.router, "nft", "list", "table", "inet", "lanmesh_" + s.ifname,
                   check=False).returncode == 0:
        out.append("nft table")
    return out


def test_second_daemon_on_the_same_interface_exits_and_touches_nothing(make_lab):
    lab = make_lab(2)
    lab.start_all()
    assert lab.wait_direct(timeout=20)
    a, b = lab.sites
    nft_before = lab.ns.exec(a.router, "nft", "list", "table", "inet", "lanmesh_" + a.ifname).stdout
    wg_before = lab.ns.exec(a.router, "wg", "show", a.ifname, "dump").stdout.split("\n")[1:]
    watch = lab.ns.popen(a.host, ["ping", "-n", "-i", "0.05", "-W", "1", b.host4],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    time.sleep(1)
    second = lab.ns.exec(a.router, sys.executable, "-m", "lanmesh.cli", "run", "--config",
                         a.config_path, check=False, timeout=30)
    assert second.returncode != 0
    assert "another `lanmesh run`" in second.stderr and "nothing was touched" in second.stderr
    time.sleep(1.5)
    watch.terminate()
    out, _ = watch.communicate(timeout=10)
    seqs = [int(l.split("icmp_seq=")[1].split()[0]) for l in out.splitlines() if "icmp_seq=" in l]
    assert seqs and max(seqs) - min(seqs) + 1 - len(seqs) <= 1, "pings were lost"
    assert lab.ns.exec(a.router, "nft", "list", "table", "inet", "lanmesh_" + a.ifname).stdout == nft_before
    wg_after = lab.ns.exec(a.router, "wg", "show", a.ifname, "dump").stdout.split("\n")[1:]
    assert [r.split("\t")[:4] for r in wg_after] == [r.split("\t")[:4] for r in wg_before]
    assert all(l["up"] for l in lab.status(a)["links"])
    assert a.proc.poll() is None


def test_kill_9_then_restart_adopts_wireguard_go_applies_and_restores_sysctls(make_lab):
    lab = make_lab(2)
    a, b = lab.sites
    before = sysctls(lab, a)
    assert before == ("0", "0")
    lab.start_all()
    assert lab.wait_direct(timeout=20)
    assert sysctls(lab, a) == ("1", "1")
    wg_pid = next(p for p in lab.ns.pids(a.router)
                  if open(f"/proc/{p}/comm").read().strip() == "wireguard-go")
    a.proc.kill()                           # the daemon crashes; wireguard-go lives on
    a.proc.wait()
    time.sleep(1)
    assert os.path.exists(f"/proc/{wg_pid}"), "wireguard-go died with the daemon"
    lab.start(a)
    assert lab.wait_direct(timeout=20)
    assert os.path.exists(f"/proc/{wg_pid}"), "the restarted daemon did not adopt wireguard-go"
    assert "adopting running wireguard-go" in lab.daemon_log_full(a)
    # the next document applies on the adopted wireguard-go
    lab.write_document(lab.document(keepalive=13))
    lab.reload(a)
    deadline = time.monotonic() + 15
    ka = ""
    while time.monotonic() < deadline and "13" not in ka:
        ka = lab.ns.exec(a.router, "wg", "show", a.ifname, "persistent-keepalive").stdout
        time.sleep(0.2)
    assert "13" in ka
    assert lab.stop(a) == 0
    assert leftovers(lab, a) == []
    assert sysctls(lab, a) == before        # not the 1 the crashed daemon left behind


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.4, 0.7, 1.0])
def test_sigterm_at_any_moment_of_start_up_leaves_nothing_behind(make_lab, delay):
    lab = make_lab(2)
    a = lab.sites[0]
    lab.write_document(lab.document())
    before = sysctls(lab, a)
    proc = lab.start(a, wait=False)
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the daemon did not stop on SIGTERM:\n" + lab.daemon_log(a))
    a.proc = None
    deadline = time.monotonic() + 5
    while leftovers(lab, a) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftovers(lab, a) == [], lab.daemon_log(a)
    assert sysctls(lab, a) == before


def test_failed_apply_is_retried_and_hand_edits_are_undone(make_lab):
    lab = make_lab(2)
    a, b = lab.sites
    # Something else already routes b's LAN on a's router: lanmesh's route add fails.
    lab.ns.exec(a.router, "ip", "route", "add", b.lan4, "dev", "lan0")
    lab.write_document(lab.document())
    for s in lab.sites:
        lab.start(s, extra_env={"LANMESH_REAPPLY_S": "2"})
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not (lab.status(a).get("dataplane") or {}).get("apply_failures"):
        time.sleep(0.2)
    st = lab.status(a)
    assert st["dataplane"]["apply_failures"] >= 1 and "another route" in st["dataplane"]["last_error"]
    lab.ns.exec(a.router, "ip", "route", "del", b.lan4, "dev", "lan0")     # the conflict goes
    assert lab.wait_ping(a, b, timeout=20), lab.daemon_log(a)              # retried until it works
    deadline = time.monotonic() + 10        # (the ping can work before that apply returns)
    while time.monotonic() < deadline and lab.status(a)["dataplane"]["last_error"] is not None:
        time.sleep(0.2)
    assert lab.status(a)["dataplane"]["last_error"] is None, lab.daemon_log(a)
    # someone edits a managed peer by hand: the re-apply puts it back
    ka = lambda: lab.ns.exec(a.router, "wg", "show", a.ifname, "persistent-keepalive").stdout.split()
    before = ka()
    lab.ns.exec(a.router, "wg", "set", a.ifname, "peer", b.public_key, "persistent-keepalive", "99")
    assert "99" in ka()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and ka() != before:
        time.sleep(0.2)
    assert ka() == before


def _edit_config_and_hup(lab, s, cfg, expect, timeout=10):
    """Write s's node config, SIGHUP the daemon; its log once `expect` shows (or timeout)."""
    import json
    with open(s.config_path, "w") as f:
        json.dump(cfg, f)
    lab.reload(s)
    end = time.monotonic() + timeout
    while expect not in lab.daemon_log(s) and time.monotonic() < end:
        time.sleep(0.1)
    return lab.daemon_log(s)


def test_sighup_rereads_the_config_and_keeps_the_sessions(make_lab):
    # what `uci commit lanmesh` + reload_config does on OpenWrt (the init script's reload)
    import json
    lab = make_lab(2)
    a, b = lab.sites
    lab.start_all()
    assert lab.wait_ping(a, b)
    before = {p["name"]: p["last_handshake_age"] for p in lab.status(a)["peers"]}
    pid = a.proc.pid
    with open(a.config_path) as f:
        cfg = json.load(f)
    cfg.update(log_level="debug", listen_port=51999, name=a.name)
    log = _edit_config_and_hup(lab, a, cfg, "listen_port applied")
    assert "config: listen_port, log_level applied" in log, log[-2000:]
    out = lab.ns.exec(a.router, "wg", "show", a.ifname, "listen-port").stdout.strip()
    assert out == "51999"
    assert a.proc.pid == pid and a.proc.poll() is None            # not restarted
    assert lab.wait_ping(a, b)
    after = {p["name"]: p["last_handshake_age"] for p in lab.status(a)["peers"]}
    assert after[b.name] is not None and before[b.name] is not None
    # the same session: no new handshake was needed (its age only grew)
    assert after[b.name] >= before[b.name] - 0.5, (before, after)
    # a key that needs a restart is named, and the running daemon keeps its config
    cfg["backend"] = "kernel"
    log = _edit_config_and_hup(lab, a, cfg, "applied at the next start")
    assert "config: backend changed; applied at the next start" in log
    assert lab.status(a)["backend"] == "uapi"


def test_wireguard_go_shares_the_daemons_session_but_not_its_process_group(make_lab):
    # Own process group: a Ctrl-C meant for the daemon does not reach the tunnel. Same
    # session: with sched_autogroup a session of its own is a CPU-scheduling group of its
    # own, which cost ~15 % throughput (bench/uapi_vs_hand.py --hand-setsid).
    lab = make_lab(1)
    (a,) = lab.sites
    lab.start_all()
    wg = [p for p in lab.ns.pids(a.router)
          if open(f"/proc/{p}/comm").read().strip() == "wireguard-go"]
    assert len(wg) == 1
    daemon = a.proc.pid
    assert os.getsid(wg[0]) == os.getsid(daemon)
    assert os.getpgid(wg[0]) == wg[0] != os.getpgid(daemon)
