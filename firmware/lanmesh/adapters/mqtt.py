# The router's MQTT session (MQTT 3.1.1 over TCP or TLS), on the daemon's own loop: no
# thread of its own, no paho (paho-mqtt 2.x and what it imports cost ~4 MB RSS on a router
# budgeted 20 MB; the operator's tools still use it, lanmesh.operator.paho_client).
# Broker traffic becomes events for the fleet agent; reconnects back off exponentially;
# subscriptions are renewed on every connect, so retained messages (the network
# document) arrive again; QoS 1 publishes made while offline are sent on reconnect.
# Packets are parsed by mqtt_codec, bounded before anything is buffered.
import collections
import errno
import os
import socket
import threading
import time

from .. import inet
from . import dns, mqtt_codec as codec

from .. import aio
from ..errors import LanmeshError

CONNECTED = "connected"
LOST = "lost"
MESSAGE = "message"
ACKED = "acked"
CONNECT_TIMEOUT_MS = 4000   # a TCP connect that has no answer by then: "unreachable" (the
                            # reason is known within 5 s; the backoff then retries)


class MqttError(LanmeshError):
    pass


def parse_broker(url):
    """'mqtts://host:8883' → (True, host, port). mqtt:// is plain TCP (port 1883)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("mqtt", "mqtts"):
        raise MqttError(f"broker {url!r}: must be mqtts://host[:port] or mqtt://host[:port]")
    tls = scheme == "mqtts"
    rest = rest.rstrip("/")
    if rest.startswith("["):
        host, _, port = rest[1:].partition("]")
        port = port[1:] if port.startswith(":") else ""
    else:
        host, _, port = rest.partition(":")
    if not host:
        raise MqttError(f"broker {url!r}: no host")
    if port and (not port.isdigit() or not 1 <= int(port) <= 65535):
        raise MqttError(f"broker {url!r}: bad port {port!r}")
    return tls, host, int(port) if port else (8883 if tls else 1883)


def read_secret(path):
    """First line of a password file (0600 files written by `fleet broker-config`)."""
    try:
        with open(path) as f:
            return f.readline().rstrip("\r\n")
    except OSError as e:
        raise MqttError(f"{path}: cannot read password file: {e.strerror}") from None


class MqttLink:
    """One broker session for the loop. Events come out of next_event() as tuples:
    (CONNECTED,), (LOST, reason), (MESSAGE, topic, payload, retain), (ACKED, mid).
    password: a string, or a callable asked at every connect (e.g. reading a file)."""

    def __init__(self, url, client_id, ca_file=None, username=None, password=None,
                 cert_file=None, key_file=None, will=None, keepalive=30,
                 backoff=(1, 60), max_events=1000, log=None):
        self.tls, self.host, self.port = parse_broker(url)
        if not self.tls and (cert_file or ca_file):
            raise MqttError(f"broker {url!r}: a CA or client certificate needs mqtts://")
        self.url, self.client_id = url, client_id
        self._tls_files = (ca_file, cert_file, key_file)
        self._ctx = self._tls_context() if self.tls else None     # bad files fail here
        self._auth, self._will = (username, password), will
        self.keepalive, self.backoff = keepalive, backoff
        self.log = log
        self._subs = []
        self._events = collections.deque()
        self._max_events = max_events
        self._dropped = 0
        self._signal = aio.Signal()
        self._kick = aio.Signal()
        self.connected = False
        self.last_error = None
        self.subscribe_error = None # the broker refused a subscription (SUBACK 0x80)
        self.received = 0           # messages delivered to us, publishes we made (counters)
        self.published = 0
        self._next_id = 0
        self._inflight = {}         # packet id -> PUBLISH bytes, until PUBACK (resent on connect)
        self._asked = {}            # packet id -> topics of a SUBSCRIBE, until its SUBACK
        self._out = bytearray()
        self._rbuf = bytearray(16384)
        self._sock = None
        self._task = None
        self._closing = False

    def _tls_context(self):
        from . import tls                   # only for mqtts: OpenSSL costs ~2.5 MB RSS
        try:
            return tls.client_context(*self._tls_files)
        except (OSError, tls.TLSError) as e:
            raise MqttError(f"TLS set-up for {self.url}: {e}") from None

    # -- events ---------------------------------------------------------------------------
    def _push(self, ev):
        if len(self._events) >= self._max_events and ev[0] == MESSAGE:
            self._dropped += 1       # a flood on our topics must not eat the router's RAM
            return
        self._events.append(ev)
        self._signal.set()

    async def next_event(self, timeout_ms):
        """The next event, or None after timeout_ms (None = wait for ever)."""
        if self._events:
            return self._events.popleft()
        if not await self._signal.wait_ms(timeout_ms):
            return None
        return self._events.popleft() if self._events else None

    def wake(self):
        """Make a pending next_event() return (None) now; safe from any thread."""
        self._signal.set()

    # -- requests -------------------------------------------------------------------------
    def subscribe(self, topic, qos=1):
        """Remembered and renewed on every (re)connect."""
        self._subs.append((topic, qos))
        if self.connected:
            self._send(self._subscribe([(topic, qos)]))

    def unsubscribe(self, topic):
        """Forgotten (not renewed on reconnects) and, if connected, unsubscribed now."""
        before = len(self._subs)
        self._subs = [s for s in self._subs if s[0] != topic]
        if self.connected and len(self._subs) != before:
            self._send(codec.unsubscribe(self._packet_id(), [topic]))

    def publish(self, topic, payload, qos=1, retain=False):
        """Queued even while disconnected (QoS 1 is resent after a reconnect). → mid."""
        self.published += 1
        mid = self._packet_id()
        packet = codec.publish(topic, payload, qos, retain, mid if qos else None)
        if qos:
            self._inflight[mid] = (topic, payload, retain)
        if self.connected:
            self._send(packet)
        return mid

    def _subscribe(self, topics):
        """A SUBSCRIBE, remembered by its packet id until its SUBACK says which it granted."""
        pid = self._packet_id()
        self._asked[pid] = list(topics)
        return codec.subscribe(pid, topics)

    def _packet_id(self):
        self._next_id = self._next_id % 0xFFFF + 1
        return self._next_id

    def _send(self, data):
        self._out += data
        self._kick.set()

    def start(self):
        self._task = aio.create_task(self._run())

    # -- the session ----------------------------------------------------------------------
    async def _run(self):
        delay = self.backoff[0]
        while not self._closing:
            try:
                await self._session()
                delay = self.backoff[0]
            except (OSError, MqttError, codec.ProtocolError, ValueError) as e:
                reason = _describe(e, self.host, self.port)
                if self.connected or reason != self.last_error:   # said once, not per retry
                    self._push((LOST, reason))
                if self.connected:
                    delay = self.backoff[0]
                self.last_error = reason
            finally:
                self._drop_socket()
            if self._closing:
                return
            await aio.sleep_ms(int(delay * 1000))
            delay = min(delay * 2, self.backoff[1])

    async def _session(self):
        sock = self._sock = await self._connect()
        decoder = codec.Decoder()
        user, password = self._auth
        if callable(password):          # re-read at every connect: a changed password file
            password = password()       # is picked up without a restart
        self._out = bytearray(codec.connect(self.client_id, self.keepalive, user, password,
                                            will=self._will))
        watch = aio.on_readable(sock, self._kick.set)
        try:
            acked = False
            last_sent = last_heard = time.monotonic()
            ping_out = False
            while not self._closing:
                if self._out:
                    n = self._write(sock)
                    if n:
                        last_sent = time.monotonic()
                for p in decoder.feed(self._read(sock)):
                    last_heard = time.monotonic()
                    if not acked:
                        if p[0] != "connack":
                            raise codec.ProtocolError(f"{p[0]} before CONNACK")
                        if p[2]:
                            raise MqttError("connect refused: "
                                            + codec.CONNACK_REASONS.get(p[2], f"code {p[2]}"))
                        acked = True
                        self._on_connected()
                        continue
                    ping_out = ping_out and p[0] != "pingresp"
                    self._on_packet(p)
                now = time.monotonic()
                if not acked and now - last_heard > 10:
                    raise MqttError("no CONNACK within 10 s (is it an MQTT broker?)")
                if acked and now - last_sent >= self.keepalive:
                    self._out += codec.pingreq()
                    ping_out = True
                if acked and now - last_heard > self.keepalive * 1.5:
                    raise MqttError(f"broker silent for {now - last_heard:.0f} s")
                wait = 0.05 if self._out else max(0.05, min(1.0, self.keepalive - (now - last_sent)))
                await self._kick.wait_ms(int(wait * 1000))
        finally:
            watch.close()

    def _on_connected(self):
        self.connected = True
        self.last_error = self.subscribe_error = None
        if self._subs:
            self._out += self._subscribe(self._subs)
        for mid, (topic, payload, retain) in sorted(self._inflight.items()):
            self._out += codec.publish(topic, payload, 1, retain, mid, dup=True)
        self._push((CONNECTED,))

    def _on_packet(self, p):
        kind = p[0]
        if kind == "publish":
            _, topic, payload, qos, retain, pid = p
            if qos:
                self._out += codec.puback(pid)
            self.received += 1
            self._push((MESSAGE, topic, payload, retain))
        elif kind == "puback":
            if self._inflight.pop(p[1], None) is not None:
                self._push((ACKED, p[1]))
        elif kind == "suback":
            asked = self._asked.pop(p[1], [])
            refused = [t for (t, _), code in zip(asked, p[2]) if code == 0x80]
            if refused:
                self.subscribe_error = (f"the broker refused the subscription to "
                                        f"{', '.join(refused)} (its ACL does not allow this node "
                                        f"these topics: wrong fleet name?)")
                self._say("fleet: " + self.subscribe_error)
        elif kind == "connack":
            raise codec.ProtocolError("a second CONNACK")
        # "unsuback": nothing waits for it (a chunk arriving after it is a harmless duplicate)

    async def _connect(self):
        addrs = await _resolve(self.host, self.port)
        last = None
        for family, addr in addrs:
            sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            sock.setblocking(False)
            try:
                err = sock.connect_ex(addr)
                if err in (errno.EINPROGRESS, errno.EAGAIN):
                    try:
                        await aio.wait_for_ms(aio.wait_writable(sock), CONNECT_TIMEOUT_MS)
                    except aio.TimeoutError:
                        raise OSError(errno.ETIMEDOUT, "connect timed out") from None
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self._ctx is not None:
                    sock = await self._handshake(sock)
                return sock
            except BaseException as e:
                sock.close()
                last = e
                if not isinstance(e, (OSError, MqttError)):
                    raise
        raise last if last is not None else OSError(errno.EHOSTUNREACH, "no address")

    async def _handshake(self, sock):
        from . import tls
        conn = tls.Connection(self._ctx, sock, self.host)
        end = time.monotonic() + 10
        while True:
            try:
                conn.handshake()
                return conn
            except tls.WantRead:
                wait = aio.wait_readable(conn)
            except tls.WantWrite:
                wait = aio.wait_writable(conn)
            except tls.VerifyError as e:
                raise MqttError(f"TLS: the broker's certificate does not verify against "
                                f"{self._tls_files[0] or 'the system CAs'}: "
                                f"{e.verify_message}") from None
            except tls.TLSError as e:
                raise MqttError(f"TLS handshake failed: {e.reason or e}") from None
            left = end - time.monotonic()
            if left <= 0:
                raise MqttError("TLS handshake timed out")
            try:
                await aio.wait_for_ms(wait, int(left * 1000))
            except aio.TimeoutError:
                raise MqttError("TLS handshake timed out") from None

    def _read(self, sock):
        """What the broker sent since the last call (into one reused buffer: the loop calls
        this on every wake-up, and a fresh 64 kB each time only churns the heap)."""
        data = bytearray()
        buf = self._rbuf
        while len(data) < (1 << 20):
            try:
                n = sock.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if _want(e):
                    break
                raise
            if not n:
                if data:
                    break
                raise MqttError("the broker closed the connection")
            data += memoryview(buf)[:n]
        return bytes(data)

    def _write(self, sock):
        try:
            n = sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as e:
            if _want(e):
                return 0
            raise
        del self._out[:n]
        return n

    def _drop_socket(self):
        self.connected = False
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    def _say(self, text):
        if self.log is not None:
            self.log.warning("%s", text)

    def close(self, final=None, timeout=2.0):
        """final = (topic, payload): published retained before a clean disconnect (which
        suppresses the last will). Blocks for at most `timeout` s."""
        self._closing = True
        sock = self._sock
        if sock is not None and self.connected:
            data = bytes(self._out)
            if final is not None:
                data += codec.publish(final[0], final[1], 1, True, self._packet_id())
            data += codec.disconnect()
            try:
                sock.settimeout(timeout)
                sock.sendall(data)
            except OSError:
                pass
        self._drop_socket()
        if self._task is not None:
            self._task.cancel()
        self._kick.set()


def _want(e):
    """An ssl WantRead/WantWrite (an OSError subclass): no data yet, not a failure."""
    return type(e).__name__ in ("SSLWantReadError", "SSLWantWriteError")


async def _resolve(host, port):
    """getaddrinfo off the loop (a slow resolver must not stall the mesh); an address
    needs no lookup and no thread."""
    try:
        ip = inet.ip_address(host)
        return [(socket.AF_INET if ip.version == 4 else socket.AF_INET6,
                 (host, port) if ip.version == 4 else (host, port, 0, 0))]
    except ValueError:
        pass
    done = aio.Signal()
    box = {}

    def work():
        try:
            box["addrs"] = [(fam, addr) for fam, _, _, _, addr in
                            dns.getaddrinfo(host, port, socket.SOCK_STREAM)]
        except OSError as e:
            box["error"] = e
        done.set()
    threading.Thread(target=work, name="lanmesh-mqtt-dns", daemon=True).start()
    if not await done.wait_ms(15000):
        raise MqttError(f"looking up {host} timed out")
    if "error" in box:
        raise MqttError(f"cannot resolve {host}: {box['error'].strerror or box['error']}")
    return box["addrs"]


def _describe(e, host, port):
    if isinstance(e, ConnectionRefusedError) or getattr(e, "errno", None) == errno.ECONNREFUSED:
        return f"connection refused (nothing listens on port {port}?)"
    if getattr(e, "errno", None) in (errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH):
        return f"unreachable: {e.strerror or e}"
    if isinstance(e, codec.ProtocolError):
        return f"protocol error: {e}"
    return str(e.strerror if isinstance(e, OSError) and e.strerror else e)
