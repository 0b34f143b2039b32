# Run under MicroPython (tests/test_mesh_mpy.py does): the mesh core imports, a 4-node simulated
# mesh converges, fails over a cut link through a relay, and the wire decoder rejects junk.
# Prints "MESH-MPY-OK <figures>" on success; any failure raises (non-zero exit).
import sys

_here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
sys.path.insert(0, _here)
sys.path.insert(0, _here + "/../firmware")

from lanmesh.mesh import wire                         # noqa: E402
from test_mesh_sim import MeshSim                     # noqa: E402


def main():
    sim = MeshSim(["a", "b", "c", "d"])
    took = sim.run_until(lambda: sim.converged() and sim.hop("a", "c") == "c", 5000)
    assert took is not None, "no convergence"
    sim.run(1000)
    sim.cut_link("a", "c")
    fail = sim.run_until(lambda: sim.converged() and sim.hop("a", "c") in ("b", "d"), 3000, step=5)
    assert fail is not None and fail <= 1100, fail
    assert sim.walk("c", "a") == list(reversed(sim.walk("a", "c")))
    sim.run(200)
    assert sim.plans["a"].relayed["c"][0] == sim.hop("a", "c")     # a blind relay's port
    assert "198.19.3.0/24" in sim.plans["a"].allowed["c"]          # allowed IPs stay put
    for junk in (b"", b"\xa7\x03\x03\x02hq\x00", b"\xa7\x03\x01\x02HQ" + bytes(32)):
        try:
            wire.decode(junk)
        except wire.WireError:
            pass
        else:
            raise AssertionError("accepted junk %r" % junk)
    print("MESH-MPY-OK converge_ms=%d failover_ms=%d" % (took, fail))


main()
