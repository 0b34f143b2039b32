# Link-state database: newer/older/same, own-LSA fight-back, ageing that survives re-flooding,
# digest equality.
from lanmesh.ticks import TICKS_PERIOD, ticks_add
from lanmesh.mesh.lsdb import Lsdb, NEWER, SAME, OLDER, OWN, EXPIRED
from lanmesh.mesh.wire import Lsa

T0 = TICKS_PERIOD - 1000


def test_newer_stored_older_and_same_ignored():
    db = Lsdb("me", max_age_ms=60000)
    assert db.consider(Lsa("x", 5, {"y": 3}), T0) == NEWER
    assert db.consider(Lsa("x", 5, {"y": 3}), T0) == SAME
    assert db.consider(Lsa("x", 4, {"y": 9}), T0) == OLDER
    assert db.get("x").links == {"y": 3}
    assert db.consider(Lsa("x", 6, {}), T0) == NEWER and db.get("x").links == {}


def test_own_lsa_from_before_a_restart_is_reported_for_fight_back():
    db = Lsdb("me")
    db.install_own(Lsa("me", 1, {}), T0)
    assert db.consider(Lsa("me", 900, {"x": 1}), T0) == OWN
    assert db.get("me").seq == 1                     # not stored: the node re-originates
    assert db.consider(Lsa("me", 1, {}), T0) == SAME


def test_expiry_across_wrap_and_age_carried_when_reflooded():
    db = Lsdb("me", max_age_ms=10000)
    db.consider(Lsa("x", 1, {}), T0)
    t = ticks_add(T0, 4000)
    out = db.outgoing("x", t)
    assert out.age_s == 4
    other = Lsdb("other", max_age_ms=10000)
    other.consider(out, t)
    assert db.expire(ticks_add(T0, 9999)) == []
    assert db.expire(ticks_add(T0, 10000)) == ["x"] and db.get("x") is None
    # the re-flooded copy expires at the same time, not 10 s after it was passed on
    assert other.expire(ticks_add(T0, 10000)) == ["x"]
    assert db.consider(Lsa("y", 1, {}, age_s=10), T0) == EXPIRED


def test_own_lsa_never_expires_and_digest_tracks_content():
    a, b = Lsdb("a", max_age_ms=1000), Lsdb("b", max_age_ms=1000)
    a.install_own(Lsa("a", 3, {}), T0)
    b.consider(Lsa("a", 3, {}), T0)
    b.install_own(Lsa("b", 1, {}), T0)
    a.consider(Lsa("b", 1, {}), T0)
    assert a.digest() == b.digest()
    a.consider(Lsa("b", 2, {}), T0)
    assert a.digest() != b.digest()
    assert a.expire(ticks_add(T0, 5000)) == ["b"] and a.get("a") is not None


def test_digest_detects_two_seqs_moving_together():
    a, b = Lsdb("a"), Lsdb("b")
    for db, s in ((a, 4), (b, 5)):
        db.consider(Lsa("x", s, {}), T0)
        db.consider(Lsa("w", s, {}), T0)
    assert a.digest() != b.digest()
