# Fleet control on top of the namespace test bed (DESIGN §5, §8): a real mosquitto (TLS with
# a throwaway CA, the controller's password file and ACL) inside a lab namespace, a fleet
# directory whose registry holds every lab site with its real key, LAN and endpoint (so the
# allocated overlay addresses are the lab's), and each site's node.json `fleet` section.
# The controller side (`lanmesh fleet …`) runs inside the broker's namespace, so every
# packet stays between namespaces the lab created. Used by tests/test_fleet_mesh.py and
# the demo:
#
#   fl = FleetLab(lab, tmpdir)            # broker in the WAN namespace on 198.18.1.1
#   fl.start_broker(); [lab.start(s) for s in lab.sites]
#   v = fl.publish(settings={"confirm_window": 8}); fl.wait_applied(v)
import json
import os
import subprocess
import sys
import time

from lanmesh.atomic import write_atomic
from lanmesh.fleet import signing
from lanmesh.operator import brokerconf, controller
from .sites import OVERLAY4, OVERLAY6

FLEET = "lab"
PORT = 8883

# Publishes an envelope file as the retained `net`; records it in the registry if asked.
_PUBLISH_ENVELOPE = """
import sys
from lanmesh.fleet import topics
from lanmesh.operator import controller
fd, env = controller.FleetDir(sys.argv[1]), open(sys.argv[2], "rb").read()
if sys.argv[4] == "record":
    controller.publish(fd, env, int(sys.argv[3]), fd.broker_options())
else:
    with controller.BrokerSession(fd.broker_options()) as s:
        s.publish(topics.net(fd.prefix()), env, retain=True)
"""


class FleetLab:
    """The fleet of a started-topology Lab. broker_site=None: mosquitto runs in the WAN
    namespace on 198.18.1.1 (routers reach it over the WAN); broker_site=s: on s's LAN host
    (198.19.i.2), which the other sites reach only through the mesh. sites: the sites in the
    first document (default all); add more later with publish(add=[...])."""

    def __init__(self, lab, tmpdir, broker_site=None, sites=None, settings=None):
        self.lab = lab
        self.dir = os.path.join(str(tmpdir), "fleet")
        self.broker_site = broker_site
        if broker_site is None:
            self.ns, self.host = lab.wan, "198.18.1.1"
        else:
            self.ns, self.host = broker_site.host, broker_site.host4
        self.url = f"mqtts://{self.host}:{PORT}"
        self.broker_dir = os.path.join(self.dir, "broker")
        self.proc = None
        self.log_path = os.path.join(self.broker_dir, "mosquitto.log")
        os.makedirs(self.broker_dir, exist_ok=True)
        self.tls = _make_tls(self.broker_dir, self.host)
        self.fd = controller.FleetDir.init(self.dir, FLEET, OVERLAY4, OVERLAY6, broker=self.url,
                                           ca_file=self.tls["ca"])
        if broker_site is not None:          # the broker really sits on that site's LAN
            self.fd.registry.set("broker_site", broker_site.name)
        s = dict(lab.settings, **(settings or {}))
        if s:
            self.fd.registry.set_settings(s)
        self.members = []
        for site in (lab.sites if sites is None else sites):
            self._register(site)
        self._broker_config()
        # Provisioning: every first site gets the signed v1 as its local document and its
        # last good one, the way an installer would; the broker gets it retained at start.
        doc, self._v1, _, _ = controller.prepare(self.fd)
        self.fd.registry.record_published(doc["version"], self._v1)
        for site in self.members:
            self.provision(site)
        self._v1_published = False

    # -- registry and node configs --------------------------------------------------------
    def _register(self, site):
        n = self.fd.registry.add_node(site.name, site.public_key, [site.lan4, site.lan6],
                                      [f"{site.wan_ip}:51820"], relay=site.relay)
        # The lab's documents and pings use Site.overlay4/6: take the registry's allocation.
        site.overlay4, site.overlay6 = (a.split("/")[0] for a in n["address"])
        self.members.append(site)
        return n

    def _broker_config(self):
        names = [n["name"] for n in self.fd.registry.nodes()]
        ctl = open(self.fd.password_path).read().strip()
        brokerconf.write_broker_config(self.broker_dir, self.fd.prefix(), names, ctl, self.host,
                                       PORT, self.tls["ca"], self.tls["cert"], self.tls["key"])
        with open(os.path.join(self.broker_dir, "mosquitto.conf"), "a") as f:
            # As root mosquitto would drop to a user that cannot read the 0600 files here.
            f.write(f"user root\nlog_dest file {self.log_path}\nlog_type all\n")
        if self.proc is not None:
            self.proc.send_signal(1)     # SIGHUP: mosquitto reloads passwords and ACL

    def provision(self, site):
        """Write site's node.json fleet section, and the last published document as its local
        document and last good (a freshly installed router)."""
        last = self.fd.registry.last_published()
        cred = os.path.join(self.broker_dir, "credentials", site.name + ".pass")
        self.lab.write_config(site, fleet={
            "name": FLEET, "public_key": self.fd.public_key(), "broker": self.url,
            "ca_file": self.tls["ca"], "username": site.name, "password_file": cred})
        if last is not None:
            doc = json.loads(last[1])["doc"]
            write_atomic(os.path.join(site.dir, "network.json"), json.dumps(doc, indent=2))
            os.makedirs(os.path.join(site.dir, "state"), exist_ok=True)
            write_atomic(os.path.join(site.dir, "state", "last-good.json"), last[1], mode=0o600)
            self.lab.version = max(self.lab.version, doc["version"])

    # -- broker ---------------------------------------------------------------------------
    def start_broker(self, timeout=10.0):
        start_at = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        self.proc = self.lab.ns.popen(self.ns, ["mosquitto", "-c",
                                                os.path.join(self.broker_dir, "mosquitto.conf")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while " running" not in self._log(start_at):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop_broker()
                raise RuntimeError("mosquitto did not start: " + self._log(start_at)[-2000:])
            time.sleep(0.05)
        if not self._v1_published:
            self._publish_envelope(self._v1, 1, record=False)
            self._v1_published = True
        return self

    def stop_broker(self):
        """By PID; SIGTERM makes mosquitto save its retained messages first."""
        p, self.proc = self.proc, None
        if p is None:
            return
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def _log(self, start_at=0):
        try:
            with open(self.log_path, errors="replace") as f:
                f.seek(start_at)
                return f.read()
        except FileNotFoundError:
            return ""

    # -- the controller, run inside the broker's namespace --------------------------------
    def cli(self, *args, check=True, timeout=60):
        """`lanmesh fleet ARGS --dir <fleet>` as the operator runs it → CompletedProcess."""
        r = self.lab.ns.exec(self.ns, sys.executable, "-m", "lanmesh.cli", "fleet", *args,
                             "--dir", self.dir, check=False, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"lanmesh fleet {' '.join(args)}: {r.stderr.strip() or r.stdout}")
        return r

    def _publish_envelope(self, env, version, record=True):
        path = os.path.join(self.dir, f"envelope-v{version}.json")
        write_atomic(path, env)
        self.lab.ns.exec(self.ns, sys.executable, "-c", _PUBLISH_ENVELOPE, self.dir, path, str(version),
                         "record" if record else "retain-only")

    def publish(self, settings=None, add=(), remove=(), edit=None):
        """Change the registry (settings, sites to add, node names to remove), sign the next
        version and publish it retained → version. edit(doc dict) may alter the document
        before signing (a deliberately broken document); the registry itself is untouched."""
        reg = self.fd.registry
        if settings:
            reg.set_settings(settings)
        for name in remove:
            reg.remove_node(name)
            self.members = [s for s in self.members if s.name != name]
        for site in add:
            self._register(site)
        if add or remove:
            self._broker_config()
        if edit is None:
            self.cli("publish")
            version = reg.last_published()[0]
        else:
            doc = reg.next_document()
            edit(doc)
            env = signing.envelope_bytes(signing.sign(doc, signing.read_key(self.fd.key_path)))
            version = doc["version"]
            self._publish_envelope(env, version)
        for site in add:
            self.provision(site)
        return version

    def status_rows(self, wait=0.3):
        """`lanmesh fleet status --json`: per node state (online/lost/…), applied_version,
        pending_version, rollback, links; [] if the broker does not answer."""
        r = self.cli("status", "--json", "--wait", str(wait), check=False)
        if r.returncode != 0:
            return []
        return json.loads(r.stdout)

    def table(self):
        return controller.format_table(self.status_rows())

    def wait_applied(self, version, timeout=30, sites=None):
        """Until every site (default: every running member) reports `version` applied, online
        and nothing pending → rows by node; TimeoutError with the last rows otherwise."""
        names = {s.name for s in (sites if sites is not None else
                                  [m for m in self.members if m.proc is not None])}
        deadline = time.monotonic() + timeout
        rows = []
        while True:
            rows = {r["node"]: r for r in self.status_rows()}
            if all(n in rows and rows[n]["applied_version"] == version and rows[n]["state"] ==
                   "online" and rows[n]["pending_version"] is None for n in names):
                return rows
            if time.monotonic() > deadline:
                raise TimeoutError(f"v{version} not applied on all of {sorted(names)}: {rows}")
            time.sleep(0.3)

    def close(self):
        self.stop_broker()
        try:
            self.fd.registry.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _make_tls(directory, host):
    """A throwaway CA and a server certificate for `host` (an IP) → paths."""
    p = {k: os.path.join(directory, f) for k, f in (("ca", "ca.pem"), ("ca_key", "ca.key"),
                                                    ("cert", "server.pem"), ("key", "server.key"))}
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"]
    subprocess.run(["openssl", "req", "-x509", *ec, "-keyout", p["ca_key"], "-out", p["ca"],
                    "-subj", "/CN=lanmesh lab CA"], check=True, capture_output=True)
    subprocess.run(["openssl", "req", "-x509", *ec, "-keyout", p["key"], "-out", p["cert"],
                    "-subj", f"/CN={host}", "-CA", p["ca"], "-CAkey", p["ca_key"],
                    "-addext", f"subjectAltName=IP:{host}",
                    "-addext", "basicConstraints=critical,CA:FALSE"], check=True, capture_output=True)
    for k in ("ca_key", "key"):
        os.chmod(p[k], 0o600)
    return p
