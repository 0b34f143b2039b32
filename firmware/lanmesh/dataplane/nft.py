# The tunnel's own nftables table, `inet lanmesh_<ifname>`: TCP MSS clamping for SYNs
# crossing the tunnel and forward accepts for relayed (wg→wg) and site (lan↔wg) traffic.
# The whole table is rendered as text and loaded in one `nft -f -` transaction, so the
# kernel never sees half a table. We own the table entirely and nothing else.
import re
import subprocess

from ..errors import BackendError

_SAFE_IFNAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,15}$")


def table_name(ifname):
    # nft identifiers are stricter than interface names ('-' and '.' are not allowed everywhere).
    return "lanmesh_" + re.sub(r"[^A-Za-z0-9_]", "_", ifname)


def render(ifname, mss_clamp=True, forwarding=True):
    """The table as `nft -f` text, or "" when there is nothing to install."""
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
    if not rules:
        return ""
    body = "".join(f"\t\t{r}\n" for r in rules)
    return (f"table inet {table_name(ifname)} {{\n"
            f"\tchain forward {{\n"
            f"\t\ttype filter hook forward priority mangle; policy accept;\n"
            f"{body}"
            f"\t}}\n"
            f"}}\n")


def _run(script):
    try:
        proc = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True,
                              timeout=15)
    except FileNotFoundError:
        raise BackendError("nft not found: the data plane needs nftables (MSS clamping)") from None
    except subprocess.TimeoutExpired:
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
