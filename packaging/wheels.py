# Pinned pure-Python wheels that packages carry inside themselves (the distributions'
# own copies are too old: Debian bookworm and OpenWrt 24.10/25.12 ship paho-mqtt 1.6).
# Downloaded once with pip, checked against pinned hashes, cached in .cache/wheels.
import hashlib
import os
import subprocess
import sys
import zipfile

# requirement -> (wheel file name, sha256); keep in step with pyproject.toml's pins.
PINS = {
    "paho-mqtt==2.2.0": ("paho_mqtt-2.2.0-py3-none-any.whl",
                         "3243630f7c2b05f71d1de8c6f59865eb04d3a59ae8c866e92377faed6753db4d"),
    "pyserial==3.5": ("pyserial-3.5-py2.py3-none-any.whl",
                      "c4451db6ba391ca6ca299fb3ec7bae67a5c55dde170964c7a14ceefec02f2cf0"),
}


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def default_cache(repo):
    return os.environ.get("LANMESH_WHEEL_CACHE") or os.path.join(repo, ".cache", "wheels")


def fetch(requirements, cache):
    """Paths of the pinned wheels for `requirements`, downloading what is missing."""
    if not requirements:
        return []
    os.makedirs(cache, exist_ok=True)
    missing = [r for r in requirements if not os.path.exists(os.path.join(cache, PINS[r][0]))]
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--only-binary=:all:", "--disable-pip-version-check",
                        "--dest", cache] + missing, check=True)
    paths = []
    for r in requirements:
        name, digest = PINS[r]
        p = os.path.join(cache, name)
        if not os.path.exists(p):
            raise SystemExit(f"{name}: not downloaded (is it still a pure-Python wheel?)")
        if _sha256(p) != digest:
            raise SystemExit(f"{p}: sha256 mismatch; delete it and rebuild")
        paths.append(p)
    return paths


def add_wheel(tree, wheel, dest, keep=None):
    """Unpack a wheel into a Tree under `dest`; `keep(name)` filters its files."""
    with zipfile.ZipFile(wheel) as z:
        for info in sorted(z.infolist(), key=lambda i: i.filename):
            name = info.filename
            top = name.split("/", 1)[0]
            if info.is_dir() or top.endswith(".data"):  # .data: scripts we do not ship
                continue
            if keep is not None and not keep(name):
                continue
            executable = (info.external_attr >> 16) & 0o111
            tree.add_file(f"{dest}/{name}", z.read(info), 0o755 if executable else 0o644)
