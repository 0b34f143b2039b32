# One WireGuard diff for both backends: the desired device against the device as read back
# (netlink dump or UAPI `get=1`) gives the minimal changes, and two encoders turn them into a
# netlink WireGuard.set() call list (kernel) or a UAPI `set=1` request (uapi). An unchanged
# peer is never touched and a changed one is edited in place (update_only), so its session,
# handshake and counters live on.
#
# The endpoint rule, written once (choose_endpoints): WireGuard roams a peer's endpoint to
# where its packets really come from (NAT rebinding, another address family). We set an
# endpoint only for a new peer, a peer without one, or when the configured endpoint changed
# (a new document, or a name that now resolves elsewhere); never because a route moved or a
# periodic re-apply came by, which would undo the roaming.
#
# Device dict: {"private_key", "listen_port", "peers": {key: peer}}; a peer has
# "endpoint" ("ip:port" / "[v6]:port" or None), "allowed_ips" (sorted tuple), "keepalive".
# In a desired device, a peer's "endpoint" is the one to set, or None: leave it alone.
from .uapi_proto import endpoint_key, split_endpoint


def choose_endpoints(current_peers, desired_peers, last_set):
    """desired_peers[key]["endpoint"]: the candidate endpoints the configuration resolves to
    now (may be empty: the peer dials us, or its name did not resolve). → ({key: endpoint to
    set, or None}, the new last_set {key: endpoint we set and still stand by})."""
    chosen, keep = {}, {}
    for key, want in desired_peers.items():
        cands = list(want["endpoint"])
        have = current_peers.get(key)
        last = last_set.get(key)
        wanted = [endpoint_key(c) for c in cands]
        ep = None
        if not cands:
            if last:
                keep[key] = last
        elif have is None or have["endpoint"] is None:
            ep = cands[0]
        elif want.get("force") and endpoint_key(have["endpoint"]) not in wanted:
            ep = cands[0]                   # a relay's port: roaming may not take it away
        elif split_endpoint(have["endpoint"])[0].strip("[]") in want.get("not_via", ()):
            ep = cands[0]                   # roamed onto a relay's port: back to our own
        elif last is not None and endpoint_key(last) in wanted:
            keep[key] = last                # ours, unchanged: the peer may have roamed since
        elif endpoint_key(have["endpoint"]) in wanted:
            keep[key] = have["endpoint"]    # already one the configuration names
        else:
            ep = cands[0]                   # the configuration moved (document or DNS)
        if ep is not None:
            keep[key] = ep
        chosen[key] = ep
    return chosen, keep


def diff(current, desired):
    """→ (device changes {"private_key"?, "listen_port"?}, [(key, None) for a removal, or
    (key, {"new": bool, "endpoint"?, "keepalive"?, "allowed_ips"?})]); both empty if equal."""
    dev = {}
    if desired["private_key"] != current.get("private_key"):
        dev["private_key"] = desired["private_key"]
    # Only when different: setting listen_port, even to the same value, rebinds the socket.
    # 0 means "any port": whatever the device picked is fine.
    if desired["listen_port"] and desired["listen_port"] != current.get("listen_port"):
        dev["listen_port"] = desired["listen_port"]
    have_peers = current.get("peers", {})
    changes = [(key, None) for key in sorted(have_peers) if key not in desired["peers"]]
    for key in sorted(desired["peers"]):
        want, have = desired["peers"][key], have_peers.get(key)
        c = {}
        if want["endpoint"] is not None and (
                have is None or endpoint_key(want["endpoint"]) != endpoint_key(have["endpoint"])):
            c["endpoint"] = want["endpoint"]
        if have is None or want["keepalive"] != have["keepalive"]:
            c["keepalive"] = want["keepalive"]
        if have is None or tuple(want["allowed_ips"]) != tuple(have["allowed_ips"]):
            c["allowed_ips"] = tuple(want["allowed_ips"])
        if c:
            c["new"] = have is None
            changes.append((key, c))
    return dev, changes


def to_uapi(dev, changes):
    """The `set=1` request, or "" when there is nothing to change."""
    lines = []
    if "private_key" in dev:
        lines.append(f"private_key={dev['private_key']}")
    if "listen_port" in dev:
        lines.append(f"listen_port={dev['listen_port']}")
    for key, c in changes:
        if c is None:
            lines += [f"public_key={key}", "remove=true"]
            continue
        lines.append(f"public_key={key}")
        if not c["new"]:
            lines.append("update_only=true")
        if "endpoint" in c:
            lines.append(f"endpoint={c['endpoint']}")
        if "keepalive" in c:
            lines.append(f"persistent_keepalive_interval={c['keepalive']}")
        if "allowed_ips" in c:
            lines.append("replace_allowed_ips=true")
            lines += [f"allowed_ip={p}" for p in c["allowed_ips"]]
    return "set=1\n" + "".join(line + "\n" for line in lines) + "\n" if lines else ""


def to_netlink(dev, changes):
    """[(pyroute2 WireGuard.set kwargs, description)] for the same changes."""
    steps = []
    if dev:
        steps.append((dict(dev), " and ".join(f"{k.replace('_', ' ')} set" for k in dev)))
    for key, c in changes:
        if c is None:
            steps.append(({"peer": {"public_key": key, "remove": True}}, f"peer {key[:8]}… removed"))
            continue
        peer = {"public_key": key}
        if not c["new"]:
            peer["update_only"] = True      # edit in place: never re-create a live peer
        if "endpoint" in c:
            host, port = split_endpoint(c["endpoint"])
            peer["endpoint_addr"], peer["endpoint_port"] = host, port
        if "keepalive" in c:
            peer["persistent_keepalive"] = c["keepalive"]
        if "allowed_ips" in c:
            peer["replace_allowed_ips"] = True
            peer["allowed_ips"] = list(c["allowed_ips"])
        what = "added" if c["new"] else "updated (" + ", ".join(
            n for k, n in (("endpoint", "endpoint_addr"), ("keepalive", "persistent_keepalive"),
                           ("allowed_ips", "allowed_ips")) if k in c) + ")"
        steps.append(({"peer": peer}, f"peer {key[:8]}… {what}"))
    return steps
