# Issue 3 acceptance: a site on the `kernel` backend (Linux WireGuard) and a site on `uapi`
# (wireguard-go) in one mesh interoperate. Needs a kernel with WireGuard: on the test
# machines that is the qemu VM (tests/test_kernel_vm.py runs this file there).
import pytest

from test_site_mesh import SLOW, assert_wg_show_matches

pytestmark = pytest.mark.netns


@pytest.fixture
def kernel_wireguard():
    from lanmesh.dataplane.kernel import kernel_available
    if not kernel_available():
        pytest.skip("this kernel has no WireGuard (lanmesh.dataplane.kernel.kernel_available() "
                    "is False): tests/test_kernel_vm.py runs this test inside the qemu VM")


def test_kernel_and_uapi_sites_interoperate_and_relay_for_each_other(kernel_wireguard, make_lab):
    # One lab (each costs ~30 s in the VM): kernel a, uapi b, kernel c.
    lab = make_lab(3, backend=["kernel", "uapi", "kernel"])
    a, b, c = lab.sites
    assert (a.backend, b.backend, c.backend) == ("kernel", "uapi", "kernel")
    lab.start_all(timeout=15 * SLOW)
    assert lab.wait_ping(a, b, timeout=20 * SLOW), lab.daemon_log(a) + lab.daemon_log(b)
    assert lab.wait_ping(b, a, timeout=10 * SLOW), lab.daemon_log(b)
    for src, dst in ((a, b), (b, a)):
        for family in (4, 6):
            ok, out = lab.ping(src, dst, family=family, count=2, wait_s=2)
            assert ok, f"{src.name} ({src.backend}) → {dst.name} ({dst.backend}) IPv{family}\n{out}"
    # each side really is the backend it claims: a kernel link on a, wireguard-go behind b
    kinds = {s.name: lab.ns.exec(s.router, "ip", "-d", "link", "show", s.ifname).stdout
             for s in lab.sites}
    assert "wireguard" in kinds[a.name] and "tun type" not in kinds[a.name], kinds[a.name]
    assert "tun type" in kinds[b.name], kinds[b.name]
    comms = [open(f"/proc/{p}/comm").read().strip() for p in lab.ns.pids(a.router)]
    assert "wireguard-go" not in comms, comms
    comms = [open(f"/proc/{p}/comm").read().strip() for p in lab.ns.pids(b.router)]
    assert "wireguard-go" in comms, comms
    for s in lab.sites:
        assert_wg_show_matches(lab, s, lab.sites)
        for peer in lab.status(s)["peers"]:
            assert peer["last_handshake_age"] is not None and peer["rx"] > 0 and peer["tx"] > 0
    # Issue 14, must show 5: a uapi relay carries a kernel↔kernel session, and a kernel relay
    # a uapi↔kernel one; link liveness reads counters from both (netlink dump, UAPI get).
    assert lab.wait_direct(timeout=30 * SLOW), [lab.routes(s) for s in lab.sites]
    lab.cut(a, c)                                       # kernel a ↔ kernel c via uapi b
    relayed_ping(lab, a, c, via=b)
    relayed_ping(lab, c, a, via=b)
    lab.restore(a, c)
    assert lab.wait_routes(a, {c.name: c.name}, timeout=30 * SLOW), lab.routes(a)
    lab.cut(b, c)                                       # uapi b ↔ kernel c via kernel a
    relayed_ping(lab, b, c, via=a)
    relayed_ping(lab, c, b, via=a)


def relayed_ping(lab, src, dst, via):
    assert lab.wait_routes(src, {dst.name: via.name}, timeout=10 * SLOW), lab.routes(src)
    assert lab.wait_ping(src, dst, timeout=10 * SLOW), lab.daemon_log(src)
    assert lab.status(via)["relay"]["sessions"], lab.status(via)["relay"]
    # the session rides the relay's port: the relay forwards it in its kernel (nft NAT)
    nft = lab.ns.exec(via.router, "nft", "list", "table", "inet", "lanmesh_" + via.ifname).stdout
    assert "dnat" in nft, nft
