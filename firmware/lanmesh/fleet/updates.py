# Node-side software updates (issue 15), the fetch half: the controller assigns a release to
# this router by a retained signed manifest on node/<name>/update; the router judges it
# (release.manifest: signature, fleet, newer, board, platform), fetches its own platform's
# artefact chunk by chunk from update/<version>/<format>/<index> (release.fetch decides what
# to ask for, release.download checks each chunk against the manifest and writes it), and
# verifies the whole. What it is doing, and why it refused, goes into `reported` as
# "update". Nothing is installed from a refused manifest or a bad chunk; a restart resumes
# from the chunks already on disk.
import os
import threading

from .. import __version__
from ..ticks import ticks_diff
from . import topics

# lanmesh.release (manifest, fetch, download, and the Ed25519 check) is imported when the
# first manifest arrives: an idle router that is never assigned a release does not carry it.
_fetch = None


def _release_modules():
    global _fetch
    from ..release import fetch as f, manifest
    from ..release.download import Download
    _fetch = f
    return manifest, Download

IDLE, DOWNLOADING, DOWNLOADED, REJECTED, STALLED = (
    "idle", "downloading", "downloaded", "rejected", "stalled")


def package_format(root="/"):
    """Which package this router installs: apk (OpenWrt 25.x), ipk (opkg, OpenWrt 24.10),
    deb (Debian, Raspberry Pi OS); None when none is found."""
    for fmt, path in (("apk", "usr/bin/apk"), ("apk", "sbin/apk"), ("ipk", "bin/opkg"),
                      ("ipk", "usr/bin/opkg"), ("deb", "usr/bin/dpkg")):
        if os.path.exists(os.path.join(root, path)):
            return fmt
    return None


class Updater:
    """Owned by the FleetAgent, which feeds it broker events and executes nothing else for
    it: it subscribes and unsubscribes on `link` itself (its only effects)."""

    def __init__(self, cfg, prefix, log, fmt=None, board=None, running=__version__):
        self.cfg, self.prefix, self.log = cfg, prefix, log
        self.fmt = fmt or cfg.fleet.get("package_format") or package_format()
        self._board = board or cfg.fleet.get("board")
        self.running = running
        self.dir = os.path.join(cfg.state_dir, "update")
        self.link = None
        self.release = self.download = self.fetch = None
        self.state, self.reason, self.path = IDLE, None, None
        self._digest = None             # the manifest bytes being worked on
        self._refused_version = None
        self._mf = None                 # lanmesh.release.manifest, once a manifest arrived
        self._done = []                 # finish() results from the hashing thread

    def board(self):
        if self._board is None:
            from .. import board
            self._board = board.detect()["id"]
        return self._board

    def topic(self):
        return topics.update(self.prefix, self.cfg.name)

    def start(self, link):
        self.link = link
        link.subscribe(self.topic())

    # -- facts ----------------------------------------------------------------------------
    def on_manifest(self, payload, now):
        if payload == self._digest:
            return                      # the retained copy again (a reconnect)
        self._drop_fetch()
        self._digest = payload
        if not payload:                 # cleared by the controller: the rollout was aborted
            self.state, self.reason, self.release = IDLE, None, None
            return
        mf, Download = _release_modules()
        self._mf = mf
        try:
            if self.fmt is None:
                raise mf.ReleaseRefused("this router has no package manager lanmesh knows "
                                        "(apk, opkg or dpkg)")
            release = mf.open_release(payload, self.cfg.fleet["public_key"],
                                      self.cfg.fleet["name"], self.fmt, self.board(), self.running)
        except mf.ReleaseRefused as e:
            return self._refuse(mf.peek_version(payload), str(e))
        self.release, self.download = release, Download(release, self.dir)
        self._clean_others(release)
        if self.download.resume():
            return self._downloaded(self.download.path)
        have = len(self.download.have)
        self.log.info("update: release %s accepted, fetching its %s (%d bytes, %d of %d chunks "
                      "already here)", release.version, self.fmt, release.artefact["size"], have,
                      release.chunks)
        self.state, self.reason = DOWNLOADING, None
        self.fetch = _fetch.Fetch(release.chunks, self.download.have)
        self._effects(self.fetch.start(now))

    def on_chunk(self, version, fmt, index, payload, now):
        r = self.release
        if self.fetch is None or r is None or (version, fmt) != (r.version, self.fmt):
            return                      # not the fetch under way (an old subscription)
        try:
            self.download.take(index, payload)
        except self._mf.ReleaseRefused as e:
            self._drop_fetch()
            self.download.discard()
            return self._refuse(r.version, str(e))
        except OSError as e:            # flash full or read-only: say so, try again later
            self._drop_fetch()
            return self._refuse(r.version, f"cannot store the download in {self.dir}: "
                                           f"{e.strerror or e}", state=STALLED)
        self._effects(self.fetch.took(index, now))

    def on_connected(self, now):
        if self.fetch is not None:
            self._effects(self.fetch.reconnected(now))

    def tick(self, now):
        while self._done:
            self._finished(*self._done.pop(0))
        if self.fetch is not None and self.link is not None and self.link.connected:
            d = self.fetch.next_deadline()
            if d is not None and ticks_diff(now, d) >= 0:
                self._effects(self.fetch.tick(now))

    def next_deadline(self):
        return self.fetch.next_deadline() if self.fetch is not None else None

    # -- effects --------------------------------------------------------------------------
    def _chunk_topic(self, index):
        return topics.chunk(self.prefix, self.release.version, self.fmt, index)

    def _effects(self, effects):
        for e in effects:
            if e[0] == _fetch.WANT:
                self.link.subscribe(self._chunk_topic(e[1]))
            elif e[0] == _fetch.DROP:
                self.link.unsubscribe(self._chunk_topic(e[1]))
            elif e[0] == _fetch.STALLED:
                self.fetch = None
                self._refuse(self.release.version, f"chunk {e[1]} is not on the broker "
                             f"({self._chunk_topic(e[1])}): the release is incomplete there",
                             state=STALLED)
            elif e[0] == _fetch.COMPLETE:
                self.fetch = None
                self._finish_off_the_loop()

    def _finish_off_the_loop(self):
        download, release = self.download, self.release

        def work():                     # hashing the whole artefact: ~0.1 s/MB on a router
            try:
                self._done.append((release, download.finish(), None))
            except (self._mf.ReleaseRefused, OSError) as e:
                self._done.append((release, None, str(e)))
            if self.link is not None:
                self.link.wake()
        threading.Thread(target=work, name="lanmesh-update-verify", daemon=True).start()

    def _finished(self, release, path, error):
        if release is not self.release:
            return                      # superseded meanwhile
        if error:
            return self._refuse(release.version, error)
        self._downloaded(path)

    def _downloaded(self, path):
        self.state, self.reason, self.path = DOWNLOADED, None, path
        self.log.info("update: release %s downloaded and verified (%s)", self.release.version, path)

    def _drop_fetch(self):
        if self.fetch is not None and self.link is not None:
            self._effects([(_fetch.DROP, i) for i in sorted(self.fetch.asked)])
        self.fetch = None

    def _refuse(self, version, reason, state=REJECTED):
        self.state, self.reason = state, reason
        self.release = self.release if state == STALLED else None
        self.log.warning("update: release %s %s, nothing installed: %s", version or "(unreadable)",
                         state, reason)
        self._refused_version = version

    def _clean_others(self, release):
        """Downloads of other releases are of no use any more: flash is scarce."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return
        keep = {release.artefact["file"], release.artefact["file"] + ".part"}
        for n in names:
            if n not in keep:
                try:
                    os.unlink(os.path.join(self.dir, n))
                except OSError:
                    pass

    def reported(self):
        out = {"state": self.state, "running": self.running, "format": self.fmt}
        r = self.release
        if r is not None:
            out["version"] = r.version
            out["chunks"] = [len(self.download.have), r.chunks]
        elif self.state in (REJECTED, STALLED):
            out["version"] = self._refused_version
        if self.reason:
            out["reason"] = self.reason
        return out
