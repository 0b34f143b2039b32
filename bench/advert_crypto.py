# Signed link-state adverts (issue 10): what one signature and one verification cost, with
# libsodium (ctypes) and with the pure-Python fallback, measured side by side in this run,
# and how many of each a node does per second in a 16-site mesh, idle and under churn
# (a link cut or healed every 2 s), on the simulated network of tests/test_mesh_sim.py with
# real XEdDSA keys. CPU per node = rate x cost. The 580 MHz MIPS figure is an estimate from
# the usual 20-40x CPython slowdown there (stated as such, not measured).
#   .venv/bin/python bench/advert_crypto.py [--sites 16] [--seconds 120]
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "firmware"))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from lanmesh import ed25519                                 # noqa: E402
from lanmesh.advert_keys import AdvertKeys                  # noqa: E402
from lanmesh.keys import decode_key, genkey, pubkey         # noqa: E402
from lanmesh.mesh import wire                               # noqa: E402
from test_mesh_sim import MeshSim, real_keys                # noqa: E402

MIPS_SLOWDOWN = (20, 40)


def per_op(fn, n):
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def costs():
    k = genkey()
    keys = AdvertKeys(k)
    lsa = wire.Lsa("site-a", 12345, {"site-%02d" % i: 10 + i for i in range(15)})
    msg = wire.signed_bytes(lsa)
    sig = keys.sign(msg)
    ed = ed25519.edwards_public(decode_key(pubkey(k)))
    assert ed25519.verify(ed, msg, sig) and ed25519.verify_pure(ed, msg, sig)
    return {"sign": per_op(lambda: keys.sign(msg), 200),
            "verify_libsodium": per_op(lambda: ed25519.verify(ed, msg, sig), 5000)
            if ed25519.engine() == "libsodium" else None,
            "verify_python": per_op(lambda: ed25519.verify_pure(ed, msg, sig), 100)}


def rates(sites, seconds, churn):
    names = ["s%02d" % i for i in range(sites)]
    sim = MeshSim(names, keys=real_keys(names))
    if sim.run_until(sim.converged, 30000) is None:
        raise SystemExit("no convergence")
    sim.run(5000)
    before = {n: (k.signed, k.verified) for n, k in sim.keys.items()}
    t0 = sim.t
    step, cut = 2000, None
    while sim.t - t0 < seconds * 1000:
        if churn:
            if cut is None:
                cut = (names[1], names[2 + (sim.t // step) % (sites - 2)])
                sim.cut_link(*cut)
            else:
                sim.heal_link(*cut)
                cut = None
        sim.run(step)
    dt = (sim.t - t0) / 1000
    signed = [(k.signed - before[n][0]) / dt for n, k in sim.keys.items()]
    verified = [(k.verified - before[n][1]) / dt for n, k in sim.keys.items()]
    return max(signed), sum(signed) / sites, max(verified), sum(verified) / sites


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sites", type=int, default=16)
    ap.add_argument("--seconds", type=int, default=120)
    a = ap.parse_args()
    c = costs()
    print(f"engine here: {ed25519.engine()}")
    print(f"per advert: sign (XEdDSA, pure Python) {c['sign'] * 1e3:.2f} ms; verify libsodium "
          f"{c['verify_libsodium'] * 1e3:.3f} ms" if c["verify_libsodium"] else "", end="")
    print(f"; verify pure Python {c['verify_python'] * 1e3:.2f} ms "
          f"(pure / libsodium = {c['verify_python'] / (c['verify_libsodium'] or 1):.0f}x)")
    for churn in (False, True):
        smax, savg, vmax, vavg = rates(a.sites, a.seconds, churn)
        v = c["verify_libsodium"] or c["verify_python"]
        cpu = savg * c["sign"] + vavg * v
        cpu_py = savg * c["sign"] + vavg * c["verify_python"]
        what = "churn (a link cut/healed every 2 s)" if churn else "idle"
        print(f"{a.sites} sites, {what}: per node {savg:.2f} signs/s (max {smax:.2f}), "
              f"{vavg:.2f} verifies/s (max {vmax:.2f}); CPU {cpu * 100:.3f} % of a core here "
              f"(pure-Python verify: {cpu_py * 100:.3f} %); est. 580 MHz MIPS "
              f"{cpu * 100 * MIPS_SLOWDOWN[0]:.2f}-{cpu * 100 * MIPS_SLOWDOWN[1]:.2f} % "
              f"(pure-Python verify: {cpu_py * 100 * MIPS_SLOWDOWN[0]:.1f}-"
              f"{cpu_py * 100 * MIPS_SLOWDOWN[1]:.1f} %)", flush=True)


if __name__ == "__main__":
    main()
