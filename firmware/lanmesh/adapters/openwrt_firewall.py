# OpenWrt: the firewall rules that uci-defaults created (firewall.lanmesh_wg: WireGuard's
# port on the WAN; firewall.lanmesh_mesh: the mesh control port from the tunnel) follow
# the ports of the network document actually applied, so a fleet that moves its listen
# port does not lock itself out. Only a rule that exists is edited (a user who deleted it
# meant it), only a changed value is written, and fw4 is reloaded only then.
import os
import subprocess

RULES = {"listen_port": "firewall.lanmesh_wg.dest_port",
         "mesh_port": "firewall.lanmesh_mesh.dest_port",
         "path_port": "firewall.lanmesh_path.dest_port"}


def reconcile(ports, uci=("uci",), reload=("/etc/init.d/firewall", "reload"), timeout=30):
    """ports: {"listen_port": n, "mesh_port": n} → the changes made ["key=value"]."""
    changes = []
    for name, key in RULES.items():
        if ports.get(name) is None:
            continue
        r = subprocess.run([*uci, "-q", "get", key], capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            continue
        want = str(ports[name])
        if r.stdout.strip() != want:
            subprocess.run([*uci, "set", f"{key}={want}"], check=True, timeout=timeout,
                           capture_output=True)
            changes.append(f"{key}={want}")
    if changes:
        subprocess.run([*uci, "commit", "firewall"], check=True, timeout=timeout,
                       capture_output=True)
        if reload and os.access(reload[0], os.X_OK):
            subprocess.run(list(reload), timeout=timeout, capture_output=True)
    return changes
