# Wrapping millisecond ticks, as MicroPython's time.ticks_* do. Cores take `now` as a tick
# value and compare only with ticks_diff/ticks_add, so they behave the same when the
# counter wraps (tests start clocks just below TICKS_PERIOD on purpose).
import time as _time

TICKS_PERIOD = 1 << 30
TICKS_MAX = TICKS_PERIOD - 1
_HALF = TICKS_PERIOD // 2

if hasattr(_time, "ticks_ms"):  # MicroPython: its own period may be wider (2**62 on unix)
    def _ticks_ms():
        return _time.ticks_ms() & TICKS_MAX
else:
    def _ticks_ms():
        return int(_time.monotonic() * 1000) & TICKS_MAX


def ticks_ms():
    return _ticks_ms()


def ticks_add(t, delta):
    return (t + delta) & TICKS_MAX


def ticks_diff(a, b):
    """Signed a - b, correct across one wrap (|a - b| < TICKS_PERIOD/2)."""
    return ((a - b + _HALF) & TICKS_MAX) - _HALF


def ticks_min(a, b):
    """The earlier of two deadlines (either may be None)."""
    if a is None:
        return b
    if b is None:
        return a
    return a if ticks_diff(a, b) <= 0 else b
