# UCI <-> node config: one model, two syntaxes (lanmesh.uci).
import json

import pytest

from lanmesh import config, uci
from lanmesh.errors import ConfigError

FULL_NODE = {
    "name": "hq", "comment": "head office, rack 2", "interface": "wg-mesh",
    "backend": "kernel", "private_key_file": "/etc/lanmesh/private.key",
    "document": "/etc/lanmesh/network.json", "state_dir": "/etc/lanmesh/state",
    "run_dir": "/var/run/lanmesh", "listen_port": 51999, "log_level": "debug",
    "fleet": {"name": "acme", "public_key": "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq8M=",
              "broker": "mqtts://broker.example:8883", "ca_file": "/etc/lanmesh/ca.pem",
              "username": "hq", "password_file": "/etc/lanmesh/mqtt.pass",
              "cert_file": "/etc/lanmesh/hq.crt", "key_file": "/etc/lanmesh/hq.key",
              "topic_prefix": "lanmesh/acme/", "min_version": 7, "keepalive": 60,
              "report_interval": 20, "package_format": "ipk",
              "board": "tplink-archer-c7-v5", "package_manager": "opkg",
              "package_root": "/", "restart_command": "/etc/init.d/lanmesh restart",
              "confirm_window": 120},
}
FULL_SERVICE = {"enabled": True, "lan_interface": "lan",
                "lan_prefix": ["198.19.1.0/24", "fd00:1:1::/64"],
                "console_device": "/dev/ttyS0", "console_baud": 115200}


def test_mapping_covers_the_config_model_exactly():
    top = set(config.DEFAULTS) - {"fleet"} | {"name", "comment"}
    assert set(uci.NODE_OPTIONS) == top
    assert set(uci.FLEET_OPTIONS) == set(config.FLEET_KEYS)


def test_every_field_round_trips(tmp_path):
    assert set(FULL_NODE) - {"fleet"} == set(uci.NODE_OPTIONS)
    assert set(FULL_NODE["fleet"]) == set(uci.FLEET_OPTIONS)
    text = uci.dump_uci(FULL_NODE, FULL_SERVICE)
    p = tmp_path / "lanmesh"
    p.write_text(text)
    assert uci.load_uci(str(p)) == FULL_NODE
    assert uci.load_service(str(p)) == FULL_SERVICE
    # and again: dump(load(x)) is a fixed point
    assert uci.dump_uci(uci.load_uci(str(p)), uci.load_service(str(p))) == text


def test_uci_and_json_give_the_same_node_config(tmp_path):
    (tmp_path / "lanmesh").write_text(uci.dump_uci(FULL_NODE))
    (tmp_path / "node.json").write_text(json.dumps(FULL_NODE))
    a = config.parse_config(uci.load_uci(str(tmp_path / "lanmesh")))
    b = config.load_config(str(tmp_path / "node.json"))
    keys = list(config.DEFAULTS) + ["name"]
    assert {k: getattr(a, k) for k in keys} == {k: getattr(b, k) for k in keys}


def test_quoting_and_comments_like_libuci():
    text = (
        "# a comment\n"
        "package lanmesh\n"
        "config node 'node'   # trailing comment\n"
        "\toption name hq\n"
        "\toption comment \"say \\\"hi\\\"\"\n"
        "\toption interface 'wg'\\''x'\n"
        "\toption log_level \"in\"'fo'\n"
        "\toption document '/etc/a b/network.json'\n"
        "config fleet\n"
        "\toption name acme\n"
        "\toption broker 'mqtt://b:1883'\n"
        "\toption public_key 'k'\n"
        "\toption username ''\n"
    )
    d = uci.node_from_uci(text)
    assert d["name"] == "hq"
    assert d["comment"] == 'say "hi"'
    assert d["interface"] == "wg'x"
    assert d["log_level"] == "info"
    assert d["document"] == "/etc/a b/network.json"
    assert d["fleet"] == {"name": "acme", "broker": "mqtt://b:1883", "public_key": "k"}
    # a value with quotes and newlines survives dump -> parse
    odd = dict(name="n", comment="it's \"two\"\nlines # not a comment")
    assert uci.node_from_uci(uci.dump_uci(odd)) == odd


def test_empty_options_mean_defaults_and_empty_fleet_means_no_fleet():
    d = uci.node_from_uci("config node 'node'\n\toption name 'a'\n\toption listen_port ''\n"
                          "config fleet 'fleet'\n\toption name ''\n")
    assert d == {"name": "a"}


def test_shipped_default_config_parses():
    import os
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "openwrt", "lanmesh", "files", "lanmesh.config")
    d = uci.load_uci(path)
    assert "fleet" not in d and "name" not in d
    assert d["state_dir"].startswith("/etc/"), "last good document must survive reboots"
    s = uci.load_service(path)
    assert s["enabled"] is False and s["lan_interface"] == "lan"


@pytest.mark.parametrize("text, line, fragment", [
    ("config node 'node'\n\toption name 'hq\n\toption backend kernel\n", 2, "unterminated ' quote"),
    ("option name hq\n", 1, "before any 'config'"),
    ("config node node\n\toptoin name hq\n", 2, "unknown keyword 'optoin'"),
    ("config node node\n\toption name hq\n\n\toption listen_port abc\n", 4, "not a whole number"),
    ("config node node\n\toption listen_port 70000\n", 2, "not a port"),
    ("config node node\n\toption nmae hq\n", 2, "unknown option 'nmae'"),
    ("config node node\n\toption document network.json\n", 2, "absolute path"),
    ("config node node\n\toption name hq\nconfig node other\n", 3, "second 'node' section"),
    ("config node node\n\tlist name a\n", 2, "not a 'list'"),
    ("config node node\n\toption name head office\n", 2, "quote values that contain spaces"),
    ("config nodes node\n", 1, "unknown section type 'nodes'"),
    ("config node 'no-de'\n", 1, "not a valid section name"),
    ("config service service\n\toption enabled maybe\n", 2, "not a boolean"),
])
def test_malformed_uci_names_the_line(tmp_path, text, line, fragment):
    p = tmp_path / "lanmesh"
    p.write_text(text + ("config node x\n\toption name a\n" if "node" not in text else ""))
    with pytest.raises(ConfigError) as e:
        uci.load_uci(str(p))
        uci.load_service(str(p))
    msg = str(e.value)
    assert f"{p}:{line}:" in msg, msg
    assert fragment in msg, msg


def test_missing_file_and_missing_node_section(tmp_path):
    with pytest.raises(uci.UciError, match="not found"):
        uci.load_uci(str(tmp_path / "nope"))
    (tmp_path / "l").write_text("config fleet fleet\n\toption name a\n")
    with pytest.raises(uci.UciError, match="no 'config node' section"):
        uci.load_uci(str(tmp_path / "l"))


def test_dump_refuses_unknown_settings():
    with pytest.raises(uci.UciError, match="node.bogus"):
        uci.dump_uci({"name": "a", "bogus": 1})
