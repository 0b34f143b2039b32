# The tunnel's own nftables table, `inet lanmesh_<ifname>`: TCP MSS clamping for SYNs
# crossing the tunnel, forward accepts for relayed (wg→wg) and site (lan↔wg) traffic, and an
# input drop of the mesh's UDP port on every interface but the tunnel (mesh messages are
# only believed when WireGuard delivered them; see adapters/udp.py).
# The whole table is rendered as text and loaded in one `nft -f -` transaction, so the
# kernel never sees half a table. We own the table entirely and nothing else.
import re

from .. import spawn
from ..errors import BackendError

_SAFE_IFNAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,15}$")
_SAFE_IP = re.compile(r"^[0-9A-Fa-f.:]{2,45}$")


def table_name(ifname):
    # nft identifiers are stricter than interface names ('-' and '.' are not allowed everywhere).
    return "lanmesh_" + re.sub(r"[^A-Za-z0-9_]", "_", ifname)


def render(ifname, mss_clamp=True, forwarding=True, mesh_port=None, relays=(), relay_range=None):
    """The table as `nft -f` text, or "" when there is nothing to install.
    relays: (port in, port out, to ip, to port) — this node as a blind relay: UDP arriving on
    `port in` goes on to `to ip:to port`, leaving from `port out` (mesh/relay.py), in the
    kernel: the WireGuard ciphertext is never decrypted here."""
    if not _SAFE_IFNAME.match(ifname):
        raise BackendError(f"interface name {ifname!r} cannot be used in an nftables rule")
    rules = []
    if mss_clamp:
        # Both directions: a SYN entering the tunnel, and the SYN-ACK of a LAN host to it.
        for side in ("oifname", "iifname"):
            rules.append(f'{side} "{ifname}" tcp flags syn / syn,rst '
                         f'tcp option maxseg size set rt mtu')
    if forwarding:
        # This table's accepts cannot override another table's drop (e.g. OpenWrt fw4):
        # there the firewall zone must allow it too. They document the intent and cover
        # hosts whose forward policy lives in a chain that jumps here.
        rules += [f'iifname "{ifname}" accept', f'oifname "{ifname}" accept']
    chains = []
    if rules:
        chains.append(("forward", "forward priority mangle", rules))
    if mesh_port is not None:
        if not isinstance(mesh_port, int) or not 0 < mesh_port < 65536:
            raise BackendError(f"mesh port {mesh_port!r} is not a port")
        # A drop in any base chain is final, whatever fw4 or another table accepts later.
        chains.append(("input", "input priority -10", [
            f'udp dport {mesh_port} iifname != "{ifname}" counter drop comment "mesh port: tunnel only"']))
    if relay_range is not None:
        # A datagram to a relay port that no session maps yet (the grant raced the rules) is
        # dropped before conntrack confirms it: else its un-NATed entry would outlive the
        # mapping that follows, and the session would go nowhere for conntrack's timeout.
        lo, hi = relay_range
        rule = f'udp dport {lo}-{hi} counter drop comment "relay port without a session"'
        for c in chains:
            if c[0] == "input":
                c[2].append(rule)
                break
        else:
            chains.append(("input", "input priority -10", [rule]))
    pre, post = [], []
    for port_in, port_out, ip, port in relays:
        for v in (port_in, port_out, port):
            if not isinstance(v, int) or not 0 < v < 65536:
                raise BackendError(f"relay port {v!r} is not a port")
        fam = "ip6" if ":" in ip else "ip"
        if not _SAFE_IP.match(ip):
            raise BackendError(f"relay target {ip!r} is not an IP address")
        to = f"[{ip}]:{port}" if fam == "ip6" else f"{ip}:{port}"
        pre.append(f"udp dport {port_in} counter dnat {fam} to {to}")
        post.append(f"meta l4proto udp ct original proto-dst {port_in} masquerade to :{port_out}")
    if pre:
        chains.append(("relay_in", "prerouting priority dstnat", pre, "nat"))
        chains.append(("relay_out", "postrouting priority srcnat", post, "nat"))
    if not chains:
        return ""
    out = [f"table inet {table_name(ifname)} {{\n"]
    for name, hook, lines, *kind in chains:
        out.append(f"\tchain {name} {{\n\t\ttype {kind[0] if kind else 'filter'} hook {hook}; "
                   f"policy accept;\n")
        out.extend(f"\t\t{r}\n" for r in lines)
        out.append("\t}\n")
    out.append("}\n")
    return "".join(out)


def _run(script):
    try:
        proc = spawn.run(["nft", "-f", "-"], input=script, timeout=15)
    except FileNotFoundError:
        raise BackendError("nft not found: the data plane needs nftables (MSS clamping)") from None
    except spawn.Timeout:
        raise BackendError("nft did not finish within 15 s") from None
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise BackendError(f"nft failed: {' / '.join(msg[:3]) or f'exit {proc.returncode}'}")


def _drop(name):
    # `add` then `delete` works whether or not the table exists (nft 1.0.6 has no `destroy`).
    return f"add table inet {name}\ndelete table inet {name}\n"


def load(ifname, text):
    """Replace the table atomically with `text` (from render); "" removes it."""
    _run(_drop(table_name(ifname)) + text)


def delete(ifname):
    _run(_drop(table_name(ifname)))
