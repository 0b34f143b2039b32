# The asyncio subset CPython and MicroPython share, with their differences hidden, so the
# daemon's loop (and anything the cores need from it) runs unchanged on both interpreters.
# On MicroPython it is asyncio; on CPython it is lanmesh.loop, a small loop of our own
# (CPython's asyncio alone costs ~6.7 MB RSS). Everything else imports lanmesh.aio.
#
# Differences papered over here:
# - MicroPython's sleep()/sleep_ms() return a shared non-coroutine generator, which
#   wait_for() rejects ("coroutine expected"): ours are real coroutines on both.
# - MicroPython has no Queue, add_reader or call_soon_threadsafe: Queue is written on Event
#   (and used on both, so semantics match), wait_readable uses its IO queue, Signal uses
#   ThreadSafeFlag.
# - MicroPython's run() leaves unfinished tasks queued (they resume in the next run()):
#   ours cancels them at the end, as CPython's asyncio.run() does.
# - gather() is one implementation on both: children keep running when one fails (as in
#   CPython); cancelling the gather cancels its children.
import sys


if sys.implementation.name == "micropython":
    try:
        import asyncio as _aio
    except ImportError:  # MicroPython before 1.21
        import uasyncio as _aio
else:
    from . import loop as _aio      # our own loop: CPython's asyncio costs ~6.7 MB RSS

MICROPYTHON = sys.implementation.name == "micropython"

CancelledError = _aio.CancelledError
get_running_loop = getattr(_aio, "get_running_loop", None)
TimeoutError = _aio.TimeoutError  # CPython: the builtin; MicroPython: asyncio's own class
Event = _aio.Event
Lock = _aio.Lock


class QueueEmpty(Exception):
    pass


class QueueFull(Exception):
    pass


if MICROPYTHON:
    # Tasks made through create_task, so run() can cancel the ones still pending at exit.
    _live = []
    _prune_at = [32]

    def create_task(coro):
        t = _aio.create_task(coro)
        _live.append(t)
        if len(_live) > _prune_at[0]:
            _live[:] = [x for x in _live if not x.done()]
            _prune_at[0] = max(32, 2 * len(_live))
        return t

    async def _cancel_leftovers():
        pending = [t for t in _live if not t.done()]
        del _live[:]
        for t in pending:
            t.cancel()
        for t in pending:
            try:
                await t
            except BaseException:  # their outcome no longer matters; they must just end
                pass

    async def _main(coro):
        try:
            return await coro
        finally:
            await _cancel_leftovers()

    def run(coro):
        _aio.new_event_loop()  # drop whatever an earlier run() left queued
        del _live[:]
        return _aio.run(_main(coro))

    async def sleep_ms(ms):
        await _aio.sleep_ms(ms)

    async def sleep(seconds):
        await _aio.sleep_ms(int(seconds * 1000))

    async def wait_for_ms(aw, ms):
        return await _aio.wait_for_ms(aw, ms)

else:
    create_task = _aio.create_task
    run = _aio.run

    async def sleep_ms(ms):
        await _aio.sleep(ms / 1000)

    async def sleep(seconds):
        await _aio.sleep(seconds)

    async def wait_for_ms(aw, ms):
        return await _aio.wait_for(aw, None if ms is None else ms / 1000)


async def gather(*aws, return_exceptions=False):
    """Results in argument order. Without return_exceptions the first failure is raised
    and the other awaitables keep running; cancelling gather cancels them all."""
    n = len(aws)
    if not n:
        return []
    results = [None] * n
    state = [n, None]  # awaitables still running, first failure
    done = Event()

    async def one(i, aw):
        try:
            results[i] = await aw
        except BaseException as e:  # CancelledError included, as in CPython's gather
            if return_exceptions:
                results[i] = e
            elif state[1] is None:
                state[1] = e
                done.set()
        state[0] -= 1
        if not state[0]:
            done.set()

    tasks = [create_task(one(i, aw)) for i, aw in enumerate(aws)]
    try:
        await done.wait()
    except CancelledError:
        for t in tasks:
            t.cancel()
        raise
    if state[1] is not None:
        raise state[1]
    return results


class Queue:
    """FIFO between tasks (not threads: use Signal to cross from a thread). maxsize <= 0
    means unbounded. Waiters re-check after every wake-up, so one Event per direction
    is enough."""

    def __init__(self, maxsize=0):
        self.maxsize = maxsize
        self._items = []
        self._added = Event()
        self._taken = Event()

    def qsize(self):
        return len(self._items)

    def empty(self):
        return not self._items

    def full(self):
        return 0 < self.maxsize <= len(self._items)

    def put_nowait(self, item):
        if self.full():
            raise QueueFull()
        self._items.append(item)
        self._added.set()

    def get_nowait(self):
        if not self._items:
            raise QueueEmpty()
        item = self._items.pop(0)
        self._taken.set()
        return item

    async def put(self, item):
        while self.full():
            self._taken.clear()  # only while full, so no wake-up is lost
            await self._taken.wait()
        self.put_nowait(item)

    async def get(self):
        while not self._items:
            self._added.clear()
            await self._added.wait()
        return self.get_nowait()


if MICROPYTHON and hasattr(_aio, "ThreadSafeFlag"):

    class Signal:
        """Wakes one waiting task; set() may be called from any thread. Sets made while
        nobody waits are remembered (once)."""

        def __init__(self):
            self._flag = _aio.ThreadSafeFlag()

        def set(self):
            self._flag.set()

        async def wait(self):
            await self._flag.wait()

        async def wait_ms(self, ms):
            """True when set, False when `ms` passed first."""
            try:
                await _aio.wait_for_ms(self._flag.wait(), ms)
                return True
            except _aio.TimeoutError:
                return False

elif MICROPYTHON:

    class Signal:
        """Fallback without ThreadSafeFlag: poll a plain flag."""

        def __init__(self):
            self._set = False

        def set(self):
            self._set = True

        async def wait(self):
            while not self._set:
                await _aio.sleep_ms(10)
            self._set = False

        async def wait_ms(self, ms):
            """True when set, False when `ms` passed first."""
            from .ticks import ticks_add, ticks_diff, ticks_ms
            end = ticks_add(ticks_ms(), ms)
            while not self._set:
                left = ticks_diff(end, ticks_ms())
                if left <= 0:
                    return False
                await _aio.sleep_ms(min(10, left))
            self._set = False
            return True

else:

    class Signal:
        """Wakes a waiting task; set() may be called from any thread. Sets made while
        nobody waits are remembered (once). Waiting costs one future and, with a timeout,
        one timer handle: no task per wait (the mesh loop waits here several times a second)."""

        def __init__(self):
            self._set = False
            self._loop = None
            self._fut = None

        def set(self):
            # Flag first, then read the loop; wait_ms() does the reverse. Under the GIL one
            # of the two always sees the other, so a wake-up cannot be lost.
            self._set = True
            loop = self._loop
            if loop is not None:
                try:
                    loop.call_soon_threadsafe(self._wake)
                except RuntimeError:  # loop closed; the flag is kept for the next one
                    pass

        def _wake(self):
            # only a set flag completes the wait: a stale _wake (its set() already consumed)
            # must not end a later wait
            fut = self._fut
            if self._set and fut is not None and not fut.done():
                fut.set_result(None)

        @staticmethod
        def _expire(fut):
            if not fut.done():
                fut.set_result(None)

        async def wait(self):
            await self.wait_ms(None)

        async def wait_ms(self, ms):
            """True when set, False when `ms` passed first (None: no timeout)."""
            loop = _aio.get_running_loop()
            self._loop = loop
            if not self._set:
                fut = self._fut = loop.create_future()
                timer = None if ms is None else loop.call_later(ms / 1000, self._expire, fut)
                try:
                    await fut
                finally:
                    self._fut = None
                    if timer is not None:
                        timer.cancel()
                if not self._set:
                    return False
            self._set = False
            return True


if MICROPYTHON:
    try:
        from asyncio import core as _core
    except ImportError:
        from uasyncio import core as _core

    def _io_wait(obj):
        # A generator, not a coroutine: parking the task on the IO queue needs a bare
        # yield, which async def cannot hold on CPython (where this is never called).
        yield _core._io_queue.queue_read(obj)

    def _io_wait_write(obj):
        yield _core._io_queue.queue_write(obj)

    async def wait_writable(obj):
        """Returns when obj (a socket) is writable. One waiter per object."""
        await _io_wait_write(obj)

    async def wait_readable(obj):
        """Returns when obj (socket, file object or fd) is readable. One waiter per object."""
        if hasattr(_core, "_io_queue"):
            await _io_wait(obj)
            return
        import select

        p = select.poll()
        p.register(obj, select.POLLIN)
        try:
            while not p.poll(0):
                await _aio.sleep_ms(10)
        finally:
            p.unregister(obj)

else:

    async def _wait_io(obj, add, remove):
        fut = _aio.get_running_loop().create_future()

        def ready():
            if not fut.done():
                fut.set_result(None)

        add(obj, ready)
        try:
            await fut
        finally:
            remove(obj)

    async def wait_readable(obj):
        """Returns when obj (socket, file object or fd) is readable. One waiter per object."""
        loop = _aio.get_running_loop()
        await _wait_io(obj, loop.add_reader, loop.remove_reader)

    async def wait_writable(obj):
        """Returns when obj (a socket) is writable. One waiter per object."""
        loop = _aio.get_running_loop()
        await _wait_io(obj, loop.add_writer, loop.remove_writer)


class _Watch:
    __slots__ = ("close",)


if MICROPYTHON:

    class Timer:
        """Calls callback() on the loop once, `ms` after arm_ms(); arming again moves it,
        cancel() drops it. callback must not block."""

        def __init__(self, callback):
            self._callback = callback
            self._task = None

        def arm_ms(self, ms):
            self.cancel()
            self._task = create_task(self._later(ms))

        async def _later(self, ms):
            await _aio.sleep_ms(ms)
            self._task = None
            self._callback()

        def cancel(self):
            if self._task is not None:
                self._task.cancel()
                self._task = None

else:

    class Timer:
        """Calls callback() on the loop once, `ms` after arm_ms(); arming again moves it,
        cancel() drops it. callback must not block. One timer handle, no task."""

        def __init__(self, callback):
            self._callback = callback
            self._handle = None
            self._loop = _aio.get_running_loop()

        def arm_ms(self, ms):
            if self._handle is not None:
                self._handle.cancel()
            self._handle = self._loop.call_later(ms / 1000, self._fire)

        def _fire(self):
            self._handle = None
            self._callback()

        def cancel(self):
            if self._handle is not None:
                self._handle.cancel()
                self._handle = None


if MICROPYTHON:

    def on_readable(obj, callback):
        """Call callback() on the loop whenever obj is readable, until .close() of the
        returned watch. callback must drain obj and must not block."""
        async def pump():
            while True:
                await wait_readable(obj)
                callback()

        task = create_task(pump())
        w = _Watch()
        w.close = task.cancel
        return w

else:

    def on_readable(obj, callback):
        """Call callback() on the loop whenever obj is readable, until .close() of the
        returned watch. callback must drain obj (readiness is level-triggered) and must not
        block. Registered once: no task, future or epoll change per datagram."""
        loop = _aio.get_running_loop()
        loop.add_reader(obj, callback)
        w = _Watch()
        w.close = lambda: loop.remove_reader(obj)
        return w

