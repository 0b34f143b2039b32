# Wrapping millisecond ticks, as MicroPython's time.ticks_* do. Cores take `now` as a tick
# value and compare only with ticks_diff/ticks_add, so they behave the same when the
# counter wraps (tests start clocks just below TICKS_PERIOD on purpose).
try:
    import time as _time
    _ticks_ms = _time.ticks_ms  # MicroPython
except AttributeError:  # CPython
    import time as _time

    def _ticks_ms():
        return int(_time.monotonic() * 1000) & TICKS_MAX

TICKS_PERIOD = 1 << 30
TICKS_MAX = TICKS_PERIOD - 1
_HALF = TICKS_PERIOD // 2


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
