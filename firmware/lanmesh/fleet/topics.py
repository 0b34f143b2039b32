# The fleet's MQTT topic tree (DESIGN §5). One place builds and parses topic names so the
# node, the controller and the broker ACL agree. Pure and MicroPython-compatible.

NET = "net"
STATE_ONLINE = "online"
STATE_OFFLINE = "offline"   # clean shutdown
STATE_LOST = "lost"         # last will: the broker lost the node


def prefix_for(fleet):
    return "lanmesh/" + fleet + "/"


def _p(prefix):
    return prefix if prefix.endswith("/") else prefix + "/"


def net(prefix):
    return _p(prefix) + NET


def node(prefix, name):
    return _p(prefix) + "node/" + name + "/"


def state(prefix, name):
    return node(prefix, name) + "state"


def reported(prefix, name):
    return node(prefix, name) + "reported"


def cmd(prefix, name, cid="#"):
    return node(prefix, name) + "cmd/" + cid


def resp(prefix, name, cid):
    return node(prefix, name) + "resp/" + cid


def update(prefix, name):
    """Retained: the signed release manifest the controller assigned to this node."""
    return node(prefix, name) + "update"


def release(prefix, version):
    """Retained: release `version`'s signed manifest (a router fetches its running version's
    package from it, to roll back to)."""
    return "%supdate/%s/manifest" % (_p(prefix), version)


def chunk(prefix, version, fmt, index):
    """Retained: chunk `index` of the release's `fmt` artefact."""
    return "%supdate/%s/%s/%d" % (_p(prefix), version, fmt, index)


def parse_chunk(prefix, topic):
    """'<prefix>update/0.2.0/ipk/3' → ('0.2.0', 'ipk', 3); anything else → None."""
    p = _p(prefix) + "update/"
    if not topic.startswith(p):
        return None
    parts = topic[len(p):].split("/")
    if len(parts) != 3 or not parts[2].isdigit() or len(parts[2]) > 6:
        return None
    return parts[0], parts[1], int(parts[2])


def all_states(prefix):
    return _p(prefix) + "node/+/state"


def all_reported(prefix):
    return _p(prefix) + "node/+/reported"


def parse_node_topic(prefix, topic):
    """'<prefix>node/hq/reported' → ('hq', 'reported'); cmd/resp → ('hq', 'cmd/<id>');
    anything else → None."""
    p = _p(prefix) + "node/"
    if not topic.startswith(p):
        return None
    rest = topic[len(p):]
    i = rest.find("/")
    if i <= 0 or i == len(rest) - 1:
        return None
    return rest[:i], rest[i + 1:]
