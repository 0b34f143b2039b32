# Host networking around the tunnel device, shared by every backend: MTU and link state,
# overlay addresses, routes into the tunnel, forwarding sysctls and the nft table.
# It reconciles (reads what is there, changes only the difference) and touches only what
# it owns: addresses it added, routes tagged with RTPROT_LANMESH, the table it loaded,
# the sysctls it flipped (restored by close(); their old values are also kept in
# <run_dir>/<ifname>.sysctl.json, so the daemon that restarts after a crash still restores
# what the host had before lanmesh, not the 1 its crashed predecessor left).
#
# The netlink part needs pyroute2 (~20 MB RSS, for good). It runs rarely (start, document
# change, repair), so unless pyroute2 is already loaded (kernel backend) it runs in a
# short-lived child, `python -m lanmesh.dataplane.hostnet`, JSON in and out; and it is
# skipped when neither what we want (MTU, addresses, routes) nor the device (ifindex)
# changed since the last clean run, so mesh failovers (which change only allowed IPs)
# never spawn it.
import ipaddress
import json
import os
import socket
import subprocess
import sys

from ..errors import BackendError
from . import nft
from .offloop import off_loop

RTPROT_LANMESH = 108          # our routes' protocol tag: how we find (only) our own routes
MAIN_TABLE = 254
IFF_UP = 0x1
EEXIST, ESRCH, ENOENT, EADDRNOTAVAIL, ENODEV = 17, 3, 2, 99, 19
FORWARDING = ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding")


def _iface(text):
    try:
        return str(ipaddress.ip_interface(text))
    except ValueError:
        raise BackendError(f"address {text!r} is not an IP address with a prefix length") from None


def _net(text):
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise BackendError(f"route {text!r} is not an IP prefix") from None


def _code(exc):
    return getattr(exc, "code", None)


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
        if "pyroute2" in sys.modules:       # already paid for (kernel backend): in-process
            _netlink(self._apply_netlink, mtu, addrs, routes, changes, problems)
            return
        reply = _child({"ifname": self.ifname, "mtu": mtu, "addrs": sorted(addrs),
                        "routes": sorted(routes), "owned": sorted(self._owned_addrs)})
        self._owned_addrs = set(reply["owned"])
        changes.extend(reply["changes"])
        problems.extend(reply["problems"])
        if reply.get("error"):
            raise BackendError(reply["error"])

    def _apply_netlink(self, ipr, mtu, addrs, routes, changes, problems):
        found = ipr.link_lookup(ifname=self.ifname)
        if not found:
            raise BackendError(f"{self.ifname}: no such interface")
        idx = found[0]
        if mtu is not None:
            link = tuple(ipr.get_links(idx))[0]
            if link.get("IFLA_MTU") != mtu or not link["flags"] & IFF_UP:
                ipr.link("set", index=idx, mtu=mtu, state="up")
                changes.append(f"link mtu {mtu} up")
        self._apply_addrs(ipr, idx, addrs, changes, problems)
        self._apply_routes(ipr, idx, routes, changes, problems)

    def _apply_addrs(self, ipr, idx, want, changes, problems):
        have = set()
        for msg in ipr.get_addr(index=idx):
            ip = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
            have.add(str(ipaddress.ip_interface(f"{ip}/{msg['prefixlen']}")))
        for a in sorted(want - have):
            ip, _, plen = a.partition("/")
            try:
                ipr.addr("add", index=idx, address=ip, prefixlen=int(plen))
            except Exception as exc:
                if _code(exc) != EEXIST:
                    problems.append(f"address {a}: {exc}")
                    continue
            self._owned_addrs.add(a)
            changes.append(f"address add {a}")
        for a in sorted(self._owned_addrs - want):
            if a in have:
                ip, _, plen = a.partition("/")
                try:
                    ipr.addr("del", index=idx, address=ip, prefixlen=int(plen))
                except Exception as exc:
                    if _code(exc) != EADDRNOTAVAIL:
                        problems.append(f"address {a}: {exc}")
                        continue
                changes.append(f"address del {a}")
            self._owned_addrs.discard(a)

    def _apply_routes(self, ipr, idx, want, changes, problems):
        ours, on_dev = set(), set()
        for family in (2, 10):
            for msg in ipr.get_routes(family=family, table=MAIN_TABLE):
                if msg.get("RTA_OIF") != idx or msg.get("RTA_TABLE", msg["table"]) != MAIN_TABLE:
                    continue
                zero = "0.0.0.0" if family == 2 else "::"
                dst = f"{msg.get('RTA_DST') or zero}/{msg['dst_len']}"
                (ours if msg["proto"] == RTPROT_LANMESH else on_dev).add(dst)
        for dst in sorted(want - ours - on_dev):   # already routed into the tunnel: leave it
            v4 = ":" not in dst
            try:
                ipr.route("add", dst=dst, oif=idx, table=MAIN_TABLE, proto=RTPROT_LANMESH,
                          **({"scope": 253} if v4 else {}))
                changes.append(f"route add {dst}")
            except Exception as exc:
                why = "another route for it exists" if _code(exc) == EEXIST else exc
                problems.append(f"route {dst}: {why}")
        for dst in sorted(ours - want):
            try:
                # scope "nowhere" matches any scope, as `ip route del` does
                ipr.route("del", dst=dst, oif=idx, table=MAIN_TABLE, proto=RTPROT_LANMESH,
                          scope=255)
                changes.append(f"route del {dst}")
            except Exception as exc:
                if _code(exc) != ESRCH:
                    problems.append(f"route {dst}: {exc}")

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
                changes.append(f"sysctl {path[10:]}=1")
            elif not forwarding and path in self._saved_sysctl:
                old = self._saved_sysctl.pop(path)
                if cur == "1":      # someone else changed it since: theirs now
                    _write(path, old)
                    changes.append(f"sysctl {path[10:]}={old} (restored)")
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
                          mesh_port=state.mesh_port)
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


def _netlink(fn, *args):
    """Run fn(ipr, *args) with a fresh IPRoute (~2 ms; imported lazily: ~25 MB RSS)."""
    return off_loop(_with_ipr, fn, *args)


def _with_ipr(fn, *args):
    from pyroute2 import IPRoute
    try:
        with IPRoute() as ipr:
            return fn(ipr, *args)
    except BackendError:
        raise
    except Exception as exc:    # NetlinkError is not an OSError
        if isinstance(exc, OSError) or _code(exc) is not None:
            raise BackendError(f"netlink: {exc}") from None
        raise


def _ifindex(ifname):
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        return None


CHILD_TIMEOUT = 30.0


def _child(request):
    """Run the netlink step in `python -m lanmesh.dataplane.hostnet` (see the top)."""
    pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
    try:
        r = subprocess.run([sys.executable, "-m", "lanmesh.dataplane.hostnet"],
                           input=json.dumps(request), capture_output=True, text=True, env=env,
                           timeout=CHILD_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendError(f"netlink helper: {exc}") from None
    try:
        reply = json.loads(r.stdout)
        if r.returncode == 0 and isinstance(reply, dict) and "owned" in reply:
            return reply
    except ValueError:
        pass
    tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
    raise BackendError(f"netlink helper failed (exit {r.returncode}): {tail}")


def _child_main():
    req = json.load(sys.stdin)
    hn = HostNet(req["ifname"])
    hn._owned_addrs = set(req["owned"])
    changes, problems, error = [], [], None
    try:
        _with_ipr(hn._apply_netlink, req["mtu"], set(req["addrs"]), set(req["routes"]),
                  changes, problems)
    except BackendError as exc:
        error = str(exc)
    json.dump({"changes": changes, "problems": problems, "owned": sorted(hn._owned_addrs),
               "error": error}, sys.stdout)


if __name__ == "__main__":
    _child_main()
