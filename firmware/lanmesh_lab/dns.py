# A DNS server for the test bed: answers A queries for the lab's own names from a table the
# test changes (a dynamic-DNS site moving), optionally slowly (a resolver that takes seconds,
# which must never stall the daemon's loop). It runs as a child process in a lab namespace;
# routers get it through /etc/netns/<namespace>/resolv.conf, which `ip netns exec` mounts
# over /etc/resolv.conf. Lab.close() removes those files with the namespaces.
#
#   python -m lanmesh_lab.dns TABLE_FILE DELAY_MS     (TABLE_FILE: JSON {name: ipv4})
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time


def _question(packet):
    """(id, qname, qtype, end of question) of a query, or None."""
    if len(packet) < 12:
        return None
    qid, flags, qd = struct.unpack_from("!HHH", packet)
    if flags & 0x8000 or qd != 1:
        return None
    labels, i = [], 12
    while i < len(packet) and packet[i]:
        n = packet[i]
        labels.append(packet[i + 1:i + 1 + n].decode("ascii", "replace").lower())
        i += 1 + n
    if i + 5 > len(packet):
        return None
    qtype = struct.unpack_from("!H", packet, i + 1)[0]
    return qid, ".".join(labels), qtype, i + 5


def answer(packet, table):
    q = _question(packet)
    if q is None:
        return None
    qid, name, qtype, end = q
    ip = table.get(name)
    found = ip is not None and qtype == 1
    flags = 0x8180 if ip is not None else 0x8183        # NXDOMAIN for names we do not know
    head = struct.pack("!HHHHHH", qid, flags, 1, 1 if found else 0, 0, 0)
    body = packet[12:end]
    if found:
        body += struct.pack("!HHHIH", 0xC00C, 1, 1, 1, 4) + socket.inet_aton(ip)
    return head + body


def main():
    table_file, delay = sys.argv[1], int(sys.argv[2]) / 1000
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 53))
    print("ready", flush=True)

    def reply(data, addr):
        time.sleep(delay)
        try:
            with open(table_file) as f:
                table = json.load(f)
        except (OSError, ValueError):
            table = {}
        out = answer(data, table)
        if out:
            s.sendto(out, addr)
    while True:
        data, addr = s.recvfrom(512)
        threading.Thread(target=reply, args=(data, addr), daemon=True).start()


class LabDns:
    """The server in `ns` (reachable at `ip` from the routers) serving `table`."""

    def __init__(self, lab, ns, table, delay_ms=0):
        self.lab = lab
        self.path = os.path.join(lab.workdir, "dns.json")
        self.set(table)
        self.proc = lab.ns.popen(ns, [sys.executable, "-m", "lanmesh_lab.dns", self.path,
                                      str(delay_ms)], stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("lab DNS server did not start")

    def set(self, table):
        from lanmesh.atomic import write_atomic
        write_atomic(self.path, json.dumps(table))

    def use(self, site, server_ip):
        """Make `site`'s router resolve through this server."""
        d = f"/etc/netns/{site.router}"
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "resolv.conf"), "w") as f:
            f.write(f"nameserver {server_ip}\noptions timeout:10 attempts:1\n")
        self.lab.netns_etc.append(d)


if __name__ == "__main__":
    main()
