# Host networking around the tunnel device, shared by every backend: MTU and link state,
# overlay addresses, routes into the tunnel, forwarding sysctls and the nft table.
# It reconciles (reads what is there, changes only the difference) and touches only what
# it owns: addresses it added, routes tagged with RTPROT_LANMESH, the table it loaded,
# the sysctls it flipped (restored by close(); their old values are also kept in
# <run_dir>/<ifname>.sysctl.json, so the daemon that restarts after a crash still restores
# what the host had before lanmesh, not the 1 its crashed predecessor left).
#
# The netlink part (lanmesh.netlink, in-process, a few ms) is skipped when neither what we
# want (MTU, addresses, routes) nor the device (ifindex) changed since the last clean run,
# so mesh failovers (which change only allowed IPs) never touch it.
import json
import os
import socket

from .. import inet
from ..errors import BackendError
from ..netlink import rtnl
from ..netlink.codec import MalformedReply, NetlinkError
from . import nft

RTPROT_LANMESH = 108          # our routes' protocol tag: how we find (only) our own routes
MAIN_TABLE = 254
IFF_UP = rtnl.IFF_UP
EEXIST, ESRCH, ENOENT, EADDRNOTAVAIL, ENODEV = 17, 3, 2, 99, 19
def _name(path):
    """/proc/sys/net/ipv4/ip_forward → net.ipv4.ip_forward, as `sysctl` names it."""
    return path[len("/proc/sys/"):].replace("/", ".")


FORWARDING = ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding")


def _iface(text):
    try:
        return str(inet.ip_interface(text))
    except ValueError:
        raise BackendError(f"address {text!r} is not an IP address with a prefix length") from None


def _net(text):
    try:
        return str(inet.ip_network(text, strict=False))
    except ValueError:
        raise BackendError(f"route {text!r} is not an IP prefix") from None


class HostNet:
    def __init__(self, ifname, log=None, run_dir=None):
        self.ifname = ifname
        self.log = log
        self._owned_addrs = set()   # "ip/len" we added: the only addresses we ever remove
        self._sysctl_file = os.path.join(run_dir, ifname + ".sysctl.json") if run_dir else None
        self._saved_sysctl = self._load_saved()     # path → value before we set it to 1
        self._nft_text = None       # what we last loaded (None: unknown, load on next apply)
        self._nft_touched = False   # close() deletes the table only if we ever loaded it
        self._netlink_done = None   # (ifindex, (mtu, addrs, routes)) of the last clean run

    # --- public ---------------------------------------------------------------------------

    def apply(self, state):
        """Make the host match `state`; returns the changes made (empty when none were needed).
        Every step runs even when an earlier one failed, then the failures are raised together,
        so one bad route does not leave the rest undone and the next apply retries only it."""
        changes, problems = [], []
        addrs = {_iface(a) for a in state.addresses}
        routes = {_net(r) for r in state.routes}
        key = (state.mtu, frozenset(addrs), frozenset(routes))
        index = _ifindex(self.ifname)
        if index is None or (index, key) != self._netlink_done:
            self._netlink_done = None
            try:
                self._run_netlink(state.mtu, addrs, routes, changes, problems)
            except BackendError as exc:
                problems.append(str(exc))
            if not problems and index is not None and index == _ifindex(self.ifname):
                self._netlink_done = (index, key)
        self._guard(problems, self._apply_sysctl, state.forwarding, changes)
        self._guard(problems, self._apply_nft, state, changes)
        for c in changes:
            self._log("info", f"{self.ifname}: {c}")
        if problems:
            raise BackendError(f"{self.ifname}: " + "; ".join(problems))
        return changes

    def close(self):
        """Undo what apply did: nft table, sysctls, and (if the link still exists) our routes
        and addresses. Best effort: every step runs; failures are raised together at the end."""
        changes, problems = [], []
        self._netlink_done = None
        if _ifindex(self.ifname) is not None:   # gone (wireguard-go stopped): nothing to undo
            try:
                self._run_netlink(None, set(), set(), changes, problems)
            except BackendError as exc:
                if "no such interface" not in str(exc):
                    problems.append(str(exc))
        self._owned_addrs.clear()
        self._guard(problems, self._apply_sysctl, False, changes)
        if self._nft_touched:
            self._guard(problems, nft.delete, self.ifname)
            self._nft_text, self._nft_touched = None, False
        if problems:
            raise BackendError(f"{self.ifname}: close: " + "; ".join(problems))
        return changes

    # --- steps ----------------------------------------------------------------------------

    def _run_netlink(self, mtu, addrs, routes, changes, problems):
        try:
            with rtnl.open_socket() as nl:
                self._apply_netlink(nl, mtu, addrs, routes, changes, problems)
        except NetlinkError as exc:
            raise BackendError(f"netlink: {exc}") from None
        except (OSError, MalformedReply) as exc:
            raise BackendError(f"netlink: {exc}") from None

    def _apply_netlink(self, nl, mtu, addrs, routes, changes, problems):
        link = rtnl.link(nl, name=self.ifname)
        if link is None:
            raise BackendError(f"{self.ifname}: no such interface")
        idx = link["index"]
        if mtu is not None and (link["mtu"] != mtu or not link["flags"] & IFF_UP):
            rtnl.link_set(nl, idx, mtu=mtu, up=True)
            changes.append(f"link mtu {mtu} up")
        self._apply_addrs(nl, idx, addrs, changes, problems)
        self._apply_routes(nl, idx, routes, changes, problems)

    def _apply_addrs(self, nl, idx, want, changes, problems):
        have = set(rtnl.addrs(nl, idx))
        for a in sorted(want - have):
            ip, _, plen = a.partition("/")
            try:
                rtnl.addr(nl, "add", idx, ip, int(plen))
            except NetlinkError as exc:
                if exc.code != EEXIST:
                    problems.append(f"address {a}: {exc.strerror}")
                    continue
            self._owned_addrs.add(a)
            changes.append(f"address add {a}")
        for a in sorted(self._owned_addrs - want):
            if a in have:
                ip, _, plen = a.partition("/")
                try:
                    rtnl.addr(nl, "del", idx, ip, int(plen))
                except NetlinkError as exc:
                    if exc.code != EADDRNOTAVAIL:
                        problems.append(f"address {a}: {exc.strerror}")
                        continue
                changes.append(f"address del {a}")
            self._owned_addrs.discard(a)

    def _apply_routes(self, nl, idx, want, changes, problems):
        ours, on_dev = set(), set()
        for family in (socket.AF_INET, socket.AF_INET6):
            for r in rtnl.routes(nl, family):
                if r["oif"] != idx or r["table"] != MAIN_TABLE:
                    continue
                (ours if r["proto"] == RTPROT_LANMESH else on_dev).add(r["dst"])
        for dst in sorted(want - ours - on_dev):   # already routed into the tunnel: leave it
            try:
                rtnl.route(nl, "add", dst, idx, MAIN_TABLE, RTPROT_LANMESH,
                           253 if ":" not in dst else 0)
                changes.append(f"route add {dst}")
            except NetlinkError as exc:
                why = "another route for it exists" if exc.code == EEXIST else exc.strerror
                problems.append(f"route {dst}: {why}")
        for dst in sorted(ours - want):
            try:
                # scope "nowhere" matches any scope, as `ip route del` does
                rtnl.route(nl, "del", dst, idx, MAIN_TABLE, RTPROT_LANMESH, 255)
                changes.append(f"route del {dst}")
            except NetlinkError as exc:
                if exc.code != ESRCH:
                    problems.append(f"route {dst}: {exc.strerror}")

    def _apply_sysctl(self, forwarding, changes):
        for path in FORWARDING:
            try:
                with open(path) as f:
                    cur = f.read().strip()
            except FileNotFoundError:
                continue            # IPv6 disabled on this host
            if forwarding and cur != "1":
                if path not in self._saved_sysctl:
                    self._saved_sysctl[path] = cur
                    self._save()    # before the change: a crash right after still knows
                _write(path, "1")
                changes.append(f"sysctl {_name(path)}=1")
            elif not forwarding and path in self._saved_sysctl:
                old = self._saved_sysctl.pop(path)
                if cur == "1":      # someone else changed it since: theirs now
                    _write(path, old)
                    changes.append(f"sysctl {_name(path)}={old} (restored)")
                self._save()

    def _load_saved(self):
        if self._sysctl_file is None:
            return {}
        try:
            with open(self._sysctl_file, "rb") as f:
                saved = json.loads(f.read(4096))
        except (OSError, ValueError):
            return {}
        if not isinstance(saved, dict):
            return {}
        return {p: v for p, v in saved.items() if p in FORWARDING and v in ("0", "1", "2")}

    def _save(self):
        if self._sysctl_file is None:
            return
        if self._saved_sysctl:
            from ..atomic import write_atomic
            write_atomic(self._sysctl_file, json.dumps(self._saved_sysctl), mode=0o600)
        else:
            try:
                os.unlink(self._sysctl_file)
            except FileNotFoundError:
                pass

    def _apply_nft(self, state, changes):
        text = nft.render(self.ifname, mss_clamp=state.mss_clamp, forwarding=state.forwarding,
                          mesh_port=state.mesh_port, relays=state.relays,
                          relay_range=state.relay_range)
        if text == self._nft_text:
            return
        self._nft_touched = True
        self._nft_text = None       # a failed load is retried by the next apply
        nft.load(self.ifname, text)
        self._nft_text = text
        changes.append(f"nft table inet {nft.table_name(self.ifname)} loaded")

    # --- helpers --------------------------------------------------------------------------

    def _guard(self, problems, fn, *args):
        try:
            fn(*args)
        except BackendError as exc:
            problems.append(str(exc))
        except OSError as exc:
            problems.append(f"{exc.filename or ''}: {exc.strerror or exc}")

    def _log(self, level, msg):
        if self.log is not None:
            getattr(self.log, level)(msg)


def _write(path, value):
    with open(path, "w") as f:
        f.write(value + "\n")


def _ifindex(ifname):
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        return None
