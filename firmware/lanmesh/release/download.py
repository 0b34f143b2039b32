# An artefact being fetched, on disk: <dir>/<file>.part, written chunk by chunk at its
# offset, each chunk checked against the SHA-256 the signed manifest lists for it before a
# byte is written. Resumable without a journal: after a restart (or kill -9) the chunks
# already in the file are hashed again, and those that match are done. RAM: one chunk at a
# time (≤ 64 KiB), never the artefact. When every chunk is in, the whole file is hashed
# once more against the manifest's artefact digest, fsync'ed and renamed to <dir>/<file>.
import os

try:
    from _sha256 import sha256      # not hashlib: it maps OpenSSL (~3 MB RSS) for one hash
except ImportError:
    try:
        from _sha2 import sha256    # CPython ≥ 3.12
    except ImportError:
        from hashlib import sha256

from .manifest import ReleaseRefused


def file_sha256(path, block=64 * 1024):
    h = sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(block)
            if not b:
                return h.hexdigest()
            h.update(b)


class Download:
    """The artefact of `release` (a manifest.Release) into `directory`."""

    def __init__(self, release, directory):
        self.release = release
        self.dir = directory
        name = release.artefact["file"]
        self.path = os.path.join(directory, name)
        self.part = self.path + ".part"
        self.have = set()               # chunk indexes verified on disk
        self.bytes_received = 0         # chunk bytes taken from the broker (this process)

    def resume(self):
        """Finds what is already on disk; → True when the whole artefact is there."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        if os.path.exists(self.path) and file_sha256(self.path) == self.release.artefact["sha256"]:
            self.have = set(range(self.release.chunks))
            return True
        self.have = set()
        try:
            with open(self.part, "rb") as f:
                for i, want in enumerate(self.release.artefact["chunks"]):
                    data = f.read(self.release.chunk_length(i))
                    if len(data) == self.release.chunk_length(i) and sha256(data).hexdigest() == want:
                        self.have.add(i)
        except FileNotFoundError:
            pass
        return False

    def missing(self):
        return [i for i in range(self.release.chunks) if i not in self.have]

    def take(self, index, data):
        """One chunk from the broker. ReleaseRefused if it is not the chunk the manifest
        signed (wrong length or digest): the artefact on the broker is bad, not late."""
        r = self.release
        if not 0 <= index < r.chunks:
            raise ReleaseRefused(f"chunk {index} of release {r.version}: the manifest has "
                                 f"{r.chunks} chunks")
        want = r.chunk_length(index)
        if len(data) != want:
            raise ReleaseRefused(f"chunk {index} of release {r.version} is {len(data)} bytes, "
                                 f"the manifest says {want} ({'truncated' if len(data) < want else 'oversize'})")
        if sha256(data).hexdigest() != r.artefact["chunks"][index]:
            raise ReleaseRefused(f"chunk {index} of release {r.version} does not match the "
                                 f"manifest's SHA-256 (corrupted or not this release's)")
        if index in self.have:
            return
        fd = os.open(self.part, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, data, index * r.artefact["chunk_size"])
        finally:
            os.close(fd)
        self.have.add(index)
        self.bytes_received += len(data)

    def finish(self):
        """Every chunk is in: → the artefact's path, verified whole and durable.
        ReleaseRefused if the whole does not hash to the manifest's digest."""
        r = self.release
        with open(self.part, "r+b") as f:
            f.truncate(r.artefact["size"])
            f.flush()
            os.fsync(f.fileno())
        digest = file_sha256(self.part)
        if digest != r.artefact["sha256"]:
            self.discard()
            raise ReleaseRefused(f"release {r.version}: the artefact's SHA-256 is not the "
                                 f"manifest's (each chunk matched: the manifest is inconsistent)")
        os.replace(self.part, self.path)
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return self.path

    def discard(self):
        for p in (self.part, self.path):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        self.have = set()
