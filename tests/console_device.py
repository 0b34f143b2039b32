# A simulated router console for the provisioning tests. Two pseudo-terminals joined by
# a "wire" thread:   host (pyserial on pty B's slave)  <->  wire  <->  device (pty A).
# On the device side a real /bin/sh runs behind OpenWrt's "Please press Enter to activate
# this console." banner (and an optional login), with the tty in its normal echoing mode.
# The wire records every byte that crosses it, writes kernel log lines into the
# device->host stream at random moments (as printk does, even mid-line), can add byte
# noise, and can be cut (cable pulled) at the n-th request frame.
import os
import pty
import random
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time

PYTHON = sys.executable
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "root@OpenWrt:~# "

INIT = r'''
import os, sys, termios
login, password = sys.argv[1] or None, sys.argv[2]
def out(s): os.write(1, s.encode())
def line():
    buf = b""
    while not buf.endswith(b"\n"):
        c = os.read(0, 1)
        if not c: sys.exit(0)
        buf += c
    return buf.decode("utf-8", "replace").strip()
out("\r\nPlease press Enter to activate this console.\r\n")
line()
while login:
    out("\r\nOpenWrt login: ")
    user = line()
    out("Password: ")
    a = termios.tcgetattr(0); b = list(a); b[3] &= ~termios.ECHO
    termios.tcsetattr(0, termios.TCSADRAIN, b)
    pw = line()
    termios.tcsetattr(0, termios.TCSADRAIN, a)
    out("\r\n")
    if user == login and pw == password:
        break
    out("Login incorrect\r\n")
out("\r\nBusyBox v1.36.1 built-in shell (ash)\r\n\r\n")
os.execv("/bin/sh", ["sh", "-i"])
'''


def kernel_line(rng):
    t = rng.uniform(1, 9999)
    return ("[%5d.%06d] usb 1-1: new high-speed USB device number %d using xhci_hcd\r\n"
            % (int(t), int(t % 1 * 1e6), rng.randrange(2, 30))).encode()


class Device:
    def __init__(self, config_dir, login=None, password="", kernel_log=True, seed=1,
                 kernel_every=(0.2, 1.0)):
        self.config_dir = config_dir
        self.rng = random.Random(seed)
        self.kernel_log = kernel_log
        self.kernel_every = kernel_every
        self.to_host = bytearray()     # every byte that crossed device -> host
        self.to_device = bytearray()   # every byte that crossed host -> device
        self.frames = 0                # request frames seen on the wire
        self.cut_at = None             # (n, "before" | "after")
        self.is_cut = False
        self.noise = False
        self.noise_on = False          # noise active: agent in machine mode, not leaving
        self.lock = threading.Lock()
        self.bin = tempfile.mkdtemp(prefix="lanmesh-bin-")
        with open(os.path.join(self.bin, "lanmesh"), "w") as f:
            f.write("#!/bin/sh\nexec %s -m lanmesh.cli \"$@\"\n" % PYTHON)
        os.chmod(os.path.join(self.bin, "lanmesh"), 0o755)
        self.agent_cmd = ("%s -m lanmesh.console.agent --config-dir %s --reboot-cmd true"
                          % (PYTHON, config_dir))
        self.dev_master, dev_slave = pty.openpty()
        self.host_master, self.host_slave = pty.openpty()
        self.host_port = os.ttyname(self.host_slave)
        env = {"PATH": self.bin + ":/usr/bin:/bin", "PS1": PROMPT, "HOME": config_dir,
               "TERM": "vt100", "PYTHONPATH": os.path.join(ROOT, "firmware")}

        def ctty():
            os.setsid()
            import fcntl
            import termios
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen([PYTHON, "-c", INIT, login or "", password], stdin=dev_slave,
                                     stdout=dev_slave, stderr=dev_slave, env=env, cwd=config_dir,
                                     preexec_fn=ctty, close_fds=True)
        os.close(dev_slave)
        self.running = True
        self.linebuf = b""
        self.thread = threading.Thread(target=self._wire, daemon=True)
        self.thread.start()

    # --- the wire -------------------------------------------------------------------
    def _to_host(self, data):
        if self.is_cut:
            return
        self.to_host += data
        os.write(self.host_master, data)

    def _to_device(self, data):
        if self.is_cut:
            return
        self.to_device += data
        os.write(self.dev_master, data)

    def _from_host(self, data):
        # Forwarded a line at a time so a cut can fall exactly before or after a frame.
        self.linebuf += data
        while True:
            ends = [i for i in (self.linebuf.find(b"\r"), self.linebuf.find(b"\n")) if i >= 0]
            if not ends:
                return
            i = min(ends)
            line, self.linebuf = self.linebuf[:i + 1], self.linebuf[i + 1:]
            if b"#>" in line:
                self.frames += 1
                if b" exit " in line:
                    self.noise_on = False
                if self.cut_at and self.cut_at[0] == self.frames and self.cut_at[1] == "before":
                    self.is_cut = True
            self._to_device(line)
            if b"#>" in line and self.cut_at and self.cut_at == (self.frames, "after"):
                self.is_cut = True

    def _wire(self):
        next_kernel = time.monotonic() + self.rng.uniform(*self.kernel_every)
        while self.running:
            try:
                r, _, _ = select.select([self.dev_master, self.host_master], [], [], 0.02)
            except (OSError, ValueError):
                return
            with self.lock:
                for fd in r:
                    try:
                        data = os.read(fd, 4096)
                    except OSError:
                        data = b""
                    if not data:
                        continue
                    if fd == self.dev_master:
                        if b"#<" in data and self.noise and b"bye" not in data:
                            self.noise_on = True
                        if self.kernel_log and time.monotonic() >= next_kernel and len(data) > 2:
                            i = self.rng.randrange(1, len(data))  # printk lands mid-line
                            data = data[:i] + kernel_line(self.rng) + data[i:]
                            next_kernel = time.monotonic() + self.rng.uniform(*self.kernel_every)
                        self._to_host(data)
                    else:
                        self._from_host(data)
                now = time.monotonic()
                if self.kernel_log and now >= next_kernel:
                    self._to_host(kernel_line(self.rng))
                    next_kernel = now + self.rng.uniform(*self.kernel_every)
                if self.noise_on and self.rng.random() < 0.03:
                    junk = bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(1, 30)))
                    if self.rng.random() < 0.5:
                        self._to_device(junk)
                    else:
                        self._to_host(junk)

    # --- test controls --------------------------------------------------------------
    def cut(self, at=None, phase="after"):
        """Pull the cable now, or at the `at`-th request frame ("before" drops it,
        "after" lets the device act on it and drops everything after)."""
        with self.lock:
            if at is None:
                self.is_cut = True
            else:
                self.cut_at = (self.frames + at, phase)

    def reconnect(self):
        with self.lock:
            self.is_cut = False
            self.cut_at = None
            self.linebuf = b""

    def descendants(self):
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            try:
                for t in os.listdir("/proc/%d/task" % pid):
                    with open("/proc/%d/task/%s/children" % (pid, t)) as f:
                        todo.extend(int(c) for c in f.read().split())
            except OSError:
                pass
        return out

    def agent_running(self):
        for pid in self.descendants():
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    if b"lanmesh.console.agent" in f.read():
                        return True
            except OSError:
                pass
        return False

    def stop(self):
        pids = self.descendants()
        for pid in reversed(pids):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=5)
        self.running = False
        self.thread.join(timeout=2)
        for fd in (self.dev_master, self.host_master, self.host_slave):
            try:
                os.close(fd)
            except OSError:
                pass
