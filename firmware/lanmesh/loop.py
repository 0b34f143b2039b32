# The daemon's event loop on CPython: tasks, futures, timers, readiness callbacks on one
# selector, and a wake-up for other threads. CPython's asyncio does all this too, but
# importing it costs ~6.7 MB RSS (132 modules: inspect, ast, typing, streams, subprocess
# transports...) on a router budgeted 20 MB for everything; lanmesh uses only this subset,
# through lanmesh.aio, which keeps the API MicroPython's asyncio shares.
#
# Semantics follow asyncio where lanmesh relies on them: cancel() throws CancelledError
# into the task at its await and cancels what it awaits; run() cancels what is left;
# wait_for() cancels the inner task on timeout and waits for it to end.
import heapq
import selectors
import socket
import sys
import threading
import time
from collections import deque


class CancelledError(BaseException):
    pass


TimeoutError = TimeoutError     # the builtin, as asyncio's since 3.11
_local = threading.local()


def get_running_loop():
    loop = getattr(_local, "loop", None)
    if loop is None:
        raise RuntimeError("no running event loop")
    return loop


def _report(what, exc):
    import traceback            # only when something failed: it pulls in tokenize & co.
    sys.stderr.write(f"lanmesh.loop: {what}:\n"
                     + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))


class Future:
    __slots__ = ("_loop", "_done", "_result", "_exc", "_callbacks", "_cancelled")

    def __init__(self, loop):
        self._loop = loop
        self._done = self._cancelled = False
        self._result = self._exc = None
        self._callbacks = []

    def done(self):
        return self._done

    def cancelled(self):
        return self._cancelled

    def result(self):
        if not self._done:
            raise RuntimeError("result is not ready")
        if self._exc is not None:
            raise self._exc
        return self._result

    def exception(self):
        return self._exc

    def _finish(self):
        self._done = True
        callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            self._loop.call_soon(cb, self)

    def set_result(self, value):
        if self._done:
            raise RuntimeError("future already done")
        self._result = value
        self._finish()

    def set_exception(self, exc):
        if self._done:
            raise RuntimeError("future already done")
        self._exc = exc
        self._finish()

    def cancel(self):
        if self._done:
            return False
        self._cancelled, self._exc = True, CancelledError()
        self._finish()
        return True

    def add_done_callback(self, fn):
        if self._done:
            self._loop.call_soon(fn, self)
        else:
            self._callbacks.append(fn)

    def remove_done_callback(self, fn):
        n = len(self._callbacks)
        self._callbacks = [cb for cb in self._callbacks if cb != fn]
        return n - len(self._callbacks)

    def __await__(self):
        if not self._done:
            yield self
        return self.result()

    __iter__ = __await__


class Task(Future):
    __slots__ = ("_coro", "_waiting", "_must_cancel")

    def __init__(self, coro, loop):
        super().__init__(loop)
        self._coro, self._waiting, self._must_cancel = coro, None, False
        loop._tasks.add(self)
        loop.call_soon(self._step)

    def cancel(self):
        if self._done:
            return False
        self._must_cancel = True
        w, self._waiting = self._waiting, None
        if w is not None:
            w.remove_done_callback(self._wakeup)
            w.cancel()              # what the task awaits is cancelled with it
            self._loop.call_soon(self._step)
        return True

    def _wakeup(self, _fut):
        self._waiting = None
        self._step()

    def _step(self):
        if self._done or self._waiting is not None:
            return
        throw, self._must_cancel = self._must_cancel, False
        _local.task = self
        try:
            out = self._coro.throw(CancelledError()) if throw else self._coro.send(None)
        except StopIteration as stop:
            self._loop._tasks.discard(self)
            Future.set_result(self, stop.value)
        except CancelledError:
            self._loop._tasks.discard(self)
            Future.cancel(self)
        except BaseException as exc:
            self._loop._tasks.discard(self)
            if not self._callbacks:         # nobody will look: say so, as asyncio logs it
                _report("task failed", exc)
            Future.set_exception(self, exc)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        else:
            if isinstance(out, Future):
                if out._done:
                    self._loop.call_soon(self._step)
                else:
                    self._waiting = out
                    out.add_done_callback(self._wakeup)
                    if self._must_cancel:   # cancelled itself while running
                        self.cancel()
            elif out is None:               # a bare yield: give the others a turn
                self._loop.call_soon(self._step)
            else:
                self._must_cancel = False
                self._loop.call_soon(self._step)
                _report("task yielded a non-future", RuntimeError(repr(out)))
        finally:
            _local.task = None


class Handle:
    __slots__ = ("fn", "args", "cancelled", "when")

    def __init__(self, fn, args, when=0.0):
        self.fn, self.args, self.cancelled, self.when = fn, args, False, when

    def cancel(self):
        self.cancelled = True

    def __lt__(self, other):
        return self.when < other.when


class Loop:
    def __init__(self):
        self._ready = deque()
        self._timers = []
        self._dead_timers = 0
        self._tasks = set()
        self._sel = selectors.DefaultSelector()
        self._from_threads = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        for s in (self._wake_r, self._wake_w):
            s.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, (Handle(self._woken, ()), None))
        self.closed = False

    # --- scheduling ----------------------------------------------------------------------

    def time(self):
        return time.monotonic()

    def call_soon(self, fn, *args):
        h = Handle(fn, args)
        self._ready.append(h)
        return h

    def call_later(self, delay, fn, *args):
        h = Handle(fn, args, self.time() + max(0.0, delay))
        heapq.heappush(self._timers, h)
        return h

    def call_soon_threadsafe(self, fn, *args):
        if self.closed:
            raise RuntimeError("event loop is closed")
        self._from_threads.append((fn, args))
        try:
            self._wake_w.send(b"\0")
        except OSError:         # the pipe is full: a wake-up is already pending
            pass

    def _woken(self):
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass
        while self._from_threads:
            fn, args = self._from_threads.popleft()
            self._ready.append(Handle(fn, args))

    def create_future(self):
        return Future(self)

    def create_task(self, coro):
        return Task(coro, self)

    def run_in_executor(self, _executor, fn, *args):
        """fn(*args) on a new thread; a future for its result (tests and tools only)."""
        fut = self.create_future()

        def done(ok, value):
            if not fut.done():
                (fut.set_result if ok else fut.set_exception)(value)

        def work():
            try:
                value, ok = fn(*args), True
            except BaseException as exc:
                value, ok = exc, False
            self.call_soon_threadsafe(done, ok, value)
        threading.Thread(target=work, daemon=True).start()
        return fut

    # --- readiness -----------------------------------------------------------------------

    def _set_io(self, obj, slot, handle):
        try:
            key = self._sel.get_key(obj)
        except KeyError:
            key = None
        pair = list(key.data) if key else [None, None]
        had = pair[slot] is not None
        pair[slot] = handle
        mask = (selectors.EVENT_READ if pair[0] else 0) | (selectors.EVENT_WRITE if pair[1] else 0)
        if key is None:
            if mask:
                self._sel.register(obj, mask, tuple(pair))
        elif mask:
            self._sel.modify(obj, mask, tuple(pair))
        else:
            self._sel.unregister(obj)
        return had

    def add_reader(self, obj, fn, *args):
        self._set_io(obj, 0, Handle(fn, args))

    def remove_reader(self, obj):
        return self._set_io(obj, 0, None) if not self.closed else False

    def add_writer(self, obj, fn, *args):
        self._set_io(obj, 1, Handle(fn, args))

    def remove_writer(self, obj):
        return self._set_io(obj, 1, None) if not self.closed else False

    # --- running -------------------------------------------------------------------------

    def _run_once(self):
        timers = self._timers
        while timers and timers[0].cancelled:
            heapq.heappop(timers)
            self._dead_timers = max(0, self._dead_timers - 1)
        if self._ready:
            timeout = 0
        elif timers:
            timeout = max(0.0, timers[0].when - self.time())
        else:
            timeout = None
        for key, mask in self._sel.select(timeout):
            reader, writer = key.data
            if mask & selectors.EVENT_READ and reader is not None:
                self._ready.append(reader)
            if mask & selectors.EVENT_WRITE and writer is not None:
                self._ready.append(writer)
        now = self.time()
        while timers and timers[0].when <= now:
            h = heapq.heappop(timers)
            if not h.cancelled:
                self._ready.append(h)
        for _ in range(len(self._ready)):
            h = self._ready.popleft()
            if h.cancelled:
                continue
            try:
                h.fn(*h.args)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:    # one bad callback must not stop the loop
                _report(f"callback {getattr(h.fn, '__qualname__', h.fn)} failed", exc)
        if len(timers) > 64:                # re-armed timers leave cancelled handles behind
            live = [h for h in timers if not h.cancelled]
            if len(live) < len(timers) // 2:
                heapq.heapify(live)
                self._timers = live

    def run(self, coro):
        if getattr(_local, "loop", None) is not None:
            raise RuntimeError("run() cannot be called from a running event loop")
        _local.loop = self
        try:
            main = self.create_task(coro)
            main.add_done_callback(lambda _t: None)    # run() reports its outcome
            while not main.done():
                self._run_once()
            self._cancel_leftovers()
            return main.result()
        finally:
            _local.loop = None
            self.close()

    def _cancel_leftovers(self):
        left = [t for t in self._tasks if not t.done()]
        for t in left:
            t.cancel()
        while any(not t.done() for t in left):
            self._run_once()

    def close(self):
        self.closed = True
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()


def run(coro):
    return Loop().run(coro)


def create_task(coro):
    return get_running_loop().create_task(coro)


class _Yield:
    def __await__(self):
        yield None


async def sleep(seconds):
    if seconds <= 0:
        await _Yield()
        return
    loop = get_running_loop()
    fut = loop.create_future()
    h = loop.call_later(seconds, _resolve, fut)
    try:
        await fut
    finally:
        h.cancel()


def _resolve(fut, value=None):
    if not fut.done():
        fut.set_result(value)


async def wait_for(aw, timeout):
    """aw's result, or TimeoutError after `timeout` s (the inner task is cancelled and
    awaited first, as asyncio does)."""
    if timeout is None:
        return await aw
    loop = get_running_loop()
    task = aw if isinstance(aw, Future) else loop.create_task(aw)
    if not task.done():
        waiter = loop.create_future()
        task.add_done_callback(lambda _t: _resolve(waiter))
        h = loop.call_later(timeout, _resolve, waiter)
        try:
            await waiter
        except CancelledError:
            task.cancel()
            raise
        finally:
            h.cancel()
        if not task.done():
            task.cancel()
            try:
                await task
            except CancelledError:
                pass
            else:
                return task.result()
            raise TimeoutError()
    return task.result()


class Event:
    def __init__(self):
        self._set, self._waiters = False, []

    def is_set(self):
        return self._set

    def set(self):
        self._set = True
        waiters, self._waiters = self._waiters, []
        for f in waiters:
            _resolve(f, True)

    def clear(self):
        self._set = False

    async def wait(self):
        if self._set:
            return True
        fut = get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            return await fut
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)


class Lock:
    def __init__(self):
        self._locked, self._waiters = False, deque()

    def locked(self):
        return self._locked

    async def acquire(self):
        if not self._locked and not self._waiters:
            self._locked = True
            return True
        fut = get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except CancelledError:
            if fut.done() and not fut.cancelled():
                self._locked = False        # ownership was handed to us: pass it on
                self._wake_next()
            raise
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)
        self._locked = True
        return True

    def release(self):
        if not self._locked:
            raise RuntimeError("Lock is not acquired")
        self._locked = False
        self._wake_next()

    def _wake_next(self):
        for f in self._waiters:
            if not f.done():
                f.set_result(True)
                return

    async def __aenter__(self):
        await self.acquire()

    async def __aexit__(self, *exc):
        self.release()
