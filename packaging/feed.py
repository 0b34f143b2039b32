# Read the OpenWrt feed Makefile (openwrt/lanmesh/Makefile) so the SDK build and
# `make ipk` share one list of dependencies, conffiles and installed files.
import re

_INSTALL_MODES = {"INSTALL_BIN": 0o755, "INSTALL_CONF": 0o600, "INSTALL_DATA": 0o644}


def _define(text, name):
    m = re.search(rf"^define {re.escape(name)}\n(.*?)^endef", text, re.M | re.S)
    if not m:
        raise ValueError(f"feed Makefile has no 'define {name}'")
    return m.group(1)


def read_feed(path):
    with open(path) as f:
        text = f.read()
    var = dict(re.findall(r"^([A-Z0-9_]+):=(.*)$", text, re.M))
    pkg = var["PKG_NAME"]
    body = _define(text, f"Package/{pkg}").replace("\\\n", " ")
    fields = dict(re.findall(r"^\s*([A-Z]+):=(.*)$", body, re.M))
    depends = [d.lstrip("+") for d in fields.get("DEPENDS", "").split()]
    description = " ".join(_define(text, f"Package/{pkg}/description").split())
    conffiles = _define(text, f"Package/{pkg}/conffiles").split()
    install = _define(text, f"Py3Package/{pkg}/install")
    files = [(src, dest, _INSTALL_MODES[kind]) for kind, src, dest in
             re.findall(r"\$\((INSTALL_BIN|INSTALL_CONF|INSTALL_DATA)\) \./(\S+) \$\(1\)(\S+)",
                        install)]
    dirs = [d for line in re.findall(r"\$\(INSTALL_DIR\)((?: \$\(1\)\S+)+)", install)
            for d in re.findall(r"\$\(1\)(\S+)", line)]
    chmods = {d: int(m, 8) for m, d in re.findall(r"chmod (\d+) \$\(1\)(\S+)", install)}
    return {"name": pkg, "version": var["PKG_VERSION"], "release": var["PKG_RELEASE"],
            "license": var.get("PKG_LICENSE", ""), "maintainer": var.get("PKG_MAINTAINER", ""),
            "section": fields.get("SECTION", "net"), "title": fields.get("TITLE", ""),
            "arch": fields.get("PKGARCH", "all"), "depends": depends,
            "description": description, "conffiles": conffiles, "files": files,
            "dirs": dirs, "dir_modes": chmods}
