# Child processes for the daemon without `subprocess`: that module, with the locale,
# contextlib and warnings modules it pulls in, costs ~0.5 MB RSS on a 128 MB router, and
# the daemon needs only two things from it — run a short command with input, output and a
# timeout (nft, uci), and start a long-lived child (wireguard-go). os.posix_spawnp does
# both in one vfork-like step. The child gets only what is dup2'ed onto 0, 1 and 2: our own
# descriptors are non-inheritable (CPython's default), and inheritable ones the daemon was
# started with are closed in the child, as subprocess's close_fds does.
import os
import select
import signal
import time


def _closing(actions):
    """actions + a close for every other inheritable descriptor of ours (fd ≥ 3)."""
    keep = {a[1] for a in actions} | {0, 1, 2}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                if os.get_inheritable(fd):
                    actions.append((os.POSIX_SPAWN_CLOSE, fd))
            except OSError:                 # the directory's own descriptor, now closed
                pass
    return actions


class Timeout(OSError):
    """The command did not finish in time (it was killed)."""


class Failed(OSError):
    """check=True and the command exited non-zero."""

    def __init__(self, argv, result):
        super().__init__(f"{argv[0]} exited {result.returncode}: "
                         f"{(result.stderr or result.stdout).strip()[:200]}")
        self.result = result


class Result:
    __slots__ = ("returncode", "stdout", "stderr")

    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


class Child:
    """A started process: pid, poll(), wait(), returncode — what the daemon used of Popen."""

    def __init__(self, pid):
        self.pid = pid
        self.returncode = None

    def poll(self):
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self):
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def start(argv, env=None, stdout=None, stderr=None, own_group=False, new_session=False):
    """Starts argv (searched on PATH) with stdin from /dev/null and stdout/stderr on the
    given descriptors (else the daemon's); OSError (FileNotFoundError…) if it cannot.
    new_session: a process that outlives the daemon and its service's restart (setsid)."""
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        actions = [(os.POSIX_SPAWN_DUP2, null, 0)]
        actions += [(os.POSIX_SPAWN_DUP2, fd, n) for fd, n in ((stdout, 1), (stderr, 2))
                    if fd is not None]
        kw = {"setsid": True} if new_session else {"setpgroup": 0} if own_group else {}
        return Child(os.posix_spawnp(argv[0], list(argv), os.environ if env is None else env,
                                     file_actions=_closing(actions), **kw))
    finally:
        os.close(null)


def run(argv, input=None, timeout=30, check=False, env=None):
    """Runs argv to completion: Result(returncode, stdout, stderr) as text. Timeout (after
    killing it) if it takes longer than timeout seconds; Failed if check and it failed."""
    fds = [os.pipe() for _ in range(3)]          # stdin, stdout, stderr: (read, write)
    try:
        actions = [(os.POSIX_SPAWN_DUP2, fds[0][0], 0), (os.POSIX_SPAWN_DUP2, fds[1][1], 1),
                   (os.POSIX_SPAWN_DUP2, fds[2][1], 2)]
        pid = os.posix_spawnp(argv[0], list(argv), os.environ if env is None else env,
                              file_actions=_closing(actions))
    except BaseException:
        for r, w in fds:
            os.close(r)
            os.close(w)
        raise
    for fd in (fds[0][0], fds[1][1], fds[2][1]):
        os.close(fd)
    child = Child(pid)
    try:
        out, err = _exchange(fds[0][1], fds[1][0], fds[2][0],
                             (input or "").encode(), time.monotonic() + timeout)
    except Timeout:
        os.kill(pid, signal.SIGKILL)
        child.wait()
        raise Timeout(f"{argv[0]} did not finish within {timeout:g} s") from None
    result = Result(child.wait(), out.decode(errors="replace"), err.decode(errors="replace"))
    if check and result.returncode != 0:
        raise Failed(argv, result)
    return result


def _exchange(stdin, stdout, stderr, data, deadline):
    """Writes data to the child's stdin and reads its stdout and stderr to their ends;
    closes all three. Timeout at the deadline."""
    bufs = {stdout: bytearray(), stderr: bytearray()}
    poller = select.poll()
    if data:
        os.set_blocking(stdin, False)
        poller.register(stdin, select.POLLOUT)
    else:
        os.close(stdin)
        stdin = None
    for fd in bufs:
        poller.register(fd, select.POLLIN)
    open_fds = set(bufs) | ({stdin} if stdin is not None else set())
    view = memoryview(data)
    try:
        while open_fds:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout()
            for fd, ev in poller.poll(left * 1000):
                if fd == stdin:
                    try:
                        view = view[os.write(fd, view[:65536]):]
                    except BrokenPipeError:         # the child stopped reading: fine
                        view = view[:0]
                    if not view:
                        poller.unregister(fd)
                        open_fds.discard(fd)
                        os.close(fd)
                        stdin = None
                    continue
                chunk = os.read(fd, 65536)
                if chunk:
                    bufs[fd] += chunk
                else:
                    poller.unregister(fd)
                    open_fds.discard(fd)
        return bytes(bufs[stdout]), bytes(bufs[stderr])
    finally:
        for fd in (stdin, stdout, stderr):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
