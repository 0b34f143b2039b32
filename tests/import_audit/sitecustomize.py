# Import audit (tests/test_import_audit.py): loaded at interpreter start-up when this
# directory is first on PYTHONPATH. It makes this interpreter look like an OpenWrt router
# with only the declared python3 sub-packages installed: a stdlib module of any other
# sub-package, and any non-stdlib module that is not inside the installed package
# (LANMESH_AUDIT_ROOT), cannot be imported. Every refusal, and every sub-package used, is
# appended to LANMESH_AUDIT_LOG (one JSON object per line), so a refusal that some code
# catches and works around is still seen.
import json
import os
import sys

_ALLOW = set(filter(None, os.environ.get("LANMESH_AUDIT_ALLOW", "").split(",")))
_ROOT = os.environ.get("LANMESH_AUDIT_ROOT", "")
_LOG = os.environ.get("LANMESH_AUDIT_LOG", "")
_OWNER = json.loads(os.environ.get("LANMESH_AUDIT_OWNER", "{}"))     # module -> sub-package
_SEEN = set()


def _importer():
    """The module whose import statement got us here (past importlib's own frames)."""
    f = sys._getframe(2)
    while f is not None and (f.f_code.co_filename.startswith("<frozen") or
                             f.f_globals.get("__name__") == __name__):
        f = f.f_back
    return f.f_globals.get("__name__", "?") if f is not None else "?"


def _record(kind, name, what):
    by = _importer()
    key = (kind, name.partition(".")[0], what, by)
    if key in _SEEN or not _LOG:
        return
    _SEEN.add(key)
    with open(_LOG, "a") as f:
        f.write(json.dumps({"pid": os.getpid(), "kind": kind, "module": name, "what": what,
                            "by": by, "argv": sys.argv[1:3]}) + "\n")


def _inside(spec):
    places = list(spec.submodule_search_locations or ()) + ([spec.origin] if spec.origin else [])
    return bool(places) and all(os.path.realpath(p).startswith(_ROOT + os.sep) for p in places
                                if p not in ("built-in", "frozen"))


class _Audit:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names or top in sys.builtin_module_names:
            owner = _OWNER.get(top)
            if owner is None:
                return None                     # python3-light
            if owner not in _ALLOW:
                _record("refused", name, owner)
                raise ModuleNotFoundError(f"No module named {name!r} ({owner} is not installed)",
                                          name=name)
            _record("used", name, owner)
            return None
        if top in ("sitecustomize", "_distutils_hack") or top.startswith("__editable__"):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if _inside(spec):
                    return spec
                _record("refused", name, f"outside the package: {spec.origin}")
                break
        raise ModuleNotFoundError(f"No module named {name!r} (not in the package)", name=name)


if _ROOT:
    _ROOT = os.path.realpath(_ROOT)
    sys.meta_path.insert(0, _Audit())
