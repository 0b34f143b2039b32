# The applier on its own (no OS): latest state wins, failures are retried with backoff, and
# any number of coroutines can await their tickets at once.
import logging
import threading

from lanmesh import aio
from lanmesh.applier import Applier
from lanmesh.errors import BackendError


class SlowBackend:
    def __init__(self, fail=0):
        self.applied, self.fail, self.gate = [], fail, threading.Event()

    def apply(self, state):
        self.gate.wait(5)
        if self.fail:
            self.fail -= 1
            raise BackendError("boom")
        self.applied.append(state)

    def supervise(self):
        return False


def test_concurrent_waiters_all_get_their_answer_and_the_latest_state_wins():
    backend = SlowBackend()
    ap = Applier(backend, logging.getLogger("t"))

    async def main():
        t1 = ap.submit("s1")
        await aio.sleep(0.05)            # s1 has started (blocked in the backend)
        t2, t3 = ap.submit("s2"), ap.submit("s3")    # s2 is replaced by s3 before it starts
        waits = [aio.create_task(ap.wait(t)) for t in (t1, t2, t3)]
        await aio.sleep(0.05)
        backend.gate.set()
        return await aio.wait_for_ms(aio.gather(*waits), 5000)
    try:
        assert aio.run(main()) == [None, None, None]
        assert backend.applied == ["s1", "s3"]
    finally:
        ap.close()


def test_a_failed_apply_is_retried_with_backoff_until_it_works():
    backend = SlowBackend(fail=2)
    backend.gate.set()
    ap = Applier(backend, logging.getLogger("t"))

    async def main():
        err = await ap.wait(ap.submit("s"))
        assert isinstance(err, BackendError)
        for _ in range(100):                 # retried at +1 s, then +2 s
            if backend.applied:
                return True
            await aio.sleep(0.1)
        return False
    try:
        assert aio.run(main())
        assert backend.applied == ["s"] and ap.failures == 2 and ap.last_error is None
    finally:
        ap.close()
