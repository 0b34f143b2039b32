# The `kernel` backend: Linux WireGuard configured over generic netlink (lanmesh.netlink),
# plus HostNet for MTU, addresses, routes, sysctls and nft. Reconciles: reads the device
# back, then changes only what differs. An unchanged peer is never touched and a changed
# one is edited in place (update_only), so its session, handshake time and counters live on.
# Netlink calls block for milliseconds; the applier runs them off the daemon's loop.
import errno
from ..log import getLogger
import os

from ..errors import BackendError, LanmeshError
from ..keys import decode_key, encode_key
from .endpoint import resolve
from .hostnet import HostNet
from ..netlink import rtnl, wgnl
from ..netlink.codec import MalformedReply, NetlinkError
from .linkstate import PeerStatus
from .peerdiff import choose_endpoints, diff, to_netlink
from .uapi_proto import format_endpoint, norm_prefix

NO_WIREGUARD = ("the kernel has no WireGuard (module `wireguard` is neither loaded nor loadable; "
                "install kmod-wireguard / the wireguard module, or use backend 'uapi')")


def kernel_available():
    """True if this kernel can create WireGuard links (cheap; leaves nothing behind)."""
    if os.path.isdir("/sys/module/wireguard"):
        return True
    # Creating a link makes the kernel load the module on demand, if it has one.
    name = f"lmwgprobe{os.getpid() % 100000}"
    try:
        with rtnl.open_socket() as nl:
            try:
                rtnl.link_add(nl, name, "wireguard")
            except NetlinkError:
                return False
            found = rtnl.link(nl, name=name)
            if found:
                rtnl.link_del(nl, found["index"])
            return True
    except (OSError, MalformedReply):   # no permission, no netlink: not usable from here
        return False


class KernelBackend:
    def __init__(self, ifname, log=None, run_dir=None):
        self.ifname = ifname
        self.log = log if log is not None else getLogger("lanmesh.dataplane")
        self.hostnet = HostNet(ifname, log=self.log, run_dir=run_dir)
        self.set_requests = 0       # WireGuard set calls made: none after an unchanged apply
        self._state = None          # last state asked for: re-applied when the link vanishes
        self._endpoints = {}        # peer → endpoint we set and stand by (peerdiff's roaming rule)
        self._wg_family = None      # generic-netlink family id of WireGuard, once looked up
        self._sampler = None        # the netlink socket counters() reuses (the loop's own:
                                    # one receive buffer, not 64 kB per sample)

    # --- backend API ----------------------------------------------------------------------

    def apply(self, state):
        """Make the WireGuard device and the host match `state`; returns the changes made."""
        if state.ifname != self.ifname:
            raise BackendError(f"state is for {state.ifname!r}, this backend drives {self.ifname!r}")
        if not 0 < len(self.ifname.encode()) <= 15 or "/" in self.ifname or " " in self.ifname:
            raise BackendError(f"{self.ifname!r} is not a valid interface name (1-15 characters)")
        desired = self._desired(state)      # bad input fails here, before anything changes
        self._state = state
        try:
            changes = self._configure(desired)
        except BackendError:
            self._wg_family = None          # looked up again next time (module reloaded?)
            raise
        return changes + self.hostnet.apply(state)

    def peers(self):
        """{public_key: PeerStatus} as the kernel reports them; {} if the link is gone."""
        try:
            dev = self._read()
        except BackendError:
            self._wg_family = None
            raise
        if dev is None:
            return {}
        return {k: PeerStatus(k, p["endpoint"], p["last_handshake"], p["rx_bytes"],
                              p["tx_bytes"], p["allowed_ips"]) for k, p in dev["peers"].items()}

    def counters(self):
        """{public_key: (rx_bytes, tx_bytes)}: one netlink dump (mesh/liveness.py); {} while
        the link is gone."""
        try:
            with _netlink_errors(self.ifname):
                if self._sampler is None:
                    self._sampler = wgnl.open_socket()
                parts = wgnl.get_device(self._sampler, self._family(self._sampler), self.ifname)
        except BackendError:
            self._wg_family = None
            if self._sampler is not None:
                self._sampler.close()
                self._sampler = None
            return {}
        out = {}
        for part in parts:
            for p in part["peers"]:
                rx, tx = out.get(p["public_key"], (0, 0))
                out[p["public_key"]] = (p.get("rx_bytes", rx), p.get("tx_bytes", tx))
        return out

    def supervise(self):
        """Recreate the link (and re-apply the last state) if it vanished; True if it did."""
        if self._state is None or self._link_index() is not None:
            return False
        self.log.warning(f"{self.ifname}: the WireGuard link is gone; recreating it")
        self.apply(self._state)
        return True

    def close(self):
        """Undo HostNet's changes, then delete the link (sessions end with it)."""
        self._state = None
        if self._sampler is not None:
            self._sampler.close()
            self._sampler = None
        try:
            self.hostnet.close()
        finally:
            self._delete_link()

    # --- desired state --------------------------------------------------------------------

    def _desired(self, state):
        peers, owner = {}, {}
        try:
            private = encode_key(decode_key(state.private_key, "private key"))
            for key, p in sorted(state.peers.items()):
                key = encode_key(decode_key(key, "peer public key"))
                ips = tuple(sorted({norm_prefix(a) for a in p.allowed_ips}))
                for ip in ips:
                    # WireGuard keeps a prefix on one peer only: the last one set would win.
                    if owner.setdefault(ip, key) != key:
                        raise BackendError(f"allowed IP {ip} is given to two peers "
                                           f"({owner[ip][:8]}… and {key[:8]}…)")
                peers[key] = {"endpoint": resolve(p.endpoint, self.log, self.ifname) if p.endpoint else [],
                    "force": p.force_endpoint, "not_via": p.not_via,
                              "allowed_ips": ips, "keepalive": p.keepalive}
        except LanmeshError as exc:
            raise BackendError(f"{self.ifname}: {exc}") from None
        return {"private_key": private, "listen_port": state.listen_port, "peers": peers}

    # --- netlink ------------------------------------------------------------------------

    def _configure(self, desired):
        changes = self._ensure_link()
        with _netlink_errors(self.ifname), wgnl.open_socket() as nl:
            family = self._family(nl)
            current = parse_info(wgnl.get_device(nl, family, self.ifname))
            chosen, keep = choose_endpoints(current["peers"], desired["peers"], self._endpoints)
            for key, ep in chosen.items():
                desired["peers"][key]["endpoint"] = ep
            for kwargs, change in plan(current, desired):
                try:
                    wgnl.set_device(nl, family, self.ifname, **kwargs)
                except NetlinkError as exc:     # the steps before stay; the next apply resumes
                    raise BackendError(f"{self.ifname}: {change}: {exc.strerror}") from None
                self.set_requests += 1
                changes.append(change)
            self._endpoints = keep
        for c in changes:
            self.log.info(f"{self.ifname}: {c}")
        return changes

    def _ensure_link(self):
        with _netlink_errors(self.ifname), rtnl.open_socket() as nl:
            found = rtnl.link(nl, name=self.ifname)
            if found:
                if found["kind"] != "wireguard":
                    raise BackendError(f"{self.ifname} exists and is a {found['kind'] or 'plain'} "
                                       f"link, not WireGuard; choose another interface name")
                return []
            try:
                rtnl.link_add(nl, self.ifname, "wireguard")
            except NetlinkError as exc:
                if exc.code == errno.EOPNOTSUPP:
                    raise BackendError(f"{self.ifname}: {NO_WIREGUARD}") from None
                if exc.code != errno.EEXIST:    # created meanwhile: fine, it is reconciled
                    raise
        return ["link created"]

    def _family(self, nl):
        """WireGuard's generic-netlink family id: looked up once (it stays while the module
        is loaded; a failed request forgets it, so a reloaded module is found again)."""
        if self._wg_family is None:
            self._wg_family = wgnl.family_id(nl)
            if self._wg_family is None:
                raise BackendError(NO_WIREGUARD)
        return self._wg_family

    def _read(self):
        if self._link_index() is None:
            return None
        with _netlink_errors(self.ifname), wgnl.open_socket() as nl:
            return parse_info(wgnl.get_device(nl, self._family(nl), self.ifname))

    def _link_index(self):
        with _netlink_errors(self.ifname), rtnl.open_socket() as nl:
            found = rtnl.link(nl, name=self.ifname)
        return found["index"] if found else None

    def _delete_link(self):
        with _netlink_errors(self.ifname), rtnl.open_socket() as nl:
            found = rtnl.link(nl, name=self.ifname)
            if found:
                try:
                    rtnl.link_del(nl, found["index"])
                    self.log.info(f"{self.ifname}: link deleted")
                except NetlinkError as exc:
                    if exc.code != errno.ENODEV:
                        raise




# --- pure helpers: kernel reply → device dict, device dicts → set calls --------------------

def _new_peer():
    return {"endpoint": None, "allowed_ips": [], "keepalive": 0, "last_handshake": 0.0,
            "rx_bytes": 0, "tx_bytes": 0}


def parse_info(parts):
    """wgnl.get_device() parts → {"private_key", "listen_port", "peers": {b64: peer}}.
    A device with many peers is dumped over several messages, and one peer's allowed IPs
    may continue in the next message, so peers are merged by key."""
    dev = {"private_key": None, "listen_port": 0, "peers": {}}
    for part in parts:
        if part.get("private_key"):
            dev["private_key"] = part["private_key"]
        if "listen_port" in part:
            dev["listen_port"] = part["listen_port"]
        for p in part["peers"]:
            peer = dev["peers"].setdefault(p["public_key"], _new_peer())
            host, port = p.get("endpoint", (None, 0))
            if port:
                peer["endpoint"] = format_endpoint(host, port)
            for field in ("keepalive", "rx_bytes", "tx_bytes", "last_handshake"):
                if field in p:
                    peer[field] = p[field]
            peer["allowed_ips"].extend(norm_prefix(a) for a in p["allowed_ips"])
    for p in dev["peers"].values():
        p["allowed_ips"] = tuple(sorted(set(p["allowed_ips"])))
    return dev


def plan(current, desired):
    """[(WireGuard.set kwargs, description)] turning `current` into `desired`; [] if equal.
    In `desired`, a peer's endpoint is the one to set, or None to leave it (peerdiff)."""
    return to_netlink(*diff(current, desired))


# --- plumbing -------------------------------------------------------------------------------

class _netlink_errors:
    """NetlinkError, a malformed reply, or no netlink → BackendError naming the interface."""

    def __init__(self, ifname):
        self.ifname = ifname

    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        if exc is None or isinstance(exc, BackendError):
            return False
        if isinstance(exc, NetlinkError):
            raise BackendError(f"{self.ifname}: netlink: {exc}") from None
        if isinstance(exc, (OSError, MalformedReply)):
            raise BackendError(f"{self.ifname}: netlink: {exc}") from None
        return False
