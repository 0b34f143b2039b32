# Which OpenWrt python3 sub-package holds which stdlib module (the top-level names), read
# from openwrt/packages lang/python/python3/files/python3-package-*.mk on openwrt-24.10
# and openwrt-25.12 (../shared/openwrt/python3-subpackages.md). Everything else of the
# stdlib is in python3-light. tests/test_import_audit.py runs the router code with only
# the sub-packages the feed Makefile declares.
_COMMON = {
    "python3-asyncio": ["asyncio"],
    "python3-codecs": ["_codecs_cn", "_codecs_hk", "_codecs_iso2022", "_codecs_jp", "_codecs_kr",
                       "_codecs_tw", "unicodedata"],
    "python3-ctypes": ["_ctypes", "ctypes"],
    "python3-dbm": ["_dbm", "_gdbm", "dbm"],
    "python3-decimal": ["_decimal", "decimal"],
    "python3-email": ["email"],
    "python3-logging": ["logging"],
    "python3-lzma": ["_lzma", "lzma"],
    "python3-multiprocessing": ["_multiprocessing", "multiprocessing"],
    "python3-ncurses": ["_curses", "_curses_panel", "curses"],
    "python3-openssl": ["_hashlib", "_ssl"],
    "python3-pydoc": ["doctest", "pydoc", "pydoc_data"],
    "python3-readline": ["readline"],
    "python3-sqlite3": ["_sqlite3", "sqlite3"],
    "python3-unittest": ["unittest"],
    "python3-urllib": ["urllib"],
    "python3-uuid": ["_uuid", "uuid"],
    "python3-xml": ["_elementtree", "pyexpat", "xml", "xmlrpc"],
}
SUBPACKAGES = {
    "24.10": dict(_COMMON, **{"python3-cgi": ["cgi"], "python3-distutils": ["distutils"]}),
    "25.12": dict(_COMMON),
}
# A sub-package's own dependencies on other sub-packages (installing it brings them).
REQUIRES = {"python3-urllib": ["python3-email"], "python3-cgi": ["python3-email"],
            "python3-distutils": ["python3-email"], "python3-xml": ["python3-urllib"]}


def module_owner(release):
    """{top-level module name: sub-package} for one release."""
    return {m: pkg for pkg, mods in SUBPACKAGES[release].items() for m in mods}
