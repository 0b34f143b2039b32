# MQTT 3.1.1 packets, sans-IO (OASIS MQTT v3.1.1): what a router's fleet session sends
# and receives — CONNECT with a retained will, SUBSCRIBE, PUBLISH at QoS 0/1 both ways,
# PUBACK, PINGREQ, DISCONNECT. The broker is not trusted until its packets parse: the
# remaining length is bounded before anything is buffered, every field is length-checked,
# and a packet the router never asked for (QoS 2, a SUBACK for no SUBSCRIBE) is a
# protocol error that ends the session.
import struct

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14
CONNACK_REASONS = {1: "unacceptable protocol version", 2: "client id rejected",
                   3: "broker unavailable", 4: "bad user name or password",
                   5: "not authorized (wrong password, or this node is not in the "
                      "broker's password file: `lanmesh fleet broker-config`)"}
MAX_PACKET = (1 << 20) + (1 << 16)      # a signed document (1 MiB) and its topic/envelope


class ProtocolError(ValueError):
    pass


def _utf8(text):
    raw = text.encode() if isinstance(text, str) else bytes(text)
    if len(raw) > 0xFFFF:
        raise ValueError("MQTT string longer than 65535 bytes")
    return struct.pack("!H", len(raw)) + raw


def _packet(kind, flags, body):
    n, length = len(body), bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        length.append(byte | (0x80 if n else 0))
        if not n:
            break
    return bytes([kind << 4 | flags]) + bytes(length) + body


def connect(client_id, keepalive, username=None, password=None, will=None):
    """will = (topic, payload): retained, QoS 1. Clean session: the broker keeps nothing."""
    flags = 0x02
    payload = _utf8(client_id)
    if will is not None:
        flags |= 0x04 | 0x08 | 0x20         # will, will QoS 1, will retain
        payload += _utf8(will[0]) + _utf8(will[1])
    if username is not None:
        flags |= 0x80
        payload += _utf8(username)
        if password is not None:
            flags |= 0x40
            payload += _utf8(password)
    return _packet(CONNECT, 0, _utf8("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
                   + payload)


def subscribe(packet_id, topics):
    """topics: [(filter, qos)]."""
    body = struct.pack("!H", packet_id) + b"".join(_utf8(t) + bytes([q]) for t, q in topics)
    return _packet(SUBSCRIBE, 0x2, body)


def unsubscribe(packet_id, topics):
    body = struct.pack("!H", packet_id) + b"".join(_utf8(t) for t in topics)
    return _packet(UNSUBSCRIBE, 0x2, body)


def publish(topic, payload, qos=0, retain=False, packet_id=None, dup=False):
    payload = payload.encode() if isinstance(payload, str) else bytes(payload)
    body = _utf8(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return _packet(PUBLISH, (0x8 if dup else 0) | qos << 1 | (1 if retain else 0), body)


def puback(packet_id):
    return _packet(PUBACK, 0, struct.pack("!H", packet_id))


def pingreq():
    return _packet(PINGREQ, 0, b"")


def disconnect():
    return _packet(DISCONNECT, 0, b"")


class Decoder:
    """Bytes in, packets out: ("connack", session_present, code), ("publish", topic,
    payload, qos, retain, packet_id), ("puback", id), ("suback", id, [codes]),
    ("pingresp",). Raises ProtocolError on anything malformed or oversized."""

    def __init__(self, max_packet=MAX_PACKET):
        self.max_packet = max_packet
        self._buf = bytearray()

    def feed(self, data):
        self._buf += data
        out = []
        while True:
            got = self._next()
            if got is None:
                return out
            out.append(got)

    def _next(self):
        buf = self._buf
        if len(buf) < 2:
            return None
        length, mult, i = 0, 1, 1
        while True:
            if i >= len(buf):
                return None
            byte = buf[i]
            length += (byte & 0x7F) * mult
            i += 1
            if not byte & 0x80:
                break
            mult <<= 7
            if i > 4:
                raise ProtocolError("remaining length longer than 4 bytes")
        if length > self.max_packet:
            raise ProtocolError(f"packet of {length} bytes is over the {self.max_packet}-byte limit")
        if len(buf) < i + length:
            return None
        header, body = buf[0], bytes(buf[i:i + length])
        del buf[:i + length]
        return _parse(header >> 4, header & 0xF, body)


def _id(body, what):
    if len(body) < 2:
        raise ProtocolError(f"{what}: truncated")
    return struct.unpack_from("!H", body)[0]


def _parse(kind, flags, body):
    if kind == CONNACK:
        if len(body) != 2 or body[0] & 0xFE:
            raise ProtocolError("CONNACK: malformed")
        return ("connack", bool(body[0] & 1), body[1])
    if kind == PUBLISH:
        qos = flags >> 1 & 3
        if qos > 1:
            raise ProtocolError(f"PUBLISH at QoS {qos}: the router subscribes at QoS 1 at most")
        n = _id(body, "PUBLISH topic")
        if len(body) < 2 + n + (2 if qos else 0):
            raise ProtocolError("PUBLISH: truncated")
        try:
            topic = body[2:2 + n].decode()
        except UnicodeDecodeError:
            raise ProtocolError("PUBLISH: topic is not UTF-8") from None
        off = 2 + n
        packet_id = None
        if qos:
            packet_id = _id(body[off:], "PUBLISH id")
            off += 2
        return ("publish", topic, body[off:], qos, bool(flags & 1), packet_id)
    if kind == PUBACK:
        if len(body) != 2:
            raise ProtocolError("PUBACK: malformed")
        return ("puback", _id(body, "PUBACK"))
    if kind == SUBACK:
        if len(body) < 3:
            raise ProtocolError("SUBACK: malformed")
        return ("suback", _id(body, "SUBACK"), list(body[2:]))
    if kind == UNSUBACK:
        if len(body) != 2:
            raise ProtocolError("UNSUBACK: malformed")
        return ("unsuback", _id(body, "UNSUBACK"))
    if kind == PINGRESP:
        if body:
            raise ProtocolError("PINGRESP: malformed")
        return ("pingresp",)
    raise ProtocolError(f"unexpected packet type {kind} from the broker")
