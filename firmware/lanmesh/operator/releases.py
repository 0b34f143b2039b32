# The controller's side of software updates (issue 15): a release is built from package
# files (one per format: ipk, apk, deb), described by a manifest signed with the fleet key,
# kept in the registry, and its chunks published retained on the broker
# (update/<version>/<format>/<index>, QoS 1). A release reaches a router when the controller
# assigns it: the signed manifest retained on node/<name>/update (QoS 1), which a router that
# is offline gets when it comes back. Clearing that topic withdraws the assignment.
import hashlib
import json
import os
import time

from ..errors import LanmeshError
from ..fleet import signing, topics
from ..release import manifest as mf

_SCHEMA = """
CREATE TABLE IF NOT EXISTS releases (
  version TEXT PRIMARY KEY, envelope BLOB NOT NULL, files TEXT NOT NULL, added REAL NOT NULL);
"""
_SUFFIX = {".ipk": "ipk", ".apk": "apk", ".deb": "deb"}


class ReleaseError(LanmeshError):
    pass


def package_version(path):
    """lanmesh's version from a package file name: lanmesh_0.2.0-r1_all.ipk,
    lanmesh-0.2.0-r1.apk, lanmesh_0.2.0-1_all.deb → '0.2.0' (the package release -rN/-N
    is packaging, not lanmesh's version: routers compare what the code says it is)."""
    name = os.path.basename(path)
    stem = name.rsplit(".", 1)[0]
    rest = stem[len("lanmesh") + 1:] if stem.startswith(("lanmesh_", "lanmesh-")) else ""
    version = rest.split("_")[0].split("-")[0]
    try:
        mf.parse_version(version)
    except ValueError:
        raise ReleaseError(f"{name}: cannot read lanmesh's version from the file name "
                           f"(give --version)") from None
    return version


def artefact(path, chunk_size=mf.DEFAULT_CHUNK):
    """The manifest entry of one package file: its name, size, SHA-256 and chunk digests."""
    size = os.path.getsize(path)
    if not 0 < size <= mf.MAX_ARTEFACT_BYTES:
        raise ReleaseError(f"{path}: {size} bytes (a release artefact is 1..{mf.MAX_ARTEFACT_BYTES})")
    whole, chunks = hashlib.sha256(), []
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk_size)
            if not b:
                break
            whole.update(b)
            chunks.append(hashlib.sha256(b).hexdigest())
    return {"file": os.path.basename(path), "size": size, "sha256": whole.hexdigest(),
            "chunk_size": chunk_size, "chunks": chunks}


def build_manifest(fleet, files, version=None, boards=(), min_from=None,
                   chunk_size=mf.DEFAULT_CHUNK):
    """(manifest doc, {format: path}) for package files, one per format."""
    by_fmt = {}
    for p in files:
        fmt = _SUFFIX.get(os.path.splitext(p)[1])
        if fmt is None:
            raise ReleaseError(f"{p}: not a package (.ipk, .apk or .deb)")
        if fmt in by_fmt:
            raise ReleaseError(f"two {fmt} files: {by_fmt[fmt]} and {p}")
        by_fmt[fmt] = p
    if not by_fmt:
        raise ReleaseError("no package files given")
    versions = {package_version(p) for p in by_fmt.values()} if version is None else {version}
    if len(versions) != 1:
        raise ReleaseError(f"the files are of different versions: {', '.join(sorted(versions))}")
    doc = {"kind": mf.KIND, "fleet": fleet, "version": versions.pop(), "boards": sorted(boards),
           "created": int(time.time()),
           "artefacts": {fmt: artefact(p, chunk_size) for fmt, p in sorted(by_fmt.items())}}
    if min_from:
        doc["min_from"] = min_from
    problems = mf.validate(doc)
    if problems:
        raise ReleaseError("; ".join(problems))
    return doc, by_fmt


def chunks_of(path, chunk_size):
    with open(path, "rb") as f:
        i = 0
        while True:
            b = f.read(chunk_size)
            if not b:
                return
            yield i, b
            i += 1


class Releases:
    """The registry's releases table."""

    def __init__(self, registry):
        self.db = registry.db
        with self.db:
            self.db.executescript(_SCHEMA)

    def check_new(self, version):
        if self.get(version) is not None:
            raise ReleaseError(f"release {version} exists already (versions only move forward)")

    def add(self, envelope, files):
        doc = json.loads(envelope)["doc"]
        self.check_new(doc["version"])
        with self.db:
            self.db.execute("INSERT INTO releases VALUES (?, ?, ?, ?)",
                            (doc["version"], envelope,
                             json.dumps({f: os.path.abspath(p) for f, p in files.items()}),
                             time.time()))

    def need(self, version):
        """(envelope, files) of release `version`; ReleaseError when there is none."""
        got = self.get(version)
        if got is None:
            raise ReleaseError(f"no release {version} (lanmesh fleet release add FILES…)")
        return got

    def get(self, version):
        row = self.db.execute("SELECT envelope, files FROM releases WHERE version = ?",
                              (version,)).fetchone()
        return (bytes(row[0]), json.loads(row[1])) if row else None

    def all(self):
        rows = self.db.execute("SELECT envelope, added FROM releases").fetchall()
        out = [(json.loads(e)["doc"], added) for e, added in rows]
        return sorted(out, key=lambda r: mf.parse_version(r[0]["version"]))


def add_release(fd, files, session, version=None, boards=(), min_from=None,
                chunk_size=mf.DEFAULT_CHUNK):
    """Sign, store and publish a release (chunks first, so that a router assigned to it
    finds them all). → the manifest doc."""
    doc, by_fmt = build_manifest(fd.registry.fleet, files, version, boards, min_from, chunk_size)
    envelope = signing.envelope_bytes(signing.sign(doc, signing.read_key(fd.key_path)))
    rel = Releases(fd.registry)
    rel.check_new(doc["version"])          # before publishing anything
    publish_chunks(session, fd.prefix(), doc, by_fmt)
    session.publish(topics.release(fd.prefix(), doc["version"]), envelope, retain=True)
    rel.add(envelope, by_fmt)
    return doc


def publish_chunks(session, prefix, doc, by_fmt):
    for fmt, path in by_fmt.items():
        a = doc["artefacts"][fmt]
        for i, data in chunks_of(path, a["chunk_size"]):
            session.publish(topics.chunk(prefix, doc["version"], fmt, i), data, retain=True)


def assign(fd, session, version, nodes):
    """Give `nodes` release `version`: its signed manifest, retained on each one's update
    topic. ReleaseError for an unknown version or node."""
    got = Releases(fd.registry).need(version)
    known = {n["name"] for n in fd.registry.nodes()}
    unknown = sorted(set(nodes) - known)
    if unknown:
        raise ReleaseError(f"not in the registry: {', '.join(unknown)}")
    for n in nodes:
        session.publish(topics.update(fd.prefix(), n), got[0], retain=True)


def withdraw(fd, session, nodes):
    for n in nodes:
        session.publish(topics.update(fd.prefix(), n), b"", retain=True)
