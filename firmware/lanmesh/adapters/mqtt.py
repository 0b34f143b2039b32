# MQTT edge (paho-mqtt 2.x): turns broker traffic into events for the asyncio loop and
# publishes for it. paho runs its own network thread (loop_start); its callbacks only
# append to a deque and set an aio.Signal, so no lanmesh code runs on that thread.
# Reconnects with exponential backoff (paho's reconnect_delay_set); subscriptions are
# renewed on every connect, so retained messages (the network document) arrive again.
import collections
import importlib
import importlib.util
import sys
import threading
import types

from .. import aio
from ..errors import LanmeshError

CONNECTED = "connected"
LOST = "lost"
MESSAGE = "message"
ACKED = "acked"


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


# paho-mqtt imports these at import time for what lanmesh never uses: urllib.request for
# SOCKS proxy settings (only read when PySocks is installed) and uuid for a random client
# id (ours is the node's name). Loaded they cost ~3.7 MB RSS (http.client, email,
# datetime, random, platform). paho gets a stand-in that imports the real module on the
# first attribute anyone reads (importlib's LazyLoader does not survive an `import`
# statement on Python 3.11).
_LAZY_FOR_PAHO = ("urllib.request", "uuid")


class _OnFirstUse(types.ModuleType):
    def __getattr__(self, attr):            # only for attributes the stand-in lacks
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        real = importlib.import_module(name)
        return getattr(real, attr)


def _import_paho():
    for name in _LAZY_FOR_PAHO:
        if name in sys.modules or importlib.util.find_spec(name) is None:
            continue                        # loaded already, or missing: paho will say so
        stand_in = _OnFirstUse(name)
        stand_in.__spec__ = None
        sys.modules[name] = stand_in
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, stand_in)
    import paho.mqtt.client as paho
    return paho


def make_client(url, client_id, ca_file=None, username=None, password=None,
                cert_file=None, key_file=None, will=None):
    """A configured, unconnected paho client. will = (topic, payload) → retained, QoS 1."""
    paho = _import_paho()
    tls, host, port = parse_broker(url)
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=paho.MQTTv311, clean_session=True)
    if tls:
        import ssl                          # only for mqtts: OpenSSL costs ~4 MB RSS
        try:
            c.tls_set(ca_certs=ca_file, certfile=cert_file, keyfile=key_file,
                      cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        except (OSError, ssl.SSLError) as e:
            raise MqttError(f"TLS set-up for {url}: {e}") from None
    elif cert_file or ca_file:
        raise MqttError(f"broker {url!r}: a CA or client certificate needs mqtts://")
    if username is not None:
        c.username_pw_set(username, password)
    if will is not None:
        c.will_set(will[0], will[1], qos=1, retain=True)
    c._lanmesh_addr = (host, port)
    return c


class MqttLink:
    """One broker session for the asyncio side. Events come out of next_event() as tuples:
    (CONNECTED,), (LOST, reason), (MESSAGE, topic, payload, retain), (ACKED, mid)."""

    def __init__(self, url, client_id, ca_file=None, username=None, password=None,
                 cert_file=None, key_file=None, will=None, keepalive=30,
                 backoff=(1, 60), max_events=1000):
        self._client = make_client(url, client_id, ca_file, username, password,
                                   cert_file, key_file, will)
        self.keepalive = keepalive
        self._subs = []
        self._events = collections.deque()
        self._max_events = max_events
        self._dropped = 0
        self._lock = threading.Lock()
        self._signal = aio.Signal()
        self.connected = False
        self.received = 0           # messages delivered to us, publishes we made (counters)
        self.published = 0
        c = self._client
        c.reconnect_delay_set(backoff[0], backoff[1])
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish

    # -- paho thread ----------------------------------------------------------------------
    def _push(self, ev):
        with self._lock:
            if len(self._events) >= self._max_events and ev[0] == MESSAGE:
                self._dropped += 1   # a flood on our topics must not eat the router's RAM
                return
            self._events.append(ev)
        self._signal.set()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self._push((LOST, f"connect refused: {reason_code}"))
            return
        self.connected = True
        for topic, qos in self._subs:
            client.subscribe(topic, qos)
        self._push((CONNECTED,))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        was = self.connected
        self.connected = False
        if was:
            self._push((LOST, str(reason_code)))

    def _on_message(self, client, userdata, msg):
        self.received += 1
        self._push((MESSAGE, msg.topic, msg.payload, msg.retain))

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        self._push((ACKED, mid))

    # -- asyncio side ---------------------------------------------------------------------
    def subscribe(self, topic, qos=1):
        """Remembered and renewed on every (re)connect."""
        self._subs.append((topic, qos))
        if self.connected:
            self._client.subscribe(topic, qos)

    def start(self):
        host, port = self._client._lanmesh_addr
        try:
            self._client.connect_async(host, port, keepalive=self.keepalive)
        except (OSError, ValueError) as e:
            raise MqttError(f"broker {host}:{port}: {e}") from None
        self._client.loop_start()

    def publish(self, topic, payload, qos=1, retain=False):
        """Queued even while disconnected (paho resends QoS 1 after reconnect). → mid."""
        self.published += 1
        return self._client.publish(topic, payload, qos=qos, retain=retain).mid

    async def next_event(self, timeout_ms):
        """The next event, or None after timeout_ms (None = wait for ever)."""
        with self._lock:
            if self._events:
                return self._events.popleft()
        if not await self._signal.wait_ms(timeout_ms):
            return None
        with self._lock:
            return self._events.popleft() if self._events else None

    def wake(self):
        """Make a pending next_event() return (None) now; safe from any thread."""
        self._signal.set()

    def close(self, final=None, timeout=2.0):
        """final = (topic, payload): published retained before a clean disconnect (which
        suppresses the last will)."""
        c = self._client
        try:
            if final is not None and self.connected:
                info = c.publish(final[0], final[1], qos=1, retain=True)
                info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):
            pass
        c.disconnect()
        c.loop_stop()
