# OpenWrt integration: procd init script, uci-defaults and the feed Makefile, run against
# stubs of rc.common / procd / uci (tests/stubs) and checked with sh, busybox and shellcheck.
import os
import re
import shutil
import subprocess
import sys

import pytest

import lanmesh

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
STUBS = os.path.join(HERE, "stubs")
FILES = os.path.join(REPO, "openwrt", "lanmesh", "files")
INIT = os.path.join(FILES, "lanmesh.init")
DEFAULTS = os.path.join(FILES, "lanmesh.uci-defaults")
MAINTAINER = ("postinst", "prerm", "postrm")     # inline in the feed Makefile
GUARD = os.path.join(REPO, "firmware", "lanmesh", "release", "guard.sh")   # runs on the router
SCRIPTS = [INIT, DEFAULTS, GUARD] + list(MAINTAINER)


def _script_path(script, tmp_path):
    """A script file to check: our files as they are, the feed's maintainer scripts as
    packaging/feed.py extracts them for the ipk and the apk."""
    if script not in MAINTAINER:
        return script
    sys.path.insert(0, os.path.join(REPO, "packaging"))
    from feed import read_feed
    path = tmp_path / script
    path.write_text(read_feed(os.path.join(REPO, "openwrt", "lanmesh", "Makefile"))["scripts"][script] + "\n")
    return str(path)
# OpenWrt's /bin/sh is busybox ash; dash is the closest shell shellcheck knows.
SHELLS = [["sh"], ["busybox", "sh"]]

NETWORK = """config interface 'loopback'
\toption device 'lo'
\toption proto 'static'
\toption ipaddr '127.0.0.1'
\toption netmask '255.0.0.0'

config device
\toption name 'br-lan'
\toption type 'bridge'
\tlist ports 'lan1'
\tlist ports 'lan2'

config interface 'lan'
\toption device 'br-lan'
\toption proto 'static'
\toption ipaddr '198.19.1.1'
\toption netmask '255.255.255.0'

config interface 'wan'
\toption device 'eth1'
\toption proto 'dhcp'
"""
FIREWALL = """config defaults
\toption input 'REJECT'
\toption output 'ACCEPT'
\toption forward 'REJECT'

config zone
\toption name 'lan'
\tlist network 'lan'
\toption input 'ACCEPT'
\toption output 'ACCEPT'
\toption forward 'ACCEPT'

config zone
\toption name 'wan'
\tlist network 'wan'
\tlist network 'wan6'
\toption input 'REJECT'
\toption output 'ACCEPT'
\toption forward 'REJECT'
\toption masq '1'

config forwarding
\toption src 'lan'
\toption dest 'wan'
"""


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
@pytest.mark.parametrize("shell", [["sh", "-n"], ["busybox", "sh", "-n"]], ids=" ".join)
def test_scripts_parse(shell, script, tmp_path):
    subprocess.run(shell + [_script_path(script, tmp_path)], check=True)


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_scripts_pass_shellcheck(script, tmp_path):
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    r = subprocess.run(["shellcheck", "-s", "dash", _script_path(script, tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_init_script_declares_procd_and_rc_common():
    with open(INIT) as f:
        text = f.read()
    assert text.startswith("#!/bin/sh /etc/rc.common\n")
    assert re.search(r"^USE_PROCD=1$", text, re.M)


def _env(root):
    return dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + STUBS
                + os.pathsep + os.environ["PATH"], STUB_ROOT=root,
                UCI_CONFIG_DIR=os.path.join(root, "etc", "config"),
                PROCD_LOG=os.path.join(root, "procd.log"))


def _uci(root, *args):
    subprocess.run([os.path.join(STUBS, "uci")] + list(args), check=True, env=_env(root))


@pytest.fixture
def device(tmp_path):
    """A fake OpenWrt root: the shipped UCI config and init script, a fake daemon that
    records its argv and stays in the foreground for a moment."""
    root = str(tmp_path)
    os.makedirs(os.path.join(root, "etc", "config"))
    os.makedirs(os.path.join(root, "etc", "init.d"))
    os.makedirs(os.path.join(root, "usr", "bin"))
    shutil.copy(os.path.join(FILES, "lanmesh.config"), os.path.join(root, "etc/config/lanmesh"))
    shutil.copy(INIT, os.path.join(root, "etc/init.d/lanmesh"))
    fake = os.path.join(root, "usr/bin/lanmesh")
    with open(fake, "w") as f:
        f.write('#!/bin/sh\nprintf "%s\\n" "$@" > "$STUB_ROOT/argv"\nsleep 0.2\n'
                'echo done >> "$STUB_ROOT/argv.exit"\n')
    os.chmod(fake, 0o755)
    return root


def _rc(root, shell, action):
    r = subprocess.run(shell + [os.path.join(STUBS, "rc.common"),
                                os.path.join(root, "etc/init.d/lanmesh"), action],
                       env=_env(root), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    log = []
    if os.path.exists(os.path.join(root, "procd.log")):
        with open(os.path.join(root, "procd.log")) as f:
            log = [line.rstrip("\n").split("\t") for line in f]
        os.unlink(os.path.join(root, "procd.log"))
    return log, r.stderr


@pytest.mark.parametrize("shell", SHELLS, ids=" ".join)
@pytest.mark.parametrize("action", ["start", "reload"])
def test_init_starts_daemon_in_foreground_with_respawn_and_reload_trigger(device, shell, action):
    _uci(device, "set", "lanmesh.service.enabled=1")
    log, _ = _rc(device, shell, action)
    assert log[0][:2] == ["procd_open_service", "lanmesh"]
    params = {entry[1]: entry[2:] for entry in log if entry[0] == "procd_set_param"}
    assert params["command"] == ["/usr/bin/lanmesh", "run", "--uci", "/etc/config/lanmesh"]
    assert params["respawn"] == ["3600", "5", "5"]
    assert params["stdout"] == ["1"] and params["stderr"] == ["1"]
    assert "file" not in params, "a config change must not restart the daemon"
    assert ["procd_add_reload_trigger", "lanmesh"] in log
    if action == "reload":          # the running daemon re-reads the config: SIGHUP
        assert ["procd_send_signal", "lanmesh", "*", "HUP"] in log
    # the stub procd ran the command and saw it exit only after it finished its work:
    # a daemon that forked to the background would not be supervised
    names = [e[0] for e in log]
    assert names.index("procd_close_instance") < names.index("instance_exited")
    with open(os.path.join(device, "argv")) as f:
        assert f.read().split("\n")[:3] == ["run", "--uci", "/etc/config/lanmesh"]
    assert os.path.exists(os.path.join(device, "argv.exit"))


@pytest.mark.parametrize("shell", SHELLS, ids=" ".join)
def test_init_does_not_start_when_disabled(device, shell):
    log, err = _rc(device, shell, "start")
    assert "procd_open_instance" not in [e[0] for e in log]
    assert "disabled" in err
    assert ["procd_add_reload_trigger", "lanmesh"] in log, "enable+reload must still work"


def test_init_enable_links_rc_d(device):
    _rc(device, ["sh"], "enable")
    assert os.readlink(os.path.join(device, "etc/rc.d/S95lanmesh")) == "../init.d/lanmesh"
    assert os.path.exists(os.path.join(device, "etc/rc.d/K10lanmesh"))


def _snapshot(root):
    out = {}
    for pkg in ("network", "firewall", "lanmesh"):
        with open(os.path.join(root, "etc", "config", pkg)) as f:
            out[pkg] = f.read()
    return out


def _run_defaults(root, shell):
    # default_postinst / first boot source the script in a subshell from its directory
    subprocess.run(shell + ["-c", f". {DEFAULTS}"], check=True, env=_env(root), timeout=60)


@pytest.mark.parametrize("shell", SHELLS, ids=" ".join)
def test_uci_defaults_is_idempotent(device, shell):
    with open(os.path.join(device, "etc/config/network"), "w") as f:
        f.write(NETWORK)
    with open(os.path.join(device, "etc/config/firewall"), "w") as f:
        f.write(FIREWALL)
    _uci(device, "set", "lanmesh.node.listen_port=51999")
    _run_defaults(device, shell)
    once = _snapshot(device)
    _run_defaults(device, shell)
    assert _snapshot(device) == once

    from lanmesh.uci import parse
    net = {s.name: s for s in parse(once["network"])}
    assert net["lanmesh"].type == "interface"
    assert net["lanmesh"].options == {"proto": "none", "device": "lanmesh0"}
    assert net["lan"].options["ipaddr"] == "198.19.1.1", "existing config kept"
    fw = parse(once["firewall"])
    named = {s.name: s for s in fw if s.name}
    zone = named["lanmesh"]
    assert zone.type == "zone" and zone.options["network"] == ["lanmesh"]
    assert zone.options["forward"] == "ACCEPT", "relays forward tunnel to tunnel"
    assert (named["lanmesh_lan"].options, named["lan_lanmesh"].options) == (
        {"src": "lanmesh", "dest": "lan"}, {"src": "lan", "dest": "lanmesh"})
    assert named["lanmesh_wg"].options["dest_port"] == "51999"
    assert named["lanmesh_wg"].options["src"] == "wan"
    assert len([s for s in fw if s.type == "zone"]) == 3


def test_uci_defaults_keeps_user_edits(device):
    for name, text in (("network", NETWORK), ("firewall", FIREWALL)):
        with open(os.path.join(device, "etc/config", name), "w") as f:
            f.write(text)
    _run_defaults(device, ["sh"])
    _uci(device, "set", "firewall.lanmesh.input=REJECT")
    _run_defaults(device, ["sh"])
    assert "option input 'REJECT'" in _snapshot(device)["firewall"]


# --- the feed Makefile -------------------------------------------------------------
# Package names as published in OpenWrt's base and packages feeds (24.10).
def test_feed_makefile():
    sys.path.insert(0, os.path.join(REPO, "packaging"))
    from feed import read_feed
    from openwrt_root import feed as release_feed
    from router import FILES as SHIPPED
    mk = os.path.join(REPO, "openwrt", "lanmesh", "Makefile")
    with open(mk) as f:
        text = f.read()
    assert "$(eval $(call BuildPackage,lanmesh))" in text
    assert "router.py stage" in text            # the file list is packaging/router.py's
    feed = read_feed(mk)
    assert feed["version"] == lanmesh.__version__
    for release in ("24.10", "25.12"):          # every dependency exists on both releases
        pkgs, provides = release_feed(release)
        have = set(pkgs) | {p for _, p in provides.values()}
        assert set(feed["depends"]) <= have, set(feed["depends"]) - have
    for gone in ("python3", "python3-pyroute2", "python3-paho-mqtt", "python3-pyserial",
                 "python3-cryptography", "wireguard-tools"):
        assert gone not in feed["depends"]      # old, host-only, unbuildable on MIPS, unused
    for need in ("python3-light", "python3-openssl", "kmod-wireguard", "nftables"):
        assert need in feed["depends"]
    assert feed["conffiles"] == ["/etc/config/lanmesh"]
    assert set(feed["scripts"]) == set(MAINTAINER)
    for src, dest, _ in SHIPPED:
        assert os.path.exists(os.path.join(REPO, src)), src
    with open(os.path.join(FILES, "lanmesh.keep")) as f:
        assert "/etc/lanmesh/" in f.read().split(), "sysupgrade must keep keys and documents"
