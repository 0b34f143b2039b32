# Host side of a router's console before the agent runs: wake it, answer OpenWrt's
# "Please press Enter to activate this console.", log in if asked, recognise a shell
# prompt (or an agent that is already running), and start `lanmesh console`. Kernel log
# lines can land anywhere, even inside a prompt, so they are cut out before matching.
import re
import time

from ..errors import LanmeshError
from ..console import protocol

BANNER = b"Please press Enter to activate this console."
KERNEL_LINE = re.compile(rb"\[\s*\d+\.\d+\][^\r\n]*(\r\n|\n|\r|$)")
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
LOGIN = re.compile(rb"login:\s?$", re.I)
PASSWORD = re.compile(rb"password:\s?$", re.I)
SHELL_PROMPT = re.compile(rb"[#$]\s?$")
AGENT_PROMPT = re.compile(rb"lanmesh> ?$")
FAILED = re.compile(rb"(?i)login incorrect|not found|no such file|permission denied|"
                    rb"Traceback|Error: .*")
QUIET = 0.25   # s of silence before the screen is judged: prompts come last


class ShellError(LanmeshError):
    """The console did not give a shell or agent; the message says what it showed."""


class Screen:
    """The console output since the last keypress, with kernel log lines and escape
    sequences removed; state() says what it is waiting for."""

    def __init__(self):
        self.raw = b""

    def feed(self, data):
        self.raw = (self.raw + data)[-8192:]

    def clear(self):
        self.raw = b""

    def text(self):
        return KERNEL_LINE.sub(b"", ANSI.sub(b"", self.raw))

    def tail(self):
        return self.text().replace(b"\r", b"\n").rsplit(b"\n", 1)[-1]

    def state(self):
        """'machine' (a framed reply), 'agent', 'shell', 'login', 'password', 'banner' or None."""
        for line in self.raw.replace(b"\r", b"\n").split(b"\n"):
            if isinstance(protocol.unframe(protocol.REP, line), tuple):
                return "machine"
        tail = self.tail()
        if AGENT_PROMPT.search(tail):
            return "agent"
        if PASSWORD.search(tail):
            return "password"
        if LOGIN.search(tail):
            return "login"
        if SHELL_PROMPT.search(tail):
            return "shell"
        if BANNER in self.text():
            return "banner"
        return None

    def last_lines(self, n=3):
        lines = [ln.strip() for ln in self.text().replace(b"\r", b"\n").split(b"\n") if ln.strip()]
        return " | ".join(ln.decode("utf-8", "replace") for ln in lines[-n:]) or "(nothing)"


def _settle(port, screen, quiet, deadline):
    """Read until the console has been quiet for `quiet` s (or the deadline passes)."""
    last = time.monotonic()
    while True:
        now = time.monotonic()
        if now - last >= quiet or now >= deadline:
            return
        data = port.read(port.in_waiting or 1)
        if data:
            screen.feed(data)
            last = time.monotonic()


def wake(port, login=None, password=None, timeout=20.0, log=None, probe_seq=None):
    """Bring the console to a shell prompt or find the agent; -> 'shell', 'agent' or
    'machine'. Raises ShellError naming what the console showed."""
    log = log or (lambda msg: None)
    deadline = time.monotonic() + timeout
    screen = Screen()
    port.write(b"\r")
    nudges = 0
    logged_in = False
    while time.monotonic() < deadline:
        _settle(port, screen, QUIET, deadline)
        state = screen.state()
        if state in ("shell", "agent", "machine"):
            return state
        screen_text = screen.last_lines()
        if state == "banner":
            log("console banner: pressing Enter")
            key = b"\r"
        elif state == "login":
            if logged_in:
                raise ShellError("login as %r failed: %s" % (login, screen_text))
            if not login:
                raise ShellError("the console asks for a login; pass --login "
                                 "(and --login-password-file)")
            log("logging in as %s" % login)
            logged_in = True
            key = login.encode() + b"\r"
        elif state == "password":
            if password is None:
                raise ShellError("the console asks for a password; pass --login-password-file")
            key = password.encode() + b"\r"
        else:
            nudges += 1
            # Enter wakes a shell; a framed hello (a shell comment) wakes an agent that a
            # cut session left in machine mode, which ignores bare Enter.
            key = b"\r"
            if nudges % 2 == 0:
                key += protocol.frame(protocol.REQ, probe_seq or 7, "hello")
        screen.clear()
        port.write(key)
    raise ShellError("no shell prompt within %.0f s; the console showed: %s"
                     % (timeout, screen.last_lines()))


def start_agent(port, command, timeout=10.0):
    """Type the agent command at the shell prompt. The framed requests that follow are
    queued by the tty until the agent reads them, so there is nothing to wait for here
    except an immediate failure such as 'lanmesh: not found'."""
    port.write(command.encode() + b"\r")
    screen = Screen()
    _settle(port, screen, 0.15, time.monotonic() + 0.4)
    m = FAILED.search(screen.text())
    if m and screen.state() != "agent":
        raise ShellError("%r failed on the device: %s" % (command, screen.last_lines()))
    return screen
