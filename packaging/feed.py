# Read the OpenWrt feed Makefile (openwrt/lanmesh/Makefile) so the SDK build, `make ipk`
# and `make apk` share one list of dependencies, conffiles and maintainer scripts (the
# installed files come from packaging/router.py).
import re

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
    scripts = {}
    for name in ("postinst", "prerm", "postrm"):
        try:
            scripts[name] = _define(text, f"Package/{pkg}/{name}").replace("$$", "$")
        except ValueError:
            pass
    return {"name": pkg, "version": var["PKG_VERSION"], "release": var["PKG_RELEASE"],
            "license": var.get("PKG_LICENSE", ""), "maintainer": var.get("PKG_MAINTAINER", ""),
            "section": fields.get("SECTION", "net"), "title": fields.get("TITLE", ""),
            "arch": fields.get("PKGARCH", "all"), "depends": depends,
            "description": description, "conffiles": conffiles, "scripts": scripts}
