# One daemon per tunnel interface: an exclusive flock on <run_dir>/<ifname>.lock, taken
# before anything touches the data plane and held for the process's life. The kernel drops
# it when the process dies, even by kill -9, so a restart after a crash is never locked out,
# and a second `lanmesh run` on the same interface exits with a clear message instead of
# adopting the live daemon's wireguard-go and tearing its routes down.
import fcntl
import os

from .errors import LanmeshError


class AlreadyRunning(LanmeshError):
    pass


def acquire(run_dir, ifname):
    """→ the locked fd (keep it open); AlreadyRunning when another process holds it."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, ifname + ".lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise AlreadyRunning(f"{ifname}: another `lanmesh run` (pid {holder}) is driving this "
                             f"interface ({path}); nothing was touched") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
