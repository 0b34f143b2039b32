# The one place data-plane work runs: a worker thread that owns the backend's slow calls
# (netlink, UAPI, nft, sysctls, DNS for endpoint names, wireguard-go start-up), so the loop
# that runs the mesh's probes never waits for them. Tailscale's Router.Set, as a thread:
# - submit(state) hands over the latest desired LinkState; a newer one replaces one that has
#   not started yet (a burst of route changes is one apply);
# - a failed apply is retried with backoff (1 s, doubling to 60 s) until one succeeds;
# - the last state is re-applied every REAPPLY_S: the backends diff against what the OS has,
#   so drift (someone's `wg set`, a wireguard-go restarted by hand) is repaired and endpoint
#   names are resolved again (a dynamic-DNS site that moved is followed);
# - backend.supervise() (wireguard-go died, the link vanished) runs here too, every second.
# Results go back to the loop through an aio.Signal: wait(ticket) for a document apply that
# must know (commit-confirm, all-or-nothing), or nothing for route changes.
import collections
import os
import threading
import time

from . import aio
from .errors import LanmeshError

REAPPLY_S = float(os.environ.get("LANMESH_REAPPLY_S") or 30)   # drift repair, DNS re-resolution
SUPERVISE_S = 1.0
RETRY_MAX_S = 60.0


class Applier:
    def __init__(self, backend, log, reapply_s=REAPPLY_S, supervise_s=SUPERVISE_S):
        self.backend = backend
        self.log = log
        self.reapply_s = reapply_s
        self.supervise_s = supervise_s
        self.applied = None             # the LinkState the OS last matched
        self.failures = 0
        self.last_error = None
        self.longest_apply_s = 0.0
        self.last_latency_s = None      # submit() → the OS matches it, for the last submit
        self._cond = threading.Condition()
        self._pending = None            # (ticket, state) not started yet
        self._want = None               # the latest desired state (retried, re-applied)
        self._tickets = 0
        self._results = collections.deque()
        self._waiters = set()           # one aio.Signal per waiting coroutine (single-waiter)
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="lanmesh-applier", daemon=True)
        self._thread.start()

    # -- the loop's side ----------------------------------------------------------------------
    def submit(self, state):
        """Apply `state` soon, off the loop; → a ticket for wait()."""
        with self._cond:
            self._tickets += 1
            self._pending = (self._tickets, state, time.monotonic())
            self._want = state
            self._cond.notify()
            return self._tickets

    async def wait(self, ticket):
        """The outcome of submit()'s ticket: None on success, else the LanmeshError. A newer
        submit that replaced it before it started answers for it. Any number of coroutines
        may wait at once (a reload and a fleet document)."""
        signal = aio.Signal()
        with self._cond:
            self._waiters.add(signal)
        try:
            while True:
                with self._cond:
                    for t, err in self._results:
                        if t >= ticket:
                            return err
                await signal.wait_ms(None)
        finally:
            with self._cond:
                self._waiters.discard(signal)

    def forget(self):
        """Stop retrying and re-applying (the data plane was taken down on purpose)."""
        with self._cond:
            self._pending = self._want = self.applied = None

    def close(self):
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(30)

    # -- the worker ---------------------------------------------------------------------------
    def _run(self):
        next_supervise = time.monotonic() + self.supervise_s
        retry_at, backoff = None, 0.0
        last_ok = time.monotonic()
        while True:
            with self._cond:
                while not self._stop and self._pending is None:
                    now = time.monotonic()
                    due = min(next_supervise, retry_at or float("inf"),
                              last_ok + self.reapply_s if self.applied is not None else float("inf"))
                    if due <= now:
                        break
                    self._cond.wait(due - now)
                if self._stop:
                    return
                job, self._pending = self._pending, None
                want = self._want
            now = time.monotonic()
            if job is None and now >= next_supervise:
                next_supervise = now + self.supervise_s
                self._supervise()
                if retry_at is None and now < last_ok + self.reapply_s:
                    continue
            if job is None and retry_at is not None and now < retry_at:
                continue
            ticket, state, since = job if job is not None else (None, want, None)
            if state is None:
                retry_at = None
                continue
            err = self._apply(state)
            if err is None:
                retry_at, backoff, last_ok = None, 0.0, time.monotonic()
                if since is not None:
                    self.last_latency_s = last_ok - since
            else:
                backoff = min(RETRY_MAX_S, backoff * 2 or 1.0)
                retry_at = time.monotonic() + backoff
            if ticket is not None:
                with self._cond:
                    self._results.append((ticket, err))
                    while len(self._results) > 16:
                        self._results.popleft()
                    waiters = list(self._waiters)
                for w in waiters:
                    w.set()

    def _apply(self, state):
        t = time.monotonic()
        try:
            self.backend.apply(state)
        except LanmeshError as e:
            self.failures += 1
            self.last_error = str(e)
            self.log.error("data plane apply failed (retrying with backoff): %s", e)
            return e
        except Exception as e:          # a bug must not kill the worker: report, retry
            self.failures += 1
            self.last_error = f"{type(e).__name__}: {e}"
            self.log.exception("data plane apply crashed")
            return LanmeshError(self.last_error)
        finally:
            self.longest_apply_s = max(self.longest_apply_s, time.monotonic() - t)
        self.applied = state
        self.last_error = None
        return None

    def _supervise(self):
        try:
            if self.backend.supervise():
                self.log.warning("data plane repaired")
                self.applied, self.last_error = self._want, None
        except LanmeshError as e:
            self.log.error("data plane repair failed, retrying: %s", e)
        except Exception:
            self.log.exception("data plane supervision crashed")
