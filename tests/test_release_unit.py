# Issue 15, the router's judgement of a release and its fetch (pure parts, no broker):
# every refusal of must-show 4 with its reason, the chunk window, and resumable downloads.
import hashlib
import os

import pytest

from lanmesh.fleet import signing
from lanmesh.operator import releases
from lanmesh.release import fetch, manifest as mf
from lanmesh.release.download import Download

KEY = signing.generate_key()
PUB = signing.public_key(KEY)
OTHER = signing.generate_key()


def pkg(tmp_path, name="lanmesh_0.2.0-r1_all.ipk", size=100_000):
    p = tmp_path / name
    p.write_bytes(os.urandom(size))
    return str(p)


def signed(doc, key=KEY):
    return signing.envelope_bytes(signing.sign(doc, key))


def opened(data, fmt="ipk", board="tplink-archer-c7-v5", running="0.1.0", fleet="acme"):
    return mf.open_release(data, PUB, fleet, fmt, board, running)


def test_versions_order_and_bad_ones_are_refused():
    v = mf.parse_version
    assert v("0.2.0") > v("0.1.9") and v("0.10.0") > v("0.9.0") and v("0.2.0-r2") > v("0.2.0-r1")
    assert v("0.2") == v("0.2.0") and v("1.0.0") > v("0.99.99-r9")
    for bad in ("", "x", "0.2.0-", "0.2.0-rc1", "1..2", "-1", "0.2.0 ", None, 2, "1.2.3.4.5"):
        with pytest.raises(ValueError):
            v(bad)
    assert releases.package_version("lanmesh_0.2.0-r1_all.ipk") == "0.2.0"
    assert releases.package_version("/x/lanmesh-0.2.0-r1.apk") == "0.2.0"
    assert releases.package_version("lanmesh_0.2.0-1_all.deb") == "0.2.0"
    with pytest.raises(releases.ReleaseError, match="version"):
        releases.package_version("other.ipk")


def test_a_good_manifest_opens_for_its_platform(tmp_path):
    doc, files = releases.build_manifest("acme", [pkg(tmp_path), pkg(tmp_path, "lanmesh_0.2.0-1_all.deb")],
                                         boards=["tplink-archer-c7-v5"], chunk_size=16384)
    assert doc["version"] == "0.2.0" and sorted(doc["artefacts"]) == ["deb", "ipk"]
    a = doc["artefacts"]["ipk"]
    assert len(a["chunks"]) == 7 and a["sha256"] == hashlib.sha256(open(files["ipk"], "rb").read()).hexdigest()
    r = opened(signed(doc))
    assert (r.version, r.fmt, r.chunks, r.chunk_length(6)) == ("0.2.0", "ipk", 7, 100_000 - 6 * 16384)


@pytest.mark.parametrize("change, reason", [
    (lambda d: d, None),
    (lambda d: dict(d, fleet="other"), "is for fleet 'other'"),
    (lambda d: dict(d, version="0.1.0"), "not newer than the running 0.1.0"),
    (lambda d: dict(d, version="0.0.9"), "not newer"),
    (lambda d: dict(d, boards=["glinet-gl-mt6000"]), "not for this board (tplink-archer-c7-v5"),
    (lambda d: dict(d, min_from="0.1.5"), "upgrades only from 0.1.5"),
    (lambda d: dict(d, artefacts={"deb": d["artefacts"]["ipk"]}), "has no ipk package"),
    (lambda d: dict(d, kind="network"), "not a release manifest"),
    (lambda d: dict(d, artefacts={"ipk": dict(d["artefacts"]["ipk"], size=mf.MAX_ARTEFACT_BYTES + 1)}),
     "size: 1.."),
    (lambda d: dict(d, artefacts={"ipk": dict(d["artefacts"]["ipk"], chunks=[])}), "0 digests"),
    (lambda d: dict(d, artefacts={"ipk": dict(d["artefacts"]["ipk"], file="../../etc/passwd")}),
     "plain file name"),
])
def test_refusals_say_why(tmp_path, change, reason):
    doc, _ = releases.build_manifest("acme", [pkg(tmp_path)])
    data = signed(change(dict(doc)))
    if reason is None:
        assert opened(data).version == "0.2.0"
        return
    with pytest.raises(mf.ReleaseRefused, match=reason.replace("(", r"\(").replace(".", r"\.")):
        opened(data)


def test_signature_and_key_refusals(tmp_path):
    doc, _ = releases.build_manifest("acme", [pkg(tmp_path)])
    with pytest.raises(mf.ReleaseRefused, match="does not verify with the fleet key"):
        opened(signed(doc, OTHER))                  # another fleet's key
    tampered = signed(doc).replace(b'"0.2.0"', b'"0.3.0"')
    with pytest.raises(mf.ReleaseRefused, match="does not verify"):
        opened(tampered)
    with pytest.raises(mf.ReleaseRefused, match="over the"):
        opened(b"{" + b" " * mf.MAX_MANIFEST_BYTES + b"}")
    with pytest.raises(mf.ReleaseRefused, match="not a signed envelope"):
        opened(b'{"doc": {}}')
    # a network document signed by the same key is not a manifest
    net = {"fleet": "acme", "version": 9, "overlay": {}, "settings": {}, "nodes": []}
    with pytest.raises(mf.ReleaseRefused, match="not a release manifest"):
        opened(signed(net))


def _release(tmp_path, size=100_000, chunk=16384):
    path = pkg(tmp_path, size=size)
    doc, _ = releases.build_manifest("acme", [path], chunk_size=chunk)
    return opened(signed(doc)), open(path, "rb").read()


def test_download_checks_each_chunk_resumes_and_verifies_the_whole(tmp_path):
    r, data = _release(tmp_path)
    d = Download(r, str(tmp_path / "dl"))
    assert d.resume() is False and d.missing() == list(range(7))
    chunk = lambda i: data[i * 16384:(i + 1) * 16384]   # noqa: E731
    for bad, why in ((chunk(0)[:-1], "truncated"), (chunk(0) + b"x", "oversize"),
                     (bytes(16384), "does not match the manifest")):
        with pytest.raises(mf.ReleaseRefused, match=why):
            d.take(0, bad)
    assert not os.path.exists(d.part)               # nothing written for a bad chunk
    for i in (0, 1, 5):
        d.take(i, chunk(i))
    again = Download(r, str(tmp_path / "dl"))       # a restart (or kill -9): what is on disk
    assert again.resume() is False and again.missing() == [2, 3, 4, 6]
    with open(again.part, "r+b") as f:              # a torn write: that chunk is fetched again
        f.seek(16384 + 10)
        f.write(b"\0\0\0")
    assert Download(r, str(tmp_path / "dl")).resume() is False
    again = Download(r, str(tmp_path / "dl"))
    again.resume()
    assert again.missing() == [1, 2, 3, 4, 6]
    for i in again.missing():
        again.take(i, chunk(i))
    path = again.finish()
    assert open(path, "rb").read() == data and not os.path.exists(again.part)
    assert Download(r, str(tmp_path / "dl")).resume() is True     # complete: nothing to fetch


def test_fetch_window_retries_and_stalls():
    f = fetch.Fetch(10, have={0, 1}, window=3, timeout_ms=1000, tries=2)
    assert f.start(0) == [(fetch.WANT, 2), (fetch.WANT, 3), (fetch.WANT, 4)]
    assert f.took(3, 10) == [(fetch.DROP, 3), (fetch.WANT, 5)]
    assert f.took(3, 11) == []                      # a duplicate
    assert f.next_deadline() == 1000
    assert f.tick(999) == []
    assert f.tick(1000) == [(fetch.DROP, 2), (fetch.WANT, 2), (fetch.DROP, 4), (fetch.WANT, 4)]
    f.reconnected(1500)                             # the session came back: asks renewed
    assert f.tick(2000) == [] and f.next_deadline() == 2500
    assert f.took(5, 2100)[0] == (fetch.DROP, 5)
    out = f.tick(2500)                              # chunk 2 asked for twice: not on the broker
    assert out[-1] == (fetch.STALLED, 2) and (fetch.DROP, 2) in out and f.done
    g = fetch.Fetch(3, have={0})
    out = g.start(0)
    for i in (1, 2):
        out = g.took(i, 1)
    assert out[-1] == (fetch.COMPLETE,) and g.done and g.next_deadline() is None
    assert fetch.Fetch(2, have={0, 1}).start(0) == [(fetch.COMPLETE,)]
