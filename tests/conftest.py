import os
import shutil

import pytest


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
    from lanmesh.lab.sites import Lab
    labs = []

    def make(n, **kw):
        lab = Lab(n, **kw).__enter__()
        labs.append(lab)
        return lab

    yield make
    for lab in labs:
        lab.close()
