# Which chunks of an artefact to ask the broker for, and when to give up: a pure core (facts
# and `now` in, effects out; MicroPython-compatible). Each chunk is a retained message on its
# own topic (update/<version>/<format>/<index>), so subscribing to a topic is asking for that
# chunk and unsubscribing is saying it arrived. At most `window` chunks are asked for at a
# time, which bounds what the broker can push at the router (window × 64 KiB). A reconnect
# asks again for the window (the MQTT client renews its subscriptions); a chunk that does not
# come within timeout_ms is asked for again, and after `tries` times the fetch is stalled (the
# broker does not hold that chunk: the operator's release is incomplete).
from ..ticks import ticks_add, ticks_diff

WINDOW = 4
TIMEOUT_MS = 15000
TRIES = 3

WANT = "want"           # (WANT, index): subscribe to the chunk's topic
DROP = "drop"           # (DROP, index): unsubscribe
STALLED = "stalled"     # (STALLED, index): the broker does not have it
COMPLETE = "complete"   # (COMPLETE,): every chunk is in


class Fetch:
    def __init__(self, chunks, have=(), window=WINDOW, timeout_ms=TIMEOUT_MS, tries=TRIES):
        self.todo = [i for i in range(chunks) if i not in set(have)]
        self.window, self.timeout_ms, self.tries = window, timeout_ms, tries
        self.asked = {}         # index -> (deadline, tries so far)
        self.done = False

    def start(self, now):
        if not self.todo:
            self.done = True
            return [(COMPLETE,)]
        return self._fill(now)

    def _fill(self, now):
        out = []
        for i in self.todo:
            if len(self.asked) >= self.window:
                break
            if i not in self.asked:
                self.asked[i] = (ticks_add(now, self.timeout_ms), 1)
                out.append((WANT, i))
        return out

    def took(self, index, now):
        """Chunk `index` arrived and was stored."""
        if index not in self.asked:
            return []           # a duplicate (a retained copy after a renewed subscription)
        del self.asked[index]
        self.todo.remove(index)
        out = [(DROP, index)]
        if not self.todo:
            self.done = True
            return out + [(COMPLETE,)]
        return out + self._fill(now)

    def reconnected(self, now):
        """The session was renewed: the subscriptions (and so the asks) were sent again."""
        for i, (_, n) in self.asked.items():
            self.asked[i] = (ticks_add(now, self.timeout_ms), n)
        return []

    def tick(self, now):
        out = []
        for i, (deadline, n) in sorted(self.asked.items()):
            if ticks_diff(now, deadline) < 0:
                continue
            if n >= self.tries:
                self.done = True
                return [(DROP, j) for j in sorted(self.asked)] + [(STALLED, i)]
            self.asked[i] = (ticks_add(now, self.timeout_ms), n + 1)
            out += [(DROP, i), (WANT, i)]   # a retained message comes again on a new subscribe
        return out

    def next_deadline(self):
        if self.done or not self.asked:
            return None
        best = None
        for d, _ in self.asked.values():
            if best is None or ticks_diff(d, best) < 0:
                best = d
        return best

    def progress(self, chunks):
        return chunks - len(self.todo)
