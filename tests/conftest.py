import os
import shutil

import pytest

# Imported at collection, not late: hypothesis's pytest plugin imports it in the terminal
# summary when no test module did, and CPython 3.11.7's AST validator then fails on pytest's
# rewrite of it from that deep stack ("AST constructor recursion depth mismatch"; fixed in
# 3.11.8). Running a single test file must not crash for that.
import hypothesis  # noqa: F401,E402


def pytest_collection_modifyitems(config, items):
    reasons = []
    if os.geteuid() != 0:
        reasons.append("needs root for network namespaces")
    if not shutil.which("wireguard-go"):
        reasons.append("wireguard-go not installed (make test installs it)")
    if reasons:
        skip = pytest.mark.skip(reason="; ".join(reasons))
        for item in items:
            if "netns" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def make_lab():
    """make_lab(n, **kw) → a started-topology Lab; always torn down, even on failure."""
    from lanmesh_lab.sites import Lab
    labs = []

    def make(n, **kw):
        lab = Lab(n, **kw).__enter__()
        labs.append(lab)
        return lab

    yield make
    for lab in labs:
        lab.close()
