# A signed release manifest (issue 15; FORMATS "Release manifest"): which version, for which
# fleet and boards, upgrading from which versions, and per package format the artefact's
# size, SHA-256 and the SHA-256 of each of its chunks. Signed with the fleet's Ed25519 key
# in the same envelope as network documents; "kind" keeps the two apart (a manifest is
# never a valid network document, nor the reverse). The router judges a manifest here and
# nowhere else: every refusal is one sentence for `reported`, and nothing is fetched,
# written or installed for a refused one.
from .. import boundjson
from ..errors import LanmeshError
from ..fleet import signing

KIND = "lanmesh-release"
FORMATS = ("ipk", "apk", "deb")
MAX_MANIFEST_BYTES = 64 * 1024
MAX_ARTEFACT_BYTES = 8 * 1024 * 1024     # a 16 MB-flash router holds two of these and more
MIN_CHUNK, MAX_CHUNK = 1024, 64 * 1024   # a chunk is one MQTT message, held once in RAM
DEFAULT_CHUNK = 32 * 1024
_HEX = frozenset("0123456789abcdef")


class ReleaseRefused(LanmeshError):
    """A manifest (or an artefact of it) this router will not install; str() is why."""


def parse_version(text):
    """'0.2.0-r1' / '0.2.0' / '0.2' → a comparable tuple ((0, 2, 0), 1); ValueError else.
    The -rN is the package release (OpenWrt's PKG_RELEASE); without it, it is 0."""
    if not isinstance(text, str) or not 0 < len(text) <= 32:
        raise ValueError("a version is a string like 0.2.0 or 0.2.0-r1")
    base, _, rel = text.partition("-r")
    parts = base.split(".")
    if not 1 <= len(parts) <= 4 or not all(p.isdigit() and len(p) <= 6 for p in parts) or \
            (rel and not (rel.isdigit() and len(rel) <= 6)) or (_ and not rel):
        raise ValueError(f"version {text!r} is not like 0.2.0 or 0.2.0-r1")
    nums = tuple(int(p) for p in parts) + (0,) * (4 - len(parts))
    return nums, int(rel or 0)


def _is_sha256(v):
    return isinstance(v, str) and len(v) == 64 and _HEX.issuperset(v)


def _int(v, lo, hi):
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def validate(doc):
    """Problems with a manifest's shape (empty list: well formed)."""
    if doc.get("kind") != KIND:
        return [f'not a release manifest ("kind" is not "{KIND}")']
    problems = []
    for key in ("fleet", "version"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            problems.append(f"{key}: missing")
    for key in ("version", "min_from"):
        if doc.get(key) is not None:
            try:
                parse_version(doc[key])
            except ValueError as e:
                problems.append(f"{key}: {e}")
    boards = doc.get("boards", [])
    if not isinstance(boards, list) or not all(isinstance(b, str) and b for b in boards):
        problems.append("boards: a list of board ids (empty: every board)")
    arts = doc.get("artefacts")
    if not isinstance(arts, dict) or not arts:
        return problems + ["artefacts: at least one package format"]
    for fmt, a in arts.items():
        if fmt not in FORMATS:
            problems.append(f"artefacts: unknown format {fmt!r} (one of {', '.join(FORMATS)})")
            continue
        problems += [f"artefacts.{fmt}: {p}" for p in _artefact_problems(a)]
    return problems


def _artefact_problems(a):
    if not isinstance(a, dict):
        return ["not an object"]
    out = []
    name = a.get("file")
    if not isinstance(name, str) or not 0 < len(name) <= 128 or "/" in name or name[0] == ".":
        out.append("file: a plain file name")
    if not _int(a.get("size"), 1, MAX_ARTEFACT_BYTES):
        out.append(f"size: 1..{MAX_ARTEFACT_BYTES} bytes")
    if not _is_sha256(a.get("sha256")):
        out.append("sha256: 64 lower-case hex digits")
    if not _int(a.get("chunk_size"), MIN_CHUNK, MAX_CHUNK):
        out.append(f"chunk_size: {MIN_CHUNK}..{MAX_CHUNK}")
    chunks = a.get("chunks")
    if not isinstance(chunks, list) or not all(_is_sha256(c) for c in chunks):
        out.append("chunks: a list of SHA-256 hex digests")
    elif not out and len(chunks) != -(-a["size"] // a["chunk_size"]):
        out.append(f"chunks: {len(chunks)} digests for {a['size']} bytes in "
                   f"{a['chunk_size']}-byte chunks")
    return out


class Release:
    """A verified manifest, judged fit for this router: .version, .artefact (this
    platform's dict), .envelope (the signed bytes, kept to resume after a restart)."""
    __slots__ = ("doc", "version", "fmt", "artefact", "envelope")

    def __init__(self, doc, fmt, envelope):
        self.doc, self.fmt, self.envelope = doc, fmt, envelope
        self.version = doc["version"]
        self.artefact = doc["artefacts"][fmt]

    def chunk_length(self, index):
        a = self.artefact
        return min(a["chunk_size"], a["size"] - index * a["chunk_size"])

    @property
    def chunks(self):
        return len(self.artefact["chunks"])


def open_release(data, pubkey, fleet, fmt, board, running, exact=False):
    """Signed manifest bytes → Release for this router (fleet name, package format, board
    id, running version); ReleaseRefused(reason) otherwise. exact: the running version's
    own release (the package a rollback reinstalls), not a newer one."""
    try:
        doc = signing.open_envelope(data, pubkey, MAX_MANIFEST_BYTES)
    except signing.SignatureError as e:
        raise ReleaseRefused(str(e)) from None
    problems = validate(doc)
    if problems:
        raise ReleaseRefused("invalid manifest: " + "; ".join(problems[:4]))
    v = doc["version"]
    if doc["fleet"] != fleet:
        raise ReleaseRefused(f"release {v} is for fleet {doc['fleet']!r}, this router is in {fleet!r}")
    if exact:
        if parse_version(v) != parse_version(running):
            raise ReleaseRefused(f"release {v} is not the running {running}")
    elif parse_version(v) <= parse_version(running):
        raise ReleaseRefused(f"release {v} is not newer than the running {running}")
    elif doc.get("min_from") and parse_version(running) < parse_version(doc["min_from"]):
        raise ReleaseRefused(f"release {v} upgrades only from {doc['min_from']} or later "
                             f"(this router runs {running})")
    boards = doc.get("boards") or []
    if boards and board not in boards:
        raise ReleaseRefused(f"release {v} is not for this board ({board}; it names "
                             f"{', '.join(boards[:5])})")
    if fmt not in doc["artefacts"]:
        raise ReleaseRefused(f"release {v} has no {fmt} package (it has "
                             f"{', '.join(sorted(doc['artefacts']))})")
    return Release(doc, fmt, bytes(data))


def peek_version(data):
    """The version a payload claims, unverified, for the reason in `reported` (or None)."""
    try:
        env = boundjson.loads(data, MAX_MANIFEST_BYTES, "manifest")
        v = env["doc"]["version"]
        return v if isinstance(v, str) and len(v) <= 32 else None
    except (ValueError, KeyError, TypeError):
        return None
