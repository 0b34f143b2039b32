# Board configs validate against their schema; detect() finds the board from what the
# OS reports and falls back to generic defaults, with a warning, for an unknown board.
import json
import logging
import os
import sys

import pytest

from lanmesh import board

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "stubs"))
from schema_lite import validate  # noqa: E402

BOARDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "board-configs")
with open(os.path.join(BOARDS, "schema.json")) as f:
    SCHEMA = json.load(f)
FILES = sorted(n for n in os.listdir(BOARDS) if n.endswith(".json") and n != "schema.json")
REQUIRED = {"tplink-archer-c7-v5", "glinet-gl-mt6000", "raspberrypi-4-model-b",
            "raspberrypi-5", "x86-64-generic"}


def _load(name):
    with open(os.path.join(BOARDS, name)) as f:
        return json.load(f)


@pytest.mark.parametrize("name", FILES)
def test_board_config_validates(name):
    b = _load(name)
    assert validate(b, SCHEMA) == []
    assert b["id"] + ".json" == name


def test_required_boards_present_and_matches_unique():
    ids = {_load(n)["id"] for n in FILES}
    assert REQUIRED <= ids
    seen = {}
    for n in FILES:
        for kind, values in _load(n)["match"].items():
            for v in values:
                assert (kind, v) not in seen, f"{v} claimed by {seen[(kind, v)]} and {n}"
                seen[(kind, v)] = n
    assert _load("tplink-archer-c7-v5.json")["ram_mb"] == 128


@pytest.mark.parametrize("breakage, problem", [
    (lambda b: b.pop("lan_device"), "lan_device: required"),
    (lambda b: b.update(ram_mb="128"), "is not of type integer"),
    (lambda b: b.update(colour="red"), "colour: not allowed"),
    (lambda b: b.update(default_backend="magic"), "is not one of"),
    (lambda b: b["console"].update(device="ttyS0"), "does not match"),
    (lambda b: b.update(match={}), "fewer than 1 properties"),
])
def test_schema_rejects_broken_boards(breakage, problem):
    b = _load("tplink-archer-c7-v5.json")
    breakage(b)
    assert any(problem in p for p in validate(b, SCHEMA)), validate(b, SCHEMA)


def _root(tmp_path, files):
    for rel, data in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(tmp_path)


@pytest.mark.parametrize("files, machine, expect, how, os_name", [
    ({"tmp/sysinfo/board_name": "tplink,archer-c7-v5\n", "etc/openwrt_release": ""},
     "mips", "tplink-archer-c7-v5", "board_name", "openwrt"),
    ({"tmp/sysinfo/board_name": "glinet,gl-mt6000\n", "etc/openwrt_release": "",
      "proc/device-tree/model": b"GL.iNet GL-MT6000\x00"},
     "aarch64", "glinet-gl-mt6000", "board_name", "openwrt"),
    ({"proc/device-tree/model": b"Raspberry Pi 4 Model B Rev 1.4\x00",
      "etc/debian_version": "12.8\n"}, "aarch64", "raspberrypi-4-model-b", "model_prefix", "raspios"),
    ({"proc/device-tree/model": b"Raspberry Pi 5 Model B Rev 1.0\x00",
      "etc/debian_version": "12.8\n"}, "aarch64", "raspberrypi-5", "model_prefix", "raspios"),
    ({"tmp/sysinfo/board_name": "qemu-standard-pc-q35-ich9-2009\n",
      "etc/openwrt_release": ""}, "x86_64", "x86-64-generic", "arch", "openwrt"),
])
def test_detect_known_boards(tmp_path, caplog, files, machine, expect, how, os_name):
    with caplog.at_level(logging.WARNING, logger="lanmesh.board"):
        b = board.detect(_root(tmp_path, files), machine=machine)
    assert b["id"] == expect
    assert b["detected"]["matched_by"] == how
    assert b["detected"]["os"] == os_name
    assert not caplog.records


def test_unknown_board_gets_generic_defaults_and_a_warning(tmp_path, caplog):
    root = _root(tmp_path, {"tmp/sysinfo/board_name": "acme,router-9000\n",
                            "etc/openwrt_release": "",
                            "proc/meminfo": "MemTotal:         262144 kB\nMemFree: 1 kB\n"})
    with caplog.at_level(logging.WARNING, logger="lanmesh.board"):
        b = board.detect(root, machine="mips")
    assert b["id"] == "generic"
    assert b["default_backend"] == "auto"
    assert b["lan_device"] == "br-lan" and b["os"] == "openwrt" and b["ram_mb"] == 256
    assert b["detected"]["board_name"] == "acme,router-9000"
    assert any("unknown board" in r.getMessage() and "acme,router-9000" in r.getMessage()
               for r in caplog.records)
    assert board.GENERIC["ram_mb"] is None, "detect must not modify the defaults"


def test_installed_copy_wins_and_broken_files_are_skipped(tmp_path, caplog):
    inst, src = tmp_path / "inst", tmp_path / "src"
    inst.mkdir()
    src.mkdir()
    c7 = _load("tplink-archer-c7-v5.json")
    (src / "tplink-archer-c7-v5.json").write_text(json.dumps(c7))
    (inst / "tplink-archer-c7-v5.json").write_text(json.dumps(dict(c7, memory_budget_mb=20)))
    (inst / "broken.json").write_text("{")
    with caplog.at_level(logging.WARNING, logger="lanmesh.board"):
        boards = board.load_boards([str(inst), str(src)])
    assert boards["tplink-archer-c7-v5"]["memory_budget_mb"] == 20
    assert any("broken.json" in r.getMessage() for r in caplog.records)


def test_source_tree_board_configs_are_found_by_default():
    assert REQUIRED <= set(board.load_boards())
