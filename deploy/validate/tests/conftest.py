"""Shared fixtures: the real repository, and broken copies of its deployment tree."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

VALIDATE_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(VALIDATE_DIR))
sys.path.insert(0, str(VALIDATE_DIR.parent / "sealing"))

from deploycheck import tree  # noqa: E402

# What the checks read; a broken copy holds exactly these.
TREE_ENTRIES = ("clusters", "infrastructure", "apps", "Dockerfile", ".dockerignore", "docs/interfaces.md")


@pytest.fixture(scope="session")
def root() -> Path:
    return tree.REPO_ROOT


@pytest.fixture(scope="session")
def applied(root):
    return tree.applied_everywhere(root)


class BrokenTree:
    """A copy of the deployment tree in a temporary directory, edited by exact text
    replacement so an edit that no longer applies fails loudly instead of silently
    testing an unbroken tree."""

    def __init__(self, source: Path, target: Path):
        self.root = target
        for entry in TREE_ENTRIES:
            src = source / entry
            if src.is_dir():
                shutil.copytree(src, target / entry)
            elif src.is_file():
                (target / entry).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target / entry)

    def edit(self, relative: str, old: str, new: str, count: int = 1) -> None:
        path = self.root / relative
        text = path.read_text()
        assert text.count(old) >= count, f"{relative} no longer contains {old!r}: update the test"
        path.write_text(text.replace(old, new, count))

    def write(self, relative: str, text: str) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def remove(self, relative: str) -> None:
        (self.root / relative).unlink()


@pytest.fixture
def broken(root, tmp_path) -> BrokenTree:
    return BrokenTree(root, tmp_path / "tree")
