# Measuring an outage the way a user sees it: a LAN host pings a remote LAN host every 10 ms
# (`ping -D` timestamps each reply); the outage is the longest gap between replies around the
# event. Used by the failover tests, `make demo` and bench/failover.py.
import re
import subprocess
import time

_REPLY = re.compile(r"^\[(\d+\.\d+)\].*icmp_seq=(\d+)")


class PingWatch:
    def __init__(self, lab, src, dst, interval=0.01):
        self.t0 = time.time()
        self.proc = lab.ns.popen(src.host, ["ping", "-n", "-D", "-i", str(interval), "-W", "1", dst.host4],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.replies = None

    def stop(self):
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        self.replies = [float(m.group(1)) for m in map(_REPLY.match, out.splitlines()) if m]
        return self.replies

    def gap_after(self, t_event, until=None):
        """Longest silence (s) between replies that spans or follows t_event."""
        ts = [t for t in self.replies if until is None or t <= until]
        before = [t for t in ts if t <= t_event]
        after = [t for t in ts if t > t_event]
        if not after:
            return None
        points = ([before[-1]] if before else [t_event]) + after
        return max(b - a for a, b in zip(points, points[1:]))

    def replies_between(self, t1, t2):
        return sum(1 for t in self.replies if t1 <= t <= t2)
