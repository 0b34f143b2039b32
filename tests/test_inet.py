# lanmesh.inet against the stdlib's ipaddress, which it replaces in the daemon (~0.75 MB of
# imports): the same strings out, the same refusals, the same set relations.
import ipaddress
import random

import pytest

from lanmesh import inet


def _sparse_v6(rng):
    n = 0
    for i in range(8):          # runs of zero groups, to exercise the :: compression
        if rng.random() < 0.5:
            n |= rng.choice([1, 0xFFFF, rng.getrandbits(16)]) << (16 * i)
    return n


def test_addresses_and_prefixes_match_ipaddress():
    rng = random.Random(15)
    for _ in range(20000):
        v = rng.choice([4, 6])
        n = rng.getrandbits(32) if v == 4 else _sparse_v6(rng)
        ref = ipaddress.IPv4Address(n) if v == 4 else ipaddress.IPv6Address(n)
        a = inet.Address(v, n)
        assert str(a) == str(ref) and a.packed == ref.packed
        assert inet.ip_address(str(ref)) == a == inet.ip_address(ref.packed)
        text = f"{ref}/{rng.randint(0, ref.max_prefixlen)}"
        try:
            ipaddress.ip_network(text)
            strict_ok = True
        except ValueError:
            strict_ok = False
        if strict_ok:
            assert str(inet.ip_network(text)) == str(ipaddress.ip_network(text))
        else:
            with pytest.raises(ValueError, match="host bits set"):
                inet.ip_network(text)
        rn, nn = ipaddress.ip_network(text, strict=False), inet.ip_network(text, strict=False)
        assert (str(nn), int(nn.broadcast_address)) == (str(rn), int(rn.broadcast_address))
        assert inet.ip_interface(text) == str(ipaddress.ip_interface(text))
        other = f"{ref}/{rng.randint(0, ref.max_prefixlen)}"
        ro, no = ipaddress.ip_network(other, strict=False), inet.ip_network(other, strict=False)
        assert (nn.overlaps(no), nn.subnet_of(no), a in no) == (rn.overlaps(ro), rn.subnet_of(ro),
                                                               ref in ro)


@pytest.mark.parametrize("text", ["01.2.3.4", "1.2.3", "1.2.3.4 ", "256.1.1.1",
                                  "1::2::3", "00001::", "١.2.3.4", "", "1.2.3.4/33", "1.2.3.4/",
                                  "1.2.3.4/-1", "::/129", "1.2.3.4/ 8", "1.2.3.4/0x8"])
def test_refuses_what_ipaddress_refuses(text):
    with pytest.raises(ValueError):
        inet.ip_network(text)
    with pytest.raises(ValueError):
        ipaddress.ip_network(text)


def test_scope_ids_are_refused():
    # ipaddress takes fe80::1%eth0; a mesh endpoint or prefix with a scope means nothing to
    # another site, so inet refuses it
    with pytest.raises(ValueError):
        inet.ip_address("fe80::1%eth0")


def test_packed_bytes_and_mixed_families():
    assert str(inet.ip_address(b"\xc6\x12\x00\x01")) == "198.18.0.1"
    with pytest.raises(ValueError):
        inet.ip_address(b"\x00" * 5)
    v4, v6 = inet.ip_network("198.18.0.0/15"), inet.ip_network("fd00::/8")
    assert not v4.overlaps(v6) and inet.ip_address("fd00::1") not in v4
    assert str(inet.ip_address("::ffff:1.2.3.4")) == "::ffff:102:304"   # as ipaddress 3.11
