# A real mosquitto for tests, the lab and the demo: TLS with a throwaway CA, a password
# file and the fleet ACL (pattern rules), listening where you say (loopback by default, or
# inside a network namespace via netns_exec=["ip", "netns", "exec", NAME]). Started and
# stopped by PID, never by name.
import datetime
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "firmware"))

from lanmesh.operator import brokerconf  # noqa: E402


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def make_ca(directory, hosts=("127.0.0.1",)):
    """Write ca.pem, server.pem, server.key (EC P-256) for the given IPs / names."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lanmesh test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {n: os.path.join(directory, n) for n in ("ca.pem", "server.pem", "server.key")}
    with open(paths["ca.pem"], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths["server.pem"], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths["server.key"], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(paths["server.key"], 0o600)
    return paths


class Broker:
    """mosquitto with TLS + passwords + ACL. users: {username: password}; the ACL is the
    fleet ACL for `prefix` unless acl is given."""

    def __init__(self, directory, users, prefix="lanmesh/acme/", host="127.0.0.1", port=None,
                 netns_exec=(), acl=None, extra_conf="", cert_hosts=None):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.host = host
        self.port = port or free_port(host if not netns_exec else "127.0.0.1")
        self.controller_port = free_port(host if not netns_exec else "127.0.0.1") if not port \
            else port + 1
        self.netns_exec = list(netns_exec)
        self.users = dict(users)
        self.proc = None
        self.log_path = os.path.join(directory, "mosquitto.log")
        tls = make_ca(directory, tuple(cert_hosts or (host, "127.0.0.1", "localhost")))
        self.ca_file = tls["ca.pem"]
        # as `fleet broker-config` writes them: the controller logs in on its own listener
        for name, users in (("passwd", {u: p for u, p in self.users.items() if u != "controller"}),
                            (brokerconf.CONTROLLER_PASSWD, {u: p for u, p in self.users.items()
                                                            if u == "controller"})):
            with open(os.path.join(directory, name), "w") as f:
                for u, pw in users.items():
                    f.write(f"{u}:{brokerconf.hash_password(pw)}\n")
            os.chmod(os.path.join(directory, name), 0o600)
        with open(os.path.join(directory, "acl"), "w") as f:
            f.write(acl if acl is not None else brokerconf.acl_text(prefix, [u for u in self.users if u != "controller"]))
        self.conf = os.path.join(directory, "mosquitto.conf")
        with open(self.conf, "w") as f:
            f.write(brokerconf.mosquitto_conf(directory, host, self.port, tls["ca.pem"],
                                              tls["server.pem"], tls["server.key"],
                                              persistence=True, log_file=self.log_path,
                                              controller_port=self.controller_port))
            # Root would drop to the `mosquitto` user, which cannot read the 0600 files here.
            f.write("user root\nsys_interval 1\n" + extra_conf)

    @property
    def url(self):
        """What nodes connect to."""
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtts://{h}:{self.port}"

    @property
    def controller_url(self):
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtts://{h}:{self.controller_port}"

    def start(self, timeout=10.0):
        start_at = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        self.proc = subprocess.Popen(self.netns_exec + ["mosquitto", "-c", self.conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited {self.proc.returncode}: "
                                   f"{self.proc.stderr.read().decode()} {self._log(start_at)}")
            if " running" in self._log(start_at):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("mosquitto did not start: " + self._log(start_at))

    def _log(self, start_at=0):
        try:
            with open(self.log_path) as f:
                f.seek(start_at)
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self, sig=signal.SIGTERM):
        """By PID; SIGTERM saves retained messages (persistence) before exiting."""
        p, self.proc = self.proc, None
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p.stderr:
            p.stderr.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
