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


def test_kernel_and_uapi_sites_interoperate(kernel_wireguard, make_lab):
    lab = make_lab(2, backend=["kernel", "uapi"])
    a, b = lab.sites
    assert (a.backend, b.backend) == ("kernel", "uapi")
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
        peer, = lab.status(s)["peers"]
        assert peer["last_handshake_age"] is not None and peer["rx"] > 0 and peer["tx"] > 0
