# Provisioning time over the simulated console (tests/console_device.py): real /bin/sh
# behind the banner, kernel log lines, pyserial at 115200 on a pty. Prints the wall time
# of a first provisioning, of an idempotent re-run and of a --rekey, and the
# time per step of the first run.
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import serial  # noqa: E402

from console_device import Device  # noqa: E402
from lanmesh.operator import provision  # noqa: E402

CA = "-----BEGIN CERTIFICATE-----\n" + "\n".join(["M" * 64] * 25) + "\n-----END CERTIFICATE-----\n"


def once(dev, rekey=False):
    node = provision.Node("branch-7", ["198.19.7.0/24"], "acme", "B" * 43 + "=",
                          "mqtts://broker.example:8883", CA, None, "pw-123")
    marks = []
    t0 = time.monotonic()
    with serial.Serial(dev.host_port, 115200, timeout=0.05) as port:
        s = provision.provision(port, node, agent_cmd=dev.agent_cmd, rekey=rekey,
                                out=lambda line: marks.append((time.monotonic() - t0, line)))
    return s, time.monotonic() - t0, marks


def main(runs=5):
    first, again, rekey = [], [], []
    for i in range(runs):
        with tempfile.TemporaryDirectory() as d:
            dev = Device(d, seed=i)
            try:
                s, t, marks = once(dev)
                first.append(t)
                again.append(once(dev)[1])
                rekey.append(once(dev, rekey=True)[1])
            finally:
                dev.stop()
    prev = 0.0
    print("steps of the last first-time run:")
    for at, line in marks:
        print("  %5.2f s  +%4.2f  %s" % (at, at - prev, line[:70]))
        prev = at
    for name, xs in (("first provisioning", first), ("re-run (unchanged)", again), ("--rekey", rekey)):
        print("%-20s median %.2f s  min %.2f  max %.2f  (n=%d)" % (name, statistics.median(xs), min(xs), max(xs), len(xs)))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
