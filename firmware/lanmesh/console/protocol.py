# Console wire protocol (sans-IO, MicroPython-compatible): line framing, the machine-mode
# frame (sequence number + CRC32), the effects the cores return, and `Host`, the
# requester side with retransmission. Command semantics live in console/session.py.
#
#   plain mode:   "set name hq"            -> "OK {...}" / "ERR <code> <message>"
#   machine mode: "#>SEQ REQUEST CRC32"    -> "#<SEQ OK {...} CRC32"
# A request frame is a shell comment, so probing a console that sits at a shell prompt is
# harmless. A valid frame received in plain mode switches the agent to machine mode.
from .. import boundjson

try:
    from binascii import crc32 as _crc32
except ImportError:  # pragma: no cover - minimal MicroPython builds
    _crc32 = None

VERSION = 1
MAX_LINE = 1024        # bytes per line; the CA certificate travels in `append` chunks
MAX_REPLY = 8192       # bytes of a reply's JSON (the host reads device replies up to this)
REQ = b"#>"
REP = b"#<"


def crc(data):
    if _crc32 is not None:
        return _crc32(data) & 0xFFFFFFFF
    c = 0xFFFFFFFF  # bitwise fallback, slow but tiny
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ (0xEDB88320 if c & 1 else 0)
    return c ^ 0xFFFFFFFF


def frame(marker, seq, payload):
    """marker + 'SEQ PAYLOAD CRC32' + CRLF, as bytes."""
    body = ("%d " % seq).encode() + (payload.encode() if isinstance(payload, str) else payload)
    return marker + body + (" %08x\r\n" % crc(body)).encode()


def unframe(marker, line):
    """(seq, payload bytes) of the first frame in `line` whose CRC checks; None when the
    line has no marker; "crc" when it has one but nothing verifies (damaged)."""
    pos = line.find(marker)
    if pos < 0:
        return None
    while pos >= 0:
        body = line[pos + len(marker):]
        i = body.rfind(b" ")
        sp = body.find(b" ")
        tail = body[i + 1:]
        if 0 < sp < i and len(tail) == 8 and body[:sp].isdigit():
            try:
                ok = int(tail.decode(), 16) == crc(body[:i])
            except ValueError:
                ok = False
            if ok:
                return int(body[:sp]), body[sp + 1:i]
        pos = line.find(marker, pos + 1)
    return "crc"


class LineBuffer:
    """Bytes -> complete lines (CR or LF ends a line, empty lines vanish). A line longer
    than `limit` is dropped up to its end and reported once as ("long", None)."""

    def __init__(self, limit=MAX_LINE):
        self.limit = limit
        self.buf = bytearray()
        self.overflow = False

    def feed(self, data):
        out = []
        for b in data:
            if b == 10 or b == 13:
                if self.overflow:
                    out.append(("long", None))
                elif self.buf:
                    out.append(("line", bytes(self.buf)))
                self.buf = bytearray()
                self.overflow = False
            elif not self.overflow:
                if len(self.buf) >= self.limit:
                    self.overflow = True
                    self.buf = bytearray()
                else:
                    self.buf.append(b)
        return out


class Effect:
    def __init__(self, *args):
        self.args = args

    def __eq__(self, other):
        return type(self) is type(other) and self.args == other.args

    def __repr__(self):
        return "%s%r" % (type(self).__name__, self.args)


class Write(Effect):
    """Send these bytes to the console."""


class SetMode(Effect):
    """Switch the tty: "machine" = raw, no echo; "plain" = as the agent found it."""


class SetEcho(Effect):
    """Turn tty echo on/off around a secret typed in plain mode."""


class Perform(Effect):
    """Do I/O ("keygen", "commit", "reboot") with args; answer with done() or failed()."""


class Exit(Effect):
    """Leave the agent (restore the tty)."""


class Reply(Effect):
    """Host side: a verified reply (seq, ok, value) where value is the JSON data for OK
    and (code, message) for ERR."""


class Resend(Effect):
    """Host side: write these bytes again (retransmission)."""


class GaveUp(Effect):
    """Host side: no reply to the request after every retry."""




def parse_reply(payload):
    """b'OK {json}' -> (True, data); b'ERR code message' -> (False, (code, message))."""
    text = payload.decode()
    if text == "OK" or text.startswith("OK "):
        return True, boundjson.loads(text[3:] or "null", MAX_REPLY, "reply", max_depth=8)
    if text.startswith("ERR "):
        parts = text[4:].split(" ", 1)
        return False, (parts[0], parts[1] if len(parts) > 1 else "")
    raise ValueError("not a reply")


class Host:
    """Requester: one request in flight, retransmitted (same seq) until its reply comes.
    Time is an integer in ms supplied by the caller. The device replays its cached reply
    for a repeated seq, so retries never execute a command twice."""

    def __init__(self, seq=1, retry_ms=700, tries=8, backoff=1.5, limit=8192):
        self.seq = seq
        self.retry_ms = retry_ms
        self.tries = tries
        self.backoff = backoff
        self.lines = LineBuffer(limit)
        self.out = None          # bytes of the request in flight
        self.sent = 0
        self.deadline = None
        self.wait = retry_ms

    def request(self, payload, now):
        self.seq += 1
        self.out = frame(REQ, self.seq, payload)
        self.sent = 1
        self.wait = self.retry_ms
        self.deadline = now + self.wait
        return self.out

    def next_deadline(self):
        return self.deadline

    def _resend(self, now):
        if self.sent >= self.tries:
            self.out, self.deadline = None, None
            return GaveUp(self.seq)
        self.sent += 1
        self.wait = int(self.wait * self.backoff)
        self.deadline = now + self.wait
        return Resend(self.out)

    def tick(self, now):
        if self.deadline is None or now < self.deadline:
            return []
        return [self._resend(now)]

    def receive_data(self, data, now):
        out = []
        for kind, line in self.lines.feed(data):
            f = unframe(REP, line) if kind == "line" else None
            if f is None or f == "crc":
                continue  # echo, kernel log, noise, or a reply damaged on the way: retry covers it
            seq, payload = f
            try:
                ok, value = parse_reply(payload)
            except ValueError:
                continue
            if seq == 0 and self.out is not None and not ok and value[0] == "bad-crc":
                out.append(self._resend(now))  # the device saw a damaged frame: resend now
            elif seq == self.seq and self.out is not None:
                self.out, self.deadline = None, None
                out.append(Reply(seq, ok, value))
        return out
