# Link-state database: newer/older/same, own-LSA fight-back, ageing that survives re-flooding,
# digest equality.
from lanmesh.ticks import TICKS_PERIOD, ticks_add
from lanmesh.mesh.lsdb import Lsdb, NEWER, SAME, OLDER, OWN, EXPIRED
from lanmesh.mesh.wire import Lsa

T0 = TICKS_PERIOD - 1000


def _consider(db, lsa, now):
    v = db.classify(lsa)
    if v == NEWER:
        db.store(lsa, now)
    return v


def test_newer_stored_older_and_same_ignored():
    db = Lsdb("me", max_age_ms=60000)
    assert _consider(db, Lsa("x", 5, {"y": 3}), T0) == NEWER
    assert _consider(db, Lsa("x", 5, {"y": 3}), T0) == SAME
    assert _consider(db, Lsa("x", 4, {"y": 9}), T0) == OLDER
    assert db.get("x").links == {"y": 3}
    assert _consider(db, Lsa("x", 6, {}), T0) == NEWER and db.get("x").links == {}


def test_own_lsa_from_before_a_restart_is_reported_for_fight_back():
    db = Lsdb("me")
    db.install_own(Lsa("me", 1, {}), T0)
    assert _consider(db, Lsa("me", 900, {"x": 1}), T0) == OWN
    assert db.get("me").seq == 1                     # not stored: the node re-originates
    assert _consider(db, Lsa("me", 1, {}), T0) == SAME


def test_expiry_across_wrap_and_age_carried_when_reflooded():
    db = Lsdb("me", max_age_ms=10000)
    _consider(db, Lsa("x", 1, {}), T0)
    t = ticks_add(T0, 4000)
    out = db.outgoing("x", t)
    assert out.age_s == 4
    other = Lsdb("other", max_age_ms=10000)
    _consider(other, out, t)
    assert db.expire(ticks_add(T0, 9999)) == []
    assert db.expire(ticks_add(T0, 10000)) == ["x"] and db.get("x") is None
    # the re-flooded copy expires at the same time, not 10 s after it was passed on
    assert other.expire(ticks_add(T0, 10000)) == ["x"]
    assert _consider(db, Lsa("y", 1, {}, age_s=10), T0) == EXPIRED


def test_own_lsa_never_expires_and_digest_tracks_content():
    a, b = Lsdb("a", max_age_ms=1000), Lsdb("b", max_age_ms=1000)
    a.install_own(Lsa("a", 3, {}), T0)
    _consider(b, Lsa("a", 3, {}), T0)
    b.install_own(Lsa("b", 1, {}), T0)
    _consider(a, Lsa("b", 1, {}), T0)
    assert a.digest() == b.digest()
    _consider(a, Lsa("b", 2, {}), T0)
    assert a.digest() != b.digest()
    assert a.expire(ticks_add(T0, 5000)) == ["b"] and a.get("a") is not None


def test_digest_detects_two_seqs_moving_together():
    a, b = Lsdb("a"), Lsdb("b")
    for db, s in ((a, 4), (b, 5)):
        _consider(db, Lsa("x", s, {}), T0)
        _consider(db, Lsa("w", s, {}), T0)
    assert a.digest() != b.digest()
