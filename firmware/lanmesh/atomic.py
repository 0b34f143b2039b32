# Atomic state writes: write to a temp file in the same directory, fsync, rename, fsync
# the directory. A crash or power cut leaves either the old file or the new one. The temp
# file is created exclusively under an unpredictable name and never through a symlink, so
# someone who can write the directory cannot point our write somewhere else.
import os

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | \
    getattr(os, "O_CLOEXEC", 0)


def write_atomic(path, data, mode=0o644):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(d, exist_ok=True)
    base = os.path.basename(path)
    for _ in range(16):
        tmp = os.path.join(d, f".{base}.{os.urandom(8).hex()}.tmp")
        try:
            fd = os.open(tmp, _FLAGS, mode)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"{d}: no free temporary name")
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
