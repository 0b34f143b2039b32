# What each site's router sends over the WAN, counted by nftables in the WAN namespace (so the
# count is the kernel's, whatever the daemon thinks it sent): UDP packets and bytes (IP
# length) per source site, split into the path-probe port and everything else (WireGuard).
# Used by the 16-site idle test and bench/control_traffic.py.
import os
import re
import time

from .netns import cpu_ticks

_TABLE = "lab_count"


class WanCounters:
    def __init__(self, lab, path_port=51822):
        self.lab = lab
        rules = []
        for s in lab.sites:
            rules.append(f'ip saddr {s.wan_ip} udp dport {path_port} counter comment "path {s.name}"')
            rules.append(f'ip saddr {s.wan_ip} udp dport != {path_port} counter comment "wg {s.name}"')
        body = "\n".join("    " + r for r in rules)
        lab.ns.exec(lab.wan, "nft", "-f", "-", input=(
            f"table inet {_TABLE}\ndelete table inet {_TABLE}\n"
            f"table inet {_TABLE} {{\n  chain forward {{\n"
            "    type filter hook forward priority -5; policy accept;\n" + body + "\n  }\n}\n"))

    def read(self):
        """{site name: {"path": (packets, bytes), "wg": (packets, bytes)}}"""
        out = {}
        text = self.lab.ns.exec(self.lab.wan, "nft", "list", "table", "inet", _TABLE).stdout
        for m in re.finditer(r'counter packets (\d+) bytes (\d+) comment "(path|wg) ([^"]+)"', text):
            out.setdefault(m.group(4), {})[m.group(3)] = (int(m.group(1)), int(m.group(2)))
        return out


def window(lab, seconds, counters=None):
    """Run `seconds` and return, per site, what it sent over the WAN and its daemon's
    wake-ups and CPU: {name: {"pkts_s", "bytes_s", "path_pkts_s", "wakeups_s", "cpu_pct",
    "sample_ms"}} (sample_ms: the daemon's time per counter sample, 0 before issue 14)."""
    counters = counters or WanCounters(lab)
    def snap():
        c = counters.read()
        st = {s.name: lab.status(s, retry_s=5)["mesh"] for s in lab.sites}
        cpu = {s.name: cpu_ticks(s.proc.pid) / os.sysconf("SC_CLK_TCK") for s in lab.sites}
        return c, st, cpu, time.monotonic()
    c0, s0, u0, t0 = snap()
    time.sleep(seconds)
    c1, s1, u1, t1 = snap()
    dt = t1 - t0
    out = {}
    for s in lab.sites:
        n = s.name
        wg = [b - a for a, b in zip(c0[n]["wg"], c1[n]["wg"])]
        path = [b - a for a, b in zip(c0[n]["path"], c1[n]["path"])]
        out[n] = {"pkts_s": (wg[0] + path[0]) / dt, "bytes_s": (wg[1] + path[1]) / dt,
                  "path_pkts_s": path[0] / dt,
                  "wakeups_s": (s1[n]["wakeups"] - s0[n]["wakeups"]) / dt,
                  "cpu_pct": (u1[n] - u0[n]) / dt * 100,
                  "sample_ms": ((s1[n].get("sample_ms_total", 0) - s0[n].get("sample_ms_total", 0)) /
                                max(1, s1[n].get("samples", 0) - s0[n].get("samples", 0)))}
    return out
