# The daemon's log: one line per message on stderr (procd and systemd collect it), in
# the format logging.basicConfig gave before: "<time> <node> <LEVEL> <message>", with the
# traceback after an exception(). The stdlib's logging costs ~1 MB RSS on a router that
# needs only this. Where logging is already loaded when a logger is made (the operator's
# tools, tests using pytest's caplog), the stdlib logger is returned instead, so nothing
# is lost and nothing is logged twice.
import sys
import time

DEBUG, INFO, WARNING, ERROR, CRITICAL = 10, 20, 30, 40, 50
_NAMES = {DEBUG: "DEBUG", INFO: "INFO", WARNING: "WARNING", ERROR: "ERROR", CRITICAL: "CRITICAL"}
_settings = {"level": WARNING, "prefix": ""}


def configure(level, prefix=""):
    """level: a name ("info") or number; prefix: printed after the time (the node)."""
    lvl = level if isinstance(level, int) else getattr(sys.modules[__name__], level.upper())
    _settings.update(level=lvl, prefix=prefix)
    if "logging" in sys.modules:        # stdlib loggers made earlier follow the same rules
        import logging
        logging.basicConfig(level=lvl, stream=sys.stderr,
                            format=f"%(asctime)s {prefix} %(levelname)s %(message)s")


class Logger:
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def isEnabledFor(self, level):
        return level >= _settings["level"]

    def _emit(self, level, msg, args, exc=False):
        if level < _settings["level"]:
            return
        if args:
            msg = msg % args
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        line = f"{stamp},{int(now * 1000) % 1000:03d} {_settings['prefix']} {_NAMES[level]} {msg}\n"
        if exc:
            import traceback
            line += traceback.format_exc()
        try:
            sys.stderr.write(line)
            sys.stderr.flush()
        except (OSError, ValueError):   # stderr gone (closed pipe): the daemon goes on
            pass

    def debug(self, msg, *args):
        self._emit(DEBUG, msg, args)

    def info(self, msg, *args):
        self._emit(INFO, msg, args)

    def warning(self, msg, *args):
        self._emit(WARNING, msg, args)

    def error(self, msg, *args):
        self._emit(ERROR, msg, args)

    def critical(self, msg, *args):
        self._emit(CRITICAL, msg, args)

    def exception(self, msg, *args):
        self._emit(ERROR, msg, args, exc=True)


_loggers = {}


def getLogger(name):
    if "logging" in sys.modules:
        import logging
        return logging.getLogger(name)
    return _loggers.setdefault(name, Logger(name))
