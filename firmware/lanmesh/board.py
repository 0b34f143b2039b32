# Which board is this? detect() reads what the OS reports (OpenWrt's board_name, the
# device-tree model on a Raspberry Pi, the machine architecture) and returns the matching
# board config (board-configs/*.json); an unknown board gets generic defaults and a warning.
# Board configs live in board-configs/ in the source tree; the packages copy them into
# lanmesh/boards/, so both places are searched (installed copy first).
import json
from .log import getLogger
import os

log = getLogger("lanmesh.board")

_HERE = os.path.dirname(os.path.abspath(__file__))
BOARD_DIRS = (os.path.join(_HERE, "boards"),
              os.path.join(os.path.dirname(os.path.dirname(_HERE)), "board-configs"))

GENERIC = {
    "id": "generic",
    "name": "unknown board (generic defaults)",
    "match": {},
    "os": "linux",
    "target": "unknown",
    "arch": "unknown",
    "ram_mb": None,
    "flash_mb": None,
    "lan_device": "eth0",
    "wan_device": None,
    "console": {"device": "/dev/ttyS0", "baud": 115200},
    "default_backend": "auto",
    "memory_budget_mb": 32,
}


def _read(root, rel):
    try:
        with open(os.path.join(root, rel), "rb") as f:
            # device-tree strings end in NUL; sysinfo files in a newline
            return f.read(4096).decode("utf-8", "replace").strip("\x00\n\r\t ")
    except OSError:
        return None


def _os_name(root, model):
    if os.path.exists(os.path.join(root, "etc/openwrt_release")):
        return "openwrt"
    if os.path.exists(os.path.join(root, "etc/debian_version")):
        return "raspios" if (model or "").startswith("Raspberry Pi") else "debian"
    return "linux"


def _ram_mb(root):
    for line in (_read(root, "proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            try:
                return int(line.split()[1]) // 1024
            except (IndexError, ValueError):
                return None
    return None


def load_boards(dirs=BOARD_DIRS):
    """All board configs found, by id; the first directory that has an id wins."""
    boards = {}
    for d in dirs:
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for n in names:
            if not n.endswith(".json") or n == "schema.json":
                continue
            try:
                with open(os.path.join(d, n), encoding="utf-8") as f:
                    b = json.load(f)
                bid, match = b["id"], b["match"]
                if not isinstance(match, dict):
                    raise TypeError("match is not an object")
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.warning("board config %s ignored: %s", os.path.join(d, n), e)
                continue
            boards.setdefault(bid, b)
    return boards


def _match(boards, board_name, model, machine):
    if board_name:
        for b in boards.values():
            if board_name in b["match"].get("board_name", ()):
                return b, "board_name"
    if model:
        best, best_len = None, 0
        for b in boards.values():
            for p in b["match"].get("model_prefix", ()):
                if model.startswith(p) and len(p) > best_len:
                    best, best_len = b, len(p)
        if best:
            return best, "model_prefix"
    if machine:
        for b in boards.values():
            if machine in b["match"].get("arch", ()):
                return b, "arch"
    return None, None


def detect(root="/", machine=None, dirs=BOARD_DIRS):
    """This machine's board config (a fresh dict) plus what was detected under 'detected'.

    root: filesystem root to read (tests use a fake tree); machine: `uname -m`, read
    from the running kernel when None."""
    board_name = _read(root, "tmp/sysinfo/board_name")
    model = _read(root, "proc/device-tree/model") or _read(root, "tmp/sysinfo/model")
    if machine is None:
        machine = os.uname().machine
    os_name = _os_name(root, model)
    found, how = _match(load_boards(dirs), board_name, model, machine)
    if found is None:
        log.warning("unknown board (board_name=%r, model=%r, machine=%s): using generic "
                    "defaults; add a file to board-configs/ to support it",
                    board_name, model, machine)
        found = dict(GENERIC, os=os_name, arch=machine or "unknown", ram_mb=_ram_mb(root),
                     lan_device="br-lan" if os_name == "openwrt" else "eth0")
    b = json.loads(json.dumps(found))  # deep copy: callers may edit their board
    b["detected"] = {"board_name": board_name, "model": model, "os": os_name,
                     "machine": machine, "matched_by": how}
    return b
