# Byte-reproducible archives: a tree of files becomes the same bytes on every build.
# Fixed mtime (SOURCE_DATE_EPOCH), owner 0/0 with no names, sorted entries, GNU tar,
# gzip with mtime 0 and no file name.
import contextlib
import gzip
import io
import os
import subprocess
import tarfile
import tempfile


def source_date_epoch(repo):
    """SOURCE_DATE_EPOCH, else the last commit's time, else 0: never the clock."""
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env:
        return int(env)
    try:
        out = subprocess.run(["git", "-C", repo, "log", "-1", "--format=%ct"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        return int(out) if out else 0
    except (OSError, ValueError, subprocess.SubprocessError):
        return 0


class Tree:
    """Package contents in memory: path ('usr/bin/x') -> (mode, bytes or None for a dir)."""

    def __init__(self):
        self.entries = {}

    def add_dir(self, path, mode=0o755):
        path = path.strip("/")
        parts = path.split("/")
        for i in range(1, len(parts)):  # parents first, without changing a set mode
            self.entries.setdefault("/".join(parts[:i]), (0o755, None))
        self.entries[path] = (mode, None)

    def add_file(self, path, data, mode=0o644):
        path = path.strip("/")
        if "/" in path:
            parent = path.rsplit("/", 1)[0]
            if parent not in self.entries:
                self.add_dir(parent)
        if isinstance(data, str):
            data = data.encode()
        self.entries[path] = (mode, data)

    def add_source_tree(self, src, dest, skip_dirs=("__pycache__",), skip_ext=(".pyc",)):
        """Copy a directory from disk; file modes are normalised (0755 if executable)."""
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames[:] = sorted(d for d in dirnames if d not in skip_dirs
                                 and not d.endswith(".egg-info"))
            rel = os.path.relpath(dirpath, src)
            base = dest if rel == "." else f"{dest}/{rel}"
            self.add_dir(base)
            for f in sorted(filenames):
                if f.endswith(skip_ext):
                    continue
                p = os.path.join(dirpath, f)
                with open(p, "rb") as fh:
                    data = fh.read()
                self.add_file(f"{base}/{f}", data, 0o755 if os.access(p, os.X_OK) else 0o644)

    def files(self):
        return {p: e for p, e in self.entries.items() if e[1] is not None}

    def write_to(self, root, mtime):
        """Materialise on disk (for dpkg-deb), with the same modes and mtimes."""
        for path in sorted(self.entries):
            mode, data = self.entries[path]
            full = os.path.join(root, path)
            if data is None:
                os.makedirs(full, exist_ok=True)
            else:
                with open(full, "wb") as f:
                    f.write(data)
            os.chmod(full, mode)
        for path in sorted(self.entries, reverse=True):  # children before parents
            os.utime(os.path.join(root, path), (mtime, mtime))
        os.utime(root, (mtime, mtime))


@contextlib.contextmanager
def staged(tree, mtime):
    """(scratch dir, root): the tree written under a temporary root for a packaging tool
    (dpkg-deb, apk mkpkg), with its modes and mtimes; all removed afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "root")
        os.mkdir(root)
        tree.write_to(root, mtime)
        yield tmp, root


def tar_bytes(members, mtime):
    """members: list of (name, mode, bytes or None for a dir), written in the given order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, mode, data in members:
            ti = tarfile.TarInfo(name)
            ti.mode, ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = mode, mtime, 0, 0, "", ""
            if data is None:
                ti.type = tarfile.DIRTYPE
                tar.addfile(ti)
            else:
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def tree_tar(tree, mtime):
    """A Tree as 'tar -cf - .' would write it: './' first, then sorted './path' names."""
    members = [("./", 0o755, None)]
    for path in sorted(tree.entries):
        mode, data = tree.entries[path]
        members.append((f"./{path}/" if data is None else f"./{path}", mode, data))
    return tar_bytes(members, mtime)


def gz(data):
    """gzip -n -9: no name, mtime 0, so equal input gives equal output."""
    return gzip.compress(data, compresslevel=9, mtime=0)
