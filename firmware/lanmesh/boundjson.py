# JSON from outside (MQTT payloads, console replies, the control socket, files a user
# wrote), bounded *before* the parser sees it: size, nesting depth (CPython's json recurses
# and dies of RecursionError), integer length (a 5,000-digit integer raises ValueError on
# CPython ≥ 3.11, and costs quadratic time before that) and no NaN/Infinity. Every failure is
# a JsonError (a ValueError) whose message names what is wrong. MicroPython-compatible (the
# console core uses it there): its json has no hooks, so only size and depth are checked.
import json
import sys

MAX_DEPTH = 32          # our documents nest 4 deep; reported 3
MAX_INT_DIGITS = 20     # a u64 fits; versions and ports are far smaller
_MICROPYTHON = sys.implementation.name == "micropython"


class JsonError(ValueError):
    pass


def _depth(text, limit, what):
    depth = 0
    in_string = False
    escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c == "[" or c == "{":
            depth += 1
            if depth > limit:
                raise JsonError("%s: nested deeper than %d levels" % (what, limit))
        elif c == "]" or c == "}":
            depth -= 1


def parse_int(digits):
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise JsonError("integer of %d digits (at most %d)" % (len(digits), MAX_INT_DIGITS))
    return int(digits)


def parse_constant(name):
    raise JsonError("%s is not JSON" % name)


def prepare(data, max_bytes, what="payload", max_depth=MAX_DEPTH):
    """bytes/str → text that is within the size and depth bounds; JsonError otherwise.
    Parse it with json.loads(text, parse_int=parse_int, parse_constant=parse_constant)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        if len(data) > max_bytes:
            raise JsonError("%s: %d bytes is over the %d-byte limit" % (what, len(data), max_bytes))
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeError:
            raise JsonError("%s: not UTF-8" % what)
    elif not isinstance(data, str):
        raise JsonError("%s: not text" % what)
    elif len(data) > max_bytes:
        raise JsonError("%s: %d characters is over the %d limit" % (what, len(data), max_bytes))
    _depth(data, max_depth, what)
    return data


def loads(data, max_bytes, what="payload", max_depth=MAX_DEPTH, object_pairs_hook=None):
    """bytes/str → the value; JsonError when over a bound or not JSON."""
    data = prepare(data, max_bytes, what, max_depth)
    if _MICROPYTHON:
        try:
            return json.loads(data)
        except ValueError as e:
            raise JsonError("%s: not valid JSON: %s" % (what, e))
    try:
        return json.loads(data, parse_int=parse_int, parse_constant=parse_constant,
                          object_pairs_hook=object_pairs_hook)
    except JsonError as e:
        raise JsonError("%s: %s" % (what, e)) from None
    except RecursionError:
        raise JsonError("%s: nested too deeply" % what) from None
    except ValueError as e:
        raise JsonError("%s: not valid JSON: %s" % (what, e)) from None
