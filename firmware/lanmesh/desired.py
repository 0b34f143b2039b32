# Network document + this node's identity (+ the mesh's routing plan) → the LinkState the
# backend reconciles to. Pure: same inputs, same LinkState, so re-applying is a no-op.
from .dataplane.linkstate import LinkState, PeerState
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


def link_state(cfg, doc, private_key, routing=None):
    """routing: the plan (desired.plan / the mesh core's) to follow; None: direct mesh."""
    me = doc.node(cfg.name)
    s = doc.settings
    allowed = (routing or plan(doc, cfg.name)).allowed
    peers = []
    routes = {doc.overlay4, doc.overlay6}
    for name, n in doc.nodes.items():
        if name == cfg.name:
            continue
        peers.append(PeerState(n.public_key, allowed[name],
                               endpoint=n.endpoints[0] if n.endpoints else None,
                               keepalive=s["keepalive"]))
        routes.update(n.lan)
    return LinkState(cfg.interface, private_key, cfg.listen_port or s["listen_port"], peers,
                     addresses=(me.ipv4, me.ipv6), routes=routes, mtu=s["mtu"],
                     mesh_port=s["mesh_port"])
