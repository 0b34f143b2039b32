# Exercises every lanmesh.aio function and prints one line per observation. Runs unchanged
# under CPython and MicroPython; tests/test_aio.py asserts the two outputs are identical.
# Outcomes depend only on deadline order (margins of 20x or more), never on machine speed.
# Usage: aio_script.py [udp_port]   (the port must be free on 127.0.0.1)
import sys

_here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
sys.path.insert(0, _here + "/../firmware")

import socket
import time

from lanmesh import aio
from lanmesh.ticks import ticks_diff, ticks_ms

try:
    import _thread
except ImportError:
    _thread = None

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 47391


def name(e):
    if isinstance(e, aio.TimeoutError):
        return "TimeoutError"
    if isinstance(e, aio.CancelledError):
        return "CancelledError"
    return type(e).__name__


async def noter(log, tag, ms):
    await aio.sleep_ms(ms)
    log.append(tag)
    return tag


async def ordering():
    log = []
    for i in range(4):
        aio.create_task(noter(log, "now%d" % i, 0))
    for tag, ms in (("c", 150), ("a", 50), ("b", 100)):
        aio.create_task(noter(log, tag, ms))
    await aio.sleep_ms(0)
    await aio.sleep_ms(0)
    print("ordering soon", log)
    await aio.sleep_ms(250)
    print("ordering all", log)


async def sleeping():
    t0 = ticks_ms()
    await aio.sleep_ms(30)
    print("sleep_ms waited", ticks_diff(ticks_ms(), t0) >= 29)
    t0 = ticks_ms()
    await aio.sleep(0.03)
    print("sleep waited", ticks_diff(ticks_ms(), t0) >= 29)


async def raiser(ms, exc):
    await aio.sleep_ms(ms)
    raise exc


async def timeouts():
    for label, aw in (("sleep_ms", aio.sleep_ms(2000)), ("sleep", aio.sleep(2))):
        try:
            await aio.wait_for_ms(aw, 40)
            print("wait_for_ms", label, "finished?!")
        except aio.TimeoutError as e:
            print("wait_for_ms", label, "->", name(e))
    print("wait_for_ms in time ->", await aio.wait_for_ms(noter([], "value", 10), 2000))
    print("wait_for_ms no limit ->", await aio.wait_for_ms(noter([], "value", 10), None))
    await aio.wait_for_ms(aio.sleep_ms(5), 2000)
    print("wait_for_ms sleep in time -> ok")
    try:
        await aio.wait_for_ms(raiser(5, ValueError("bad")), 2000)
    except ValueError as e:
        print("wait_for_ms inner error ->", name(e), e)
    seen = []

    async def slow():
        try:
            await aio.sleep_ms(2000)
        except aio.CancelledError:
            seen.append("inner cancelled")
            raise

    try:
        await aio.wait_for_ms(slow(), 30)
    except aio.TimeoutError as e:
        print("wait_for_ms timeout cancels inner", seen, name(e))


async def cancelling():
    log = []

    async def worker():
        try:
            await aio.sleep_ms(2000)
            log.append("not reached")
        finally:
            log.append("finally ran")

    t = aio.create_task(worker())
    await aio.sleep_ms(10)
    print("cancel returns", bool(t.cancel()))
    try:
        await t
    except aio.CancelledError as e:
        print("awaiting cancelled task ->", name(e), log)
    print("cancelled task done", t.done())

    async def stubborn():
        try:
            await aio.sleep_ms(2000)
        except aio.CancelledError:
            return "caught"

    t = aio.create_task(stubborn())
    await aio.sleep_ms(10)
    t.cancel()
    print("task that catches cancel ->", await t)
    t = aio.create_task(noter(log, "x", 0))
    await aio.sleep_ms(10)
    print("cancel finished task", bool(t.cancel()))


async def queues():
    q = aio.Queue(2)
    print("queue new", q.maxsize, q.qsize(), q.empty(), q.full())
    q.put_nowait(1)
    q.put_nowait(2)
    print("queue filled", q.qsize(), q.empty(), q.full())
    try:
        q.put_nowait(3)
    except aio.QueueFull as e:
        print("put_nowait on full ->", name(e))
    log = []

    async def producer():
        for i in (3, 4):
            await q.put(i)
            log.append("put%d" % i)

    p = aio.create_task(producer())
    await aio.sleep_ms(10)
    print("producer blocked", log, q.qsize())
    print("get ->", await q.get())
    await aio.sleep_ms(10)
    print("producer unblocked once", log, q.qsize())
    print("get_nowait ->", q.get_nowait(), q.get_nowait())
    await p
    print("producer done", log, q.qsize(), q.get_nowait())
    try:
        q.get_nowait()
    except aio.QueueEmpty as e:
        print("get_nowait on empty ->", name(e))
    got = []

    async def consumer(tag):
        got.append((tag, await q.get()))

    for tag in ("c1", "c2"):
        aio.create_task(consumer(tag))
    await aio.sleep_ms(10)
    print("consumers blocked", got)
    await q.put("a")
    await aio.sleep_ms(10)
    print("one item, one consumer", got)
    q.put_nowait("b")
    await aio.sleep_ms(10)
    print("both served", got, q.empty())
    try:
        await aio.wait_for_ms(q.get(), 30)
    except aio.TimeoutError as e:
        print("get with timeout ->", name(e))
    q.put_nowait("after timeout")
    print("queue still works ->", await q.get())
    big = aio.Queue()
    for i in range(100):
        big.put_nowait(i)
    print("unbounded", big.qsize(), big.full(), [big.get_nowait() for _ in range(3)])


async def gathering():
    print("gather ->", await aio.gather(noter([], "slow", 40), noter([], "fast", 10), aio.sleep_ms(1)))
    print("gather none ->", await aio.gather())
    t = aio.create_task(noter([], "task", 5))
    print("gather task ->", await aio.gather(t))
    r = await aio.gather(raiser(10, KeyError("k")), noter([], "ok", 20), return_exceptions=True)
    print("gather return_exceptions ->", [name(x) for x in r], r[1])
    log = []
    try:
        await aio.gather(raiser(10, ValueError("first")), noter(log, "sibling", 300))
    except ValueError as e:
        print("gather raises first ->", name(e), e, log)
    await aio.sleep_ms(350)
    print("sibling kept running", log)
    log = []

    async def long(tag):
        try:
            await aio.sleep_ms(2000)
        except aio.CancelledError:
            log.append(tag)
            raise

    g = aio.create_task(aio.gather(long("g1"), long("g2")))
    await aio.sleep_ms(10)
    g.cancel()
    try:
        await g
    except aio.CancelledError as e:
        await aio.sleep_ms(10)
        print("gather cancelled ->", name(e), sorted(log))


async def events():
    ev = aio.Event()
    print("event new", ev.is_set())
    log = []

    async def waiter(tag):
        await ev.wait()
        log.append(tag)

    for tag in ("w1", "w2", "w3"):
        aio.create_task(waiter(tag))
    await aio.sleep_ms(10)
    print("waiters blocked", log)
    ev.set()
    print("event set", ev.is_set())
    await aio.sleep_ms(10)
    print("waiters woken", log)
    await ev.wait()
    print("wait on set event returns at once")
    ev.clear()
    print("event cleared", ev.is_set())
    try:
        await aio.wait_for_ms(ev.wait(), 30)
    except aio.TimeoutError as e:
        print("wait on cleared event ->", name(e))


async def locking():
    lock = aio.Lock()
    log = []

    async def user(tag, hold):
        async with lock:
            log.append(tag + " in")
            await aio.sleep_ms(hold)
            log.append(tag + " out")

    tasks = [aio.create_task(user(tag, 20)) for tag in ("A", "B", "C")]
    await aio.sleep_ms(5)
    print("lock held", lock.locked())
    await aio.gather(*tasks)
    print("lock serialises", log)
    print("lock free", lock.locked())
    try:
        async with lock:
            raise KeyError("inside")
    except KeyError:
        print("lock released after error", lock.locked())


def in_thread(fn):
    """Runs fn on a thread where threads exist, else on a task: same observable effect."""
    if _thread is not None:
        _thread.start_new_thread(fn, ())
        return

    async def later():
        fn()

    aio.create_task(later())


async def signals():
    sig = aio.Signal()
    woke = []

    def late():
        time.sleep(0.04)
        sig.set()

    t0 = ticks_ms()
    in_thread(late)
    await aio.wait_for_ms(sig.wait(), 3000)
    woke.append(ticks_diff(ticks_ms(), t0) >= 39)
    print("signal from thread woke loop", woke)
    in_thread(sig.set)
    await aio.sleep_ms(60)
    await aio.wait_for_ms(sig.wait(), 3000)
    print("signal set before wait is remembered")
    try:
        await aio.wait_for_ms(sig.wait(), 30)
    except aio.TimeoutError as e:
        print("signal consumed by one wait ->", name(e))
    sig.set()
    sig.set()
    await sig.wait()
    try:
        await aio.wait_for_ms(sig.wait(), 30)
    except aio.TimeoutError as e:
        print("two sets, one wake ->", name(e))


async def readable():
    addr = socket.getaddrinfo("127.0.0.1", PORT)[0][-1]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(addr)
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    async def send(ms, data):
        await aio.sleep_ms(ms)
        c.sendto(data, addr)

    try:
        aio.create_task(send(30, b"one"))
        t0 = ticks_ms()
        await aio.wait_readable(s)
        print("readable after send", ticks_diff(ticks_ms(), t0) >= 25, s.recv(64))
        try:
            await aio.wait_for_ms(aio.wait_readable(s), 30)
        except aio.TimeoutError as e:
            print("nothing sent ->", name(e))
        t = aio.create_task(aio.wait_readable(s))
        await aio.sleep_ms(10)
        t.cancel()
        try:
            await t
        except aio.CancelledError as e:
            print("wait_readable cancelled ->", name(e))
        c.sendto(b"two", addr)
        await aio.wait_for_ms(aio.wait_readable(s), 2000)
        print("readable again", s.recv(64))
        await aio.gather(send(10, b"three"), aio.wait_readable(s))
        print("readable in gather", s.recv(64))
    finally:
        s.close()
        c.close()


async def callbacks():
    # Signal.wait_ms: the timed wait without a task
    sig = aio.Signal()
    print("wait_ms times out", await sig.wait_ms(20))
    in_thread(sig.set)
    print("wait_ms woken", await sig.wait_ms(3000))
    sig.set()
    print("wait_ms remembered set", await sig.wait_ms(0), "then", await sig.wait_ms(20))

    # Timer: fires once, re-arming moves it, cancel drops it
    fired = []
    t = aio.Timer(lambda: fired.append(ticks_diff(ticks_ms(), t0) >= 55))
    t0 = ticks_ms()
    t.arm_ms(20)
    t.arm_ms(60)            # moves it: fires once, at 60 ms
    await aio.sleep_ms(150)
    print("timer re-armed fires once, late", fired)
    t.arm_ms(20)
    t.cancel()
    await aio.sleep_ms(60)
    print("timer cancelled", fired)

    # on_readable: the callback drains every datagram until the watch is closed
    addr = socket.getaddrinfo("127.0.0.1", PORT)[0][-1]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(addr)
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    got = []
    w = aio.on_readable(s, lambda: got.append(s.recv(64)))
    try:
        for data in (b"x", b"y"):
            c.sendto(data, addr)
            await aio.sleep_ms(30)
        print("on_readable got", got)
        w.close()
        c.sendto(b"z", addr)
        await aio.sleep_ms(30)
        print("closed watch ignores", got)
    finally:
        s.close()
        c.close()


async def main():
    for part in (ordering, sleeping, timeouts, cancelling, queues, gathering, events,
                 locking, signals, readable, callbacks):
        print("--", part.__name__)
        await part()


left = []


async def leftover():
    try:
        await aio.sleep_ms(5000)
        left.append("resumed?!")
    except aio.CancelledError:
        left.append("cancelled at exit")
        raise


async def spawn_and_return():
    aio.create_task(leftover())
    await aio.sleep_ms(10)
    return "first run"


async def second_run():
    await aio.sleep_ms(50)
    return "second run"


async def failing():
    aio.create_task(leftover())
    await aio.sleep_ms(10)
    raise ValueError("main failed")


aio.run(main())
print("--", "run")
print("run returns", aio.run(spawn_and_return()), left)
print("run again", aio.run(second_run()), left)
try:
    aio.run(failing())
except ValueError as e:
    print("run raises", name(e), e, left)
print("done")
