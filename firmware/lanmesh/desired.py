# Network document + this node's identity (+ the mesh's routing plan) → the LinkState the
# backend reconciles to. Pure: same inputs, same LinkState, so re-applying is a no-op.
from . import inet
from .dataplane.linkstate import LinkState, PeerState
from .dataplane.uapi_proto import format_endpoint, split_endpoint
from .mesh.plan import make_plan, node_facts


def direct_plan(doc, self_name):
    """Static full mesh: every other node is its own next hop."""
    return {name: name for name in doc.nodes if name != self_name}


def plan(doc, self_name, next_hops=None):
    """The mesh core's plan (next hops, allowed IPs per peer) for `next_hops`, or for the
    direct full mesh when None — one function, so the core and the data plane agree."""
    if next_hops is None:
        next_hops = direct_plan(doc, self_name)
    nodes = {name: node_facts(n) for name, n in doc.nodes.items()}
    return make_plan(self_name, nodes, next_hops)


def endpoint_host(node):
    """The host of a node's first endpoint (an address or a name), or None."""
    return split_endpoint(node.endpoints[0])[0] if node.endpoints else None


def endpoint_ip(node):
    """The IP of a node's first endpoint when it is written as an address, else None."""
    host = endpoint_host(node)
    try:
        return str(inet.ip_address(host)) if host else None
    except ValueError:
        return None                 # a name: the daemon looks it up


def _port_of(node, default):
    return split_endpoint(node.endpoints[0])[1] if node.endpoints else default


def link_state(cfg, doc, private_key, routing=None, underlay=None, relay_maps=(), hold=()):
    """routing: the plan (desired.plan / the mesh core's) to follow; None: direct mesh.
    underlay(name, port) -> (ip, port) or None: where a node is on the underlay (the daemon's
    learned addresses and the document). relay_maps: what this node forwards as a relay.
    hold: peers just back from a relay: if WireGuard roamed onto a relay's port meanwhile
    (the relay then forgets the session: a dead end), their own endpoint is set again."""
    me = doc.node(cfg.name)
    s = doc.settings
    routing = routing or plan(doc, cfg.name)
    peers = []
    routes = {doc.overlay4, doc.overlay6}
    for name, n in doc.nodes.items():
        if name == cfg.name:
            continue
        endpoint = n.endpoints[0] if n.endpoints else None
        relay = routing.relayed.get(name)
        at = underlay(relay[0], relay[1]) if relay and underlay else None
        if at is not None:                  # blind relay: the relay's port for this session
            endpoint = format_endpoint(*at)
        relays = ()
        if name in hold and underlay is not None:
            relays = [u[0] for u in (underlay(r, 0) for r in doc.nodes if r not in (name, cfg.name))
                      if u is not None]
        peers.append(PeerState(n.public_key, routing.allowed[name], endpoint=endpoint,
                               keepalive=s["keepalive"], force_endpoint=at is not None,
                               not_via=relays))
        routes.update(n.lan)
    relays = []
    for port_in, port_out, kind, name, port in relay_maps:
        n = doc.node(name)
        if n is None or underlay is None:
            continue
        at = underlay(name, _port_of(n, s["listen_port"]) if kind == "node" else port)
        if at is not None:
            relays.append((port_in, port_out, at[0], at[1]))
    base = s["relay_port_base"]
    return LinkState(cfg.interface, private_key, cfg.listen_port or s["listen_port"], peers,
                     addresses=(me.ipv4, me.ipv6), routes=routes, mtu=s["mtu"],
                     mesh_port=s["mesh_port"], relays=relays,
                     relay_range=(base, base + 2 * s["relay_sessions"] - 1) if me.relay else None)
