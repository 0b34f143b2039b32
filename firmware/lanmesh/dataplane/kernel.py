# The `kernel` backend: Linux WireGuard configured over generic netlink (pyroute2), plus
# HostNet for MTU, addresses, routes, sysctls and nft. Reconciles: reads the device back,
# then changes only what differs. An unchanged peer is never touched and a changed one is
# edited in place (update_only), so its session, handshake time and counters live on.
# pyroute2 costs ~25 MB RSS: it is imported inside the functions that use it.
import errno
import logging
import os

from ..errors import BackendError, LanmeshError
from ..keys import decode_key, encode_key
from .endpoint import resolve
from .hostnet import HostNet
from .offloop import off_loop
from .linkstate import PeerStatus
from .peerdiff import choose_endpoints, diff, to_netlink
from .uapi_proto import format_endpoint, norm_prefix

NO_WIREGUARD = ("the kernel has no WireGuard (module `wireguard` is neither loaded nor loadable; "
                "install kmod-wireguard / the wireguard module, or use backend 'uapi')")


def kernel_available():
    """True if this kernel can create WireGuard links (cheap; leaves nothing behind)."""
    if os.path.isdir("/sys/module/wireguard"):
        return True

    def probe():
        # Creating a link makes the kernel load the module on demand, if it has one.
        from pyroute2 import IPRoute
        name = f"lmwgprobe{os.getpid() % 100000}"
        with IPRoute() as ipr:
            try:
                ipr.link("add", ifname=name, kind="wireguard")
            except Exception:
                return False
            for idx in ipr.link_lookup(ifname=name):
                ipr.link("del", index=idx)
            return True
    try:
        return off_loop(probe)
    except Exception:       # no permission, no netlink: not usable from here either way
        return False


class KernelBackend:
    def __init__(self, ifname, log=None, run_dir=None):
        self.ifname = ifname
        self.log = log if log is not None else logging.getLogger("lanmesh.dataplane")
        self.hostnet = HostNet(ifname, log=self.log, run_dir=run_dir)
        self.set_requests = 0       # WireGuard set calls made: none after an unchanged apply
        self._state = None          # last state asked for: re-applied when the link vanishes
        self._endpoints = {}        # peer → endpoint we set and stand by (peerdiff's roaming rule)

    # --- backend API ----------------------------------------------------------------------

    def apply(self, state):
        """Make the WireGuard device and the host match `state`; returns the changes made."""
        if state.ifname != self.ifname:
            raise BackendError(f"state is for {state.ifname!r}, this backend drives {self.ifname!r}")
        if not 0 < len(self.ifname.encode()) <= 15 or "/" in self.ifname or " " in self.ifname:
            raise BackendError(f"{self.ifname!r} is not a valid interface name (1-15 characters)")
        desired = self._desired(state)      # bad input fails here, before anything changes
        self._state = state
        changes = off_loop(self._configure, desired)
        return changes + self.hostnet.apply(state)

    def peers(self):
        """{public_key: PeerStatus} as the kernel reports them; {} if the link is gone."""
        dev = off_loop(self._read)
        if dev is None:
            return {}
        return {k: PeerStatus(k, p["endpoint"], p["last_handshake"], p["rx_bytes"],
                              p["tx_bytes"], p["allowed_ips"]) for k, p in dev["peers"].items()}

    def supervise(self):
        """Recreate the link (and re-apply the last state) if it vanished; True if it did."""
        if self._state is None or off_loop(self._link_index) is not None:
            return False
        self.log.warning(f"{self.ifname}: the WireGuard link is gone; recreating it")
        self.apply(self._state)
        return True

    def close(self):
        """Undo HostNet's changes, then delete the link (sessions end with it)."""
        self._state = None
        try:
            self.hostnet.close()
        finally:
            off_loop(self._delete_link)

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
                              "allowed_ips": ips, "keepalive": p.keepalive}
        except LanmeshError as exc:
            raise BackendError(f"{self.ifname}: {exc}") from None
        return {"private_key": private, "listen_port": state.listen_port, "peers": peers}

    # --- netlink (run off any asyncio loop) -----------------------------------------------

    def _configure(self, desired):
        from pyroute2 import WireGuard
        changes = self._ensure_link()
        with _netlink_errors(self.ifname), WireGuard() as wg:
            current = parse_info(wg.info(self.ifname))
            chosen, keep = choose_endpoints(current["peers"], desired["peers"], self._endpoints)
            for key, ep in chosen.items():
                desired["peers"][key]["endpoint"] = ep
            for kwargs, change in plan(current, desired):
                try:
                    wg.set(self.ifname, **kwargs)
                except Exception as exc:    # the steps before stay; the next apply resumes
                    if _code(exc) is None:
                        raise
                    raise BackendError(f"{self.ifname}: {change}: {os.strerror(_code(exc))}") \
                        from None
                self.set_requests += 1
                changes.append(change)
            self._endpoints = keep
        for c in changes:
            self.log.info(f"{self.ifname}: {c}")
        return changes

    def _ensure_link(self):
        from pyroute2 import IPRoute
        with _netlink_errors(self.ifname), IPRoute() as ipr:
            found = ipr.link_lookup(ifname=self.ifname)
            if found:
                info = tuple(ipr.get_links(found[0]))[0].get_attr("IFLA_LINKINFO")
                kind = info.get_attr("IFLA_INFO_KIND") if info else None
                if kind != "wireguard":
                    raise BackendError(f"{self.ifname} exists and is a {kind or 'plain'} link, "
                                       f"not WireGuard; choose another interface name")
                return []
            try:
                ipr.link("add", ifname=self.ifname, kind="wireguard")
            except Exception as exc:
                if _code(exc) == errno.EOPNOTSUPP:
                    raise BackendError(f"{self.ifname}: {NO_WIREGUARD}") from None
                if _code(exc) != errno.EEXIST:      # created meanwhile: fine, it is reconciled
                    raise
        return ["link created"]

    def _read(self):
        from pyroute2 import WireGuard
        if self._link_index() is None:
            return None
        with _netlink_errors(self.ifname), WireGuard() as wg:
            return parse_info(wg.info(self.ifname))

    def _link_index(self):
        from pyroute2 import IPRoute
        with _netlink_errors(self.ifname), IPRoute() as ipr:
            found = ipr.link_lookup(ifname=self.ifname)
        return found[0] if found else None

    def _delete_link(self):
        from pyroute2 import IPRoute
        with _netlink_errors(self.ifname), IPRoute() as ipr:
            for idx in ipr.link_lookup(ifname=self.ifname):
                try:
                    ipr.link("del", index=idx)
                    self.log.info(f"{self.ifname}: link deleted")
                except Exception as exc:
                    if _code(exc) != errno.ENODEV:
                        raise


# --- pure helpers: kernel reply → device dict, device dicts → set calls --------------------

def _new_peer():
    return {"endpoint": None, "allowed_ips": [], "keepalive": 0, "last_handshake": 0.0,
            "rx_bytes": 0, "tx_bytes": 0}


def _text(key):
    return key.decode() if isinstance(key, bytes) else key


def parse_info(msgs):
    """WireGuard.info() messages → {"private_key", "listen_port", "peers": {b64: peer}}.
    A device with many peers is dumped over several messages, and one peer's allowed IPs
    may continue in the next message, so peers are merged by key."""
    dev = {"private_key": None, "listen_port": 0, "peers": {}}
    for m in msgs:
        if m.get_attr("WGDEVICE_A_PRIVATE_KEY"):
            dev["private_key"] = _text(m.get_attr("WGDEVICE_A_PRIVATE_KEY"))
        if m.get_attr("WGDEVICE_A_LISTEN_PORT") is not None:
            dev["listen_port"] = m.get_attr("WGDEVICE_A_LISTEN_PORT")
        for p in m.get_attr("WGDEVICE_A_PEERS") or ():
            peer = dev["peers"].setdefault(_text(p.get_attr("WGPEER_A_PUBLIC_KEY")), _new_peer())
            ep = p.get_attr("WGPEER_A_ENDPOINT")
            if ep is not None and ep.get("port"):
                peer["endpoint"] = format_endpoint(ep["addr"], ep["port"])
            for attr, field in (("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", "keepalive"),
                                ("WGPEER_A_RX_BYTES", "rx_bytes"), ("WGPEER_A_TX_BYTES", "tx_bytes")):
                if p.get_attr(attr) is not None:
                    peer[field] = p.get_attr(attr)
            hs = p.get_attr("WGPEER_A_LAST_HANDSHAKE_TIME")
            if hs is not None:
                peer["last_handshake"] = hs["tv_sec"] + hs["tv_nsec"] / 1e9
            for a in p.get_attr("WGPEER_A_ALLOWEDIPS") or ():
                peer["allowed_ips"].append(norm_prefix(a["addr"]))
    for p in dev["peers"].values():
        p["allowed_ips"] = tuple(sorted(set(p["allowed_ips"])))
    return dev


def plan(current, desired):
    """[(WireGuard.set kwargs, description)] turning `current` into `desired`; [] if equal.
    In `desired`, a peer's endpoint is the one to set, or None to leave it (peerdiff)."""
    return to_netlink(*diff(current, desired))


# --- plumbing -------------------------------------------------------------------------------

def _code(exc):
    return getattr(exc, "code", None)


class _netlink_errors:
    """NetlinkError (not an OSError) → BackendError naming the interface."""

    def __init__(self, ifname):
        self.ifname = ifname

    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        if exc is None or isinstance(exc, BackendError):
            return False
        code = _code(exc)
        if code is None and not isinstance(exc, OSError):
            return False
        why = os.strerror(code) if code else str(exc)
        raise BackendError(f"{self.ifname}: netlink: {why}") from None


