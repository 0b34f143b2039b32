# OpenWrt: the firewall rules that uci-defaults created (firewall.lanmesh_wg: WireGuard's
# port on the WAN; firewall.lanmesh_mesh: the mesh control port from the tunnel) follow
# the ports of the network document actually applied, so a fleet that moves its listen
# port does not lock itself out. Only a rule that exists is edited (a user who deleted it
# meant it), only a changed value is written, and fw4 is reloaded only then.
import os

from .. import spawn

RULES = {"listen_port": "firewall.lanmesh_wg.dest_port",
         "mesh_port": "firewall.lanmesh_mesh.dest_port",
         "path_port": "firewall.lanmesh_path.dest_port"}


def reconcile(ports, uci=("uci",), reload=("/etc/init.d/firewall", "reload"), timeout=30):
    """ports: {"listen_port": n, "mesh_port": n} → the changes made ["key=value"]."""
    changes = []
    for name, key in RULES.items():
        if ports.get(name) is None:
            continue
        r = spawn.run([*uci, "-q", "get", key], timeout=timeout)
        if r.returncode != 0:
            continue
        want = str(ports[name])
        if r.stdout.strip() != want:
            spawn.run([*uci, "set", f"{key}={want}"], check=True, timeout=timeout)
            changes.append(f"{key}={want}")
    if changes:
        spawn.run([*uci, "commit", "firewall"], check=True, timeout=timeout)
        if reload and os.access(reload[0], os.X_OK):
            spawn.run(list(reload), timeout=timeout)
    return changes
