# The daemon's side of an update trial (the guard, guard.sh, does the installing). The old
# version starts a trial: it writes the guard script and the trial's facts into
# <state_dir>/update, an init hook owned by no package (a power cut or a boot loop inside the
# trial rolls back), and starts the guard in a session of its own, so that restarting the
# service does not stop it. The new version confirms (a mark the guard waits for); whichever
# version runs afterwards reads the guard's result and reports it.
import os

from .. import spawn
from ..atomic import write_atomic

GUARD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "guard.sh")
MAX_BOOTS = 3

_PROCD_HOOK = """#!/bin/sh /etc/rc.common
# lanmesh update guard: written by lanmesh during a software update and removed when the
# update is confirmed or rolled back (it belongs to no package)
# shellcheck disable=SC2034
START=94
boot() {
\t[ -f %(dir)s/trial ] || return 0
\t# in the background (boot goes on); busybox on OpenWrt may lack the setsid applet
\t( sh %(dir)s/guard.sh %(dir)s boot </dev/null >/dev/null 2>&1 & )
}
start() { :; }
"""
_SYSTEMD_HOOK = """# lanmesh update guard: written by lanmesh during a software update and removed when the
# update is confirmed or rolled back (it belongs to no package)
[Unit]
Description=lanmesh update guard
Before=lanmesh.service
ConditionPathExists=%(dir)s/trial

[Service]
Type=oneshot
ExecStart=/usr/bin/systemd-run --unit=lanmesh-guard --collect /bin/sh %(dir)s/guard.sh %(dir)s boot

[Install]
WantedBy=multi-user.target
"""


def init_system(root="/"):
    """procd (OpenWrt), systemd (Debian, Raspberry Pi OS) or None."""
    if os.path.exists(os.path.join(root, "etc/rc.common")):
        return "procd"
    if os.path.isdir(os.path.join(root, "lib/systemd/system")) or \
            os.path.isdir(os.path.join(root, "run/systemd/system")):
        return "systemd"
    return None


def default_restart(init):
    return {"procd": "/etc/init.d/lanmesh restart",
            "systemd": "systemctl restart lanmesh"}.get(init)


def _quote(value):
    text = str(value)
    if "'" in text or "\n" in text:
        raise ValueError(f"{text!r} cannot go into the trial file")
    return "'" + text + "'"


class Trial:
    """<state_dir>/update as the guard sees it."""

    def __init__(self, directory):
        self.dir = directory

    def _path(self, name):
        return os.path.join(self.dir, name)

    def _read(self, name, limit=4096):
        try:
            with open(self._path(name)) as f:
                return f.read(limit).strip()
        except OSError:
            return None

    def facts(self):
        """The running trial's facts {FROM: …, TO: …}, or None."""
        text = self._read("trial")
        if text is None:
            return None
        out = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.isupper():
                out[key] = value.strip("'")
        return out

    def begin(self, frm, to, fmt, new, old, pm, restart, manifest, root="/", window=120,
              links_up=0, init=None):
        """Write the guard, the trial, the new version's signed manifest (the guard keeps it
        with the package on confirm) and the init hook; start the guard. OSError when the
        guard cannot be started (the trial is then removed again: nothing changed)."""
        with open(GUARD, "rb") as f:
            write_atomic(self._path("guard.sh"), f.read(), mode=0o755)
        self._unlink(*(self._path(n) for n in ("result", "confirmed", "boots", "phase")))
        write_atomic(self._path("next.manifest"), manifest, mode=0o600)
        hook = self._install_hook(root, init)
        facts = {"FROM": frm, "TO": to, "FMT": fmt, "NEW": new, "OLD": old, "PM": pm,
                 "ROOT": root, "WINDOW": int(window), "MAX_BOOTS": MAX_BOOTS,
                 "RESTART": restart, "HOOK": " ".join(hook), "LINKS_UP": int(links_up)}
        write_atomic(self._path("trial"), "".join(f"{k}={_quote(v)}\n" for k, v in facts.items()),
                     mode=0o600)
        try:
            self._start_guard("run", root, init)
        except OSError:
            self._unlink(*hook, self._path("trial"))
            raise

    def _start_guard(self, action, root="/", init=None):
        # systemd stops every process of the service's cgroup on restart, the guard too:
        # it runs as a transient unit of its own
        launch = (["systemd-run", "--unit=lanmesh-guard", "--collect", "--quiet"]
                  if init == "systemd" and root == "/" and os.path.isdir("/run/systemd/system")
                  else [])
        with open(self._path("guard.log"), "ab") as log:
            spawn.start(launch + ["/bin/sh", self._path("guard.sh"), self.dir, action],
                        stdout=log.fileno(), stderr=log.fileno(), new_session=True)

    def _install_hook(self, root, init):
        d = {"dir": self.dir}
        if init == "procd":
            script = os.path.join(root, "etc/init.d/lanmesh-guard")
            link = os.path.join(root, "etc/rc.d/S94lanmesh-guard")
            write_atomic(script, _PROCD_HOOK % d, mode=0o755)
            os.makedirs(os.path.dirname(link), exist_ok=True)
            if not os.path.lexists(link):
                os.symlink("../init.d/lanmesh-guard", link)
            return [script, link]
        if init == "systemd":
            unit = os.path.join(root, "etc/systemd/system/lanmesh-guard.service")
            link = os.path.join(root, "etc/systemd/system/multi-user.target.wants/"
                                      "lanmesh-guard.service")
            write_atomic(unit, _SYSTEMD_HOOK % d)
            os.makedirs(os.path.dirname(link), exist_ok=True)
            if not os.path.lexists(link):
                os.symlink(unit[len(root.rstrip("/")):], link)
            return [unit, link]
        return []

    @staticmethod
    def _unlink(*paths):
        for p in paths:
            try:
                os.unlink(p)
            except OSError:
                pass

    def guard_alive(self):
        """Is the guard of guard.pid running? By its command line, not just the pid: a pid
        file left by a killed guard may name another process after a reboot."""
        pid = self._read("guard.pid", 16)
        if not pid or not pid.isdigit():
            return False
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return self._path("guard.sh").encode() in f.read()
        except OSError:
            return False

    def confirm(self):
        """The new version is good (reached the broker, kept its links): the mark the guard
        waits for."""
        write_atomic(self._path("confirmed"), "ok\n")

    def resume_guard(self, root="/", init=None):
        """A trial whose guard is gone (killed; the machine did not reboot): go on as after
        a boot, which rolls back if it was installing."""
        self._start_guard("boot", root, init)

    def result(self):
        """('confirmed', version, '') or ('rolled-back', version, reason) of the last trial,
        or None."""
        text = self._read("result")
        if not text:
            return None
        what, _, rest = text.partition(" ")
        version, _, reason = rest.partition(" ")
        return (what, version, reason) if what in ("confirmed", "rolled-back") else None
