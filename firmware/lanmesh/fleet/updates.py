# Node-side software updates (issue 15). The controller assigns a release to this router by a
# retained signed manifest on node/<name>/update; the router judges it (release.manifest:
# signature, fleet, newer, board, platform), fetches its own platform's artefact chunk by
# chunk from update/<version>/<format>/<index> (release.fetch decides what to ask for,
# release.download checks each chunk against the manifest and writes it), and verifies the
# whole. Before installing it makes sure it holds the package it runs now (the way back),
# fetched the same way from that release's manifest on update/<running>/manifest when it has
# none. Then release.trial hands over to the guard, which installs, restarts, waits for the
# new version's confirm (written here, by the new version, once it reached the broker and
# kept its links) and rolls back without it. What it is doing, and why it refused or rolled
# back, goes into `reported` as "update". A restart resumes from what is on disk.
import os
import threading

from .. import __version__
from ..ticks import ticks_add, ticks_diff
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
INSTALLING, CONFIRMING, CONFIRMED, ROLLED_BACK = (
    "installing", "confirming", "confirmed", "rolled-back")
PM_COMMAND = {"ipk": "opkg", "apk": "apk", "deb": "dpkg"}


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
    it: it subscribes and unsubscribes on `link` itself, and starts the guard. links_up():
    (up, total) of the mesh, for the confirm."""

    def __init__(self, cfg, prefix, log, fmt=None, board=None, running=__version__,
                 links_up=None):
        self.cfg, self.prefix, self.log = cfg, prefix, log
        self.fmt = fmt or cfg.fleet.get("package_format") or package_format()
        self._board = board or cfg.fleet.get("board")
        self.running = running
        self.links_up = links_up or (lambda: (0, 0))
        self.dir = os.path.join(cfg.state_dir, "update")
        self.keep_dir = os.path.join(self.dir, "keep")
        self.link = None
        self.release = None             # the assigned release (target)
        self.getting = None             # what is being fetched: the target, or the way back
        self.download = self.fetch = None
        self.state, self.reason, self.path = IDLE, None, None
        self._digest = None             # the manifest bytes being worked on
        self._shown_version = None     # the version `reported` names when no release is held
        self._mf = None                 # lanmesh.release.manifest, once a manifest arrived
        self._done = []                 # finish() results from the hashing thread
        self._trial = None
        self._failed = None             # (version, reason): rolled back, not to be retried
        self._confirm_links = None      # a trial of this version: the links it must keep
        self._back_by = None            # deadline for the running version's manifest
        self._install_at = None         # the last trial's guard is still ending: install then
        self._look_at_trial()

    # -- the trial a restart finds --------------------------------------------------------
    @staticmethod
    def _trial_mod():
        from ..release import trial
        return trial

    def _trial_dir(self):
        if self._trial is None:
            self._trial = self._trial_mod().Trial(self.dir)
        return self._trial

    def _system(self):
        """(package root, init system) the guard works with."""
        root = self.cfg.fleet.get("package_root") or "/"
        return root, self._trial_mod().init_system(root)

    def _look_at_trial(self):
        if not os.path.exists(os.path.join(self.dir, "trial")) and \
                not os.path.exists(os.path.join(self.dir, "result")):
            return                      # the common case: nothing to import or read
        t = self._trial_dir()
        facts = t.facts()
        if facts is not None and facts.get("TO") == self.running:
            links = facts.get("LINKS_UP") or "0"
            self.state, self._confirm_links = CONFIRMING, int(links) if links.isdigit() else 0
            self._shown_version = self.running
            self.log.info("update: %s is on trial: confirming once the broker is reached and "
                          "%d mesh links are up", self.running, self._confirm_links)
        elif facts is not None:
            self.state, self._shown_version = INSTALLING, facts.get("TO")
            if not t.guard_alive():
                self.log.warning("update: the guard of %s is gone: resuming it", facts.get("TO"))
                try:
                    t.resume_guard(*self._system())
                except OSError as e:
                    self.reason = f"cannot start the update guard: {e}"
        else:
            what, version, reason = t.result() or (None, None, None)
            if what == ROLLED_BACK:
                self._failed = (version, reason)
                self.state, self.reason, self._shown_version = ROLLED_BACK, reason, version
                self.log.warning("update: %s was rolled back: %s", version, reason)
            elif what == CONFIRMED and version == self.running:
                self.state, self._shown_version = CONFIRMED, version

    def _check_confirm(self):
        if self.state != CONFIRMING or self.link is None or not self.link.connected:
            return
        up, total = self.links_up()
        if up < min(self._confirm_links, total):
            return
        try:
            self._trial_dir().confirm()
        except OSError as e:
            self.reason = f"cannot write the confirm mark: {e}"
            return
        self.state, self.reason = CONFIRMED, None
        self.log.info("update: %s confirmed (broker reached, %d of %d mesh links up)",
                      self.running, up, total)

    def board(self):
        if self._board is None:
            from .. import board
            self._board = board.detect()["id"]
        return self._board

    def topic(self):
        return topics.update(self.prefix, self.cfg.name)

    def rollback_topic(self):
        return topics.release(self.prefix, self.running)

    def start(self, link):
        self.link = link
        link.subscribe(self.topic())

    # -- facts ----------------------------------------------------------------------------
    def on_manifest(self, payload, now):
        if payload == self._digest:
            return                      # the retained copy again (a reconnect)
        if self.state in (CONFIRMING, CONFIRMED, INSTALLING) and payload:
            mf, _ = _release_modules()
            if mf.peek_version(payload) in (self.running, self._shown_version):
                self._digest = payload
                return                  # the release this router is switching to, or runs
        self._drop_fetch()
        self._digest = payload
        if not payload:                 # cleared by the controller: the rollout was aborted
            if self.state not in (INSTALLING, CONFIRMING):
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
        if self._failed and self._failed[0] == release.version:
            self.state, self.reason = ROLLED_BACK, self._failed[1]
            self._shown_version = release.version
            return                      # tried, and it did not come back: not again
        self.release = release
        self._clean_others(release)
        self._get(release, self.dir, now)

    def on_rollback_manifest(self, payload, now):
        """update/<running>/manifest: the package of the running version, to roll back to."""
        r = self.release
        if r is None or self._back_by is None or not payload:
            return
        self._back_by = None
        self.link.unsubscribe(self.rollback_topic())
        try:
            back = self._mf.open_release(payload, self.cfg.fleet["public_key"],
                                         self.cfg.fleet["name"], self.fmt, self.board(),
                                         self.running, exact=True)
        except self._mf.ReleaseRefused as e:
            return self._refuse(r.version, f"no way back: the running {self.running}'s "
                                           f"release cannot be used: {e}")
        self._get(back, self.keep_dir, now)

    def _get(self, release, directory, now):
        _, Download = _release_modules()
        self.getting, self.download = release, Download(release, directory)
        if self.download.resume():
            return self._got(release, self.download.path, now)
        have = len(self.download.have)
        self.log.info("update: fetching the %s of %s%s (%d bytes, %d of %d chunks already here)",
                      self.fmt, release.version, " (the way back)" if release is not self.release
                      else "", release.artefact["size"], have, release.chunks)
        self.state, self.reason = DOWNLOADING, None
        self.fetch = _fetch.Fetch(release.chunks, self.download.have)
        self._effects(self.fetch.start(now))

    def on_chunk(self, version, fmt, index, payload, now):
        r = self.getting
        if self.fetch is None or r is None or (version, fmt) != (r.version, self.fmt):
            return                      # not the fetch under way (an old subscription)
        try:
            self.download.take(index, payload)
        except self._mf.ReleaseRefused as e:
            self._drop_fetch()
            self.download.discard()
            return self._refuse(self.release.version, str(e))
        except OSError as e:            # flash full or read-only: say so, try again later
            self._drop_fetch()
            return self._refuse(self.release.version, f"cannot store the download in "
                                f"{self.dir}: {e.strerror or e}", state=STALLED)
        self._effects(self.fetch.took(index, now))

    def on_connected(self, now):
        if self.fetch is not None:
            self._effects(self.fetch.reconnected(now))

    def tick(self, now):
        while self._done:
            self._finished(*self._done.pop(0), now)
        self._check_confirm()
        if self._install_at is not None and ticks_diff(now, self._install_at) >= 0:
            self._install_at = None
            self._install(now)
        if self._back_by is not None and ticks_diff(now, self._back_by) >= 0:
            self._back_by = None
            self.link.unsubscribe(self.rollback_topic())
            self._refuse(self.release.version, f"no way back: the package of the running "
                         f"{self.running} is not on the broker ({self.rollback_topic()}); "
                         f"add it: lanmesh fleet release add <its packages>", state=STALLED)
        if self.fetch is not None and self.link is not None and self.link.connected:
            d = self.fetch.next_deadline()
            if d is not None and ticks_diff(now, d) >= 0:
                self._effects(self.fetch.tick(now))

    def next_deadline(self):
        out = None
        for d in (self._install_at, self._back_by,
                  self.fetch.next_deadline() if self.fetch is not None else None):
            if d is not None and (out is None or ticks_diff(d, out) < 0):
                out = d
        return out

    # -- effects --------------------------------------------------------------------------
    def _chunk_topic(self, index):
        return topics.chunk(self.prefix, self.getting.version, self.fmt, index)

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
        download, release = self.download, self.getting

        def work():                     # hashing the whole artefact: ~0.1 s/MB on a router
            try:
                self._done.append((release, download.finish(), None))
            except (self._mf.ReleaseRefused, OSError) as e:
                self._done.append((release, None, str(e)))
            if self.link is not None:
                self.link.wake()
        threading.Thread(target=work, name="lanmesh-update-verify", daemon=True).start()

    def _finished(self, release, path, error, now):
        if release is not self.getting:
            return                      # superseded meanwhile
        if error:
            return self._refuse(self.release.version, error)
        self._got(release, path, now)

    def _got(self, release, path, now):
        self.getting = None
        if release is self.release:
            self.state, self.reason, self.path = DOWNLOADED, None, path
            self.log.info("update: release %s downloaded and verified (%s)", release.version, path)
        else:
            from ..atomic import write_atomic
            write_atomic(os.path.join(self.keep_dir, "manifest"), release.envelope, mode=0o600)
            self.log.info("update: the way back (%s's package) is kept in %s", release.version,
                          self.keep_dir)
        self._install(now)

    def _kept(self):
        """The kept package of the running version (verified when it was stored), or None."""
        try:
            with open(os.path.join(self.keep_dir, "manifest"), "rb") as f:
                back = self._mf.open_release(f.read(), self.cfg.fleet["public_key"],
                                             self.cfg.fleet["name"], self.fmt, self.board(),
                                             self.running, exact=True)
        except (OSError, self._mf.ReleaseRefused):
            return None
        path = os.path.join(self.keep_dir, back.artefact["file"])
        ok = os.path.exists(path) and os.path.getsize(path) == back.artefact["size"]
        return path if ok else None

    def _install(self, now):
        t = self._trial_dir()
        if t.guard_alive():             # the last trial's guard is still ending it
            self._install_at = ticks_add(now, 1000)
            return
        old = self._kept()
        if old is None:                 # ask for the running version's release first
            self.log.info("update: no package of the running %s kept: fetching it from %s",
                          self.running, self.rollback_topic())
            self._back_by = ticks_add(now, _fetch.TIMEOUT_MS)
            self.link.subscribe(self.rollback_topic())
            return
        r, f = self.release, self.cfg.fleet
        root, init = self._system()
        restart = f.get("restart_command") or self._trial_mod().default_restart(init)
        if restart is None:
            return self._refuse(r.version, "no init system lanmesh knows (procd, systemd): "
                                "set fleet.restart_command", state=STALLED)
        try:
            t.begin(self.running, r.version, self.fmt, self.path, old,
                    f.get("package_manager") or PM_COMMAND[self.fmt], restart, r.envelope,
                    root=root, window=f.get("confirm_window") or 120,
                    links_up=self.links_up()[0], init=init)
        except (OSError, ValueError) as e:
            return self._refuse(r.version, f"cannot start the update guard: {e}", state=STALLED)
        self.state, self.reason, self._shown_version = INSTALLING, None, r.version
        self.log.info("update: installing %s (the guard takes over; the way back is %s)",
                      r.version, old)

    def _drop_fetch(self):
        if self.fetch is not None and self.link is not None:
            self._effects([(_fetch.DROP, i) for i in sorted(self.fetch.asked)])
        if self._back_by is not None and self.link is not None:
            self.link.unsubscribe(self.rollback_topic())
        self.fetch = self.getting = self._back_by = self._install_at = None

    def _refuse(self, version, reason, state=REJECTED):
        self.state, self.reason = state, reason
        self.release = self.release if state == STALLED else None
        self.log.warning("update: release %s %s, nothing installed: %s", version or "(unreadable)",
                         state, reason)
        self._shown_version = version

    def _clean_others(self, release):
        """Downloads of other releases are of no use any more: flash is scarce. (The kept
        package, the guard and its files stay.)"""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return
        keep = {release.artefact["file"], release.artefact["file"] + ".part"}
        for n in names:
            if n not in keep and n.endswith((".ipk", ".apk", ".deb", ".part")):
                try:
                    os.unlink(os.path.join(self.dir, n))
                except OSError:
                    pass

    def reported(self):
        out = {"state": self.state, "running": self.running, "format": self.fmt}
        r = self.release
        if r is not None and self.state in (DOWNLOADING, DOWNLOADED, STALLED, INSTALLING):
            out["version"] = r.version
            if self.download is not None:
                d = self.download.release
                out["chunks"] = [len(self.download.have), d.chunks]
        elif self.state != IDLE:
            out["version"] = self._shown_version
        if self.reason:
            out["reason"] = self.reason
        return out
