# The operator's MQTT client (paho-mqtt 2.x): short blocking sessions for `lanmesh fleet`
# on the operator's machine. Routers use lanmesh.adapters.mqtt.MqttLink, a small client
# of their own on the daemon's loop (paho and what it imports cost ~4 MB RSS there).
import ssl

from ..adapters.mqtt import MqttError, parse_broker


def make_client(url, client_id, ca_file=None, username=None, password=None,
                cert_file=None, key_file=None, will=None):
    """A configured, unconnected paho client. will = (topic, payload) → retained, QoS 1."""
    import paho.mqtt.client as paho
    tls, host, port = parse_broker(url)
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=paho.MQTTv311, clean_session=True)
    if tls:
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
