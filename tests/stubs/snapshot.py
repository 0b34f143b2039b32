# Copy what the package builders read into a temporary tree, so a test's builds see one
# fixed set of sources even while the working tree changes under it.
import os
import shutil

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PARTS = ("firmware/lanmesh", "board-configs", "openwrt", "packaging")


def snapshot(dest):
    for part in PARTS:
        shutil.copytree(os.path.join(REPO, part), os.path.join(dest, part),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest
