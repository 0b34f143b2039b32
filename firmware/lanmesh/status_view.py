# Human rendering of `lanmesh status` (the JSON form is the daemon's reply as is).


def _age(s):
    if s is None:
        return "never"
    return f"{s:.0f}s ago" if s < 120 else f"{s / 60:.0f}m ago"


def _bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def table(rows, headers):
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths))]
    for r in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    return "\n".join(lines)


def render(st):
    doc = (f"fleet {st['fleet']} document v{st['version']}" if st["version"] is not None
           else "no network document yet (waiting for the fleet's)")
    if st.get("document_id"):
        doc += f" [{st['document_id']}]"
    proc = st.get("process") or {}
    mem = f", {proc['rss_kb'] / 1024:.1f} MB RSS" if proc.get("rss_kb") else ""
    out = [f"node {st['node']} on {st['interface']} ({st['backend']}), {doc}, "
           f"up {st['uptime']:.0f}s{mem}"]
    if st.get("rejected"):
        out.append("last document rejected: " + "; ".join(st["rejected"]))
    fleet = st.get("fleet_state")
    if fleet:
        if fleet.get("connected") and fleet.get("broker_error"):
            out.append(f"fleet broker {fleet.get('broker')}: connected, NOT working "
                       f"({fleet['broker_error']})")
        elif fleet.get("connected"):
            out.append(f"fleet broker {fleet.get('broker')}: connected")
        else:
            why = fleet.get("broker_error") or "connecting"
            out.append(f"fleet broker {fleet.get('broker')}: NOT connected ({why}); " +
                       ("the mesh keeps running on its last document" if st.get("version")
                        else "waiting for the fleet's first document"))
    out.append("")
    out.append(table([(p["name"], p["endpoint"] or "-", _age(p["last_handshake_age"]),
                       _bytes(p["rx"]), _bytes(p["tx"])) for p in st["peers"]],
                     ("peer", "endpoint", "handshake", "rx", "tx")))
    if st.get("links"):
        out.append("")
        out.append(table([(l["peer"], "up" if l["up"] else "DOWN",
                           "-" if l.get("rtt_ms") is None else f"{l['rtt_ms']:.1f} ms",
                           f"{100 * l.get('loss', 0):.0f}%") for l in st["links"]],
                         ("link", "state", "rtt", "loss")))
    out.append("")
    out.append(table([(r["prefix"], r["node"], r["via"] or "unreachable",
                       "direct" if r["via"] == r["node"] else ("relay" if r["via"] else "-"))
                      for r in st["routes"]], ("route", "node", "next hop", "")))
    return "\n".join(out)
