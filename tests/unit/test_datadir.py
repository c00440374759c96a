"""The data dir is made private: directories 0700, files 0600, links left alone."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentdata.datadir import make_private, private_umask


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def restore_umask() -> Iterator[None]:
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


def test_an_existing_loose_tree_is_tightened(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "artefacts" / "deep").mkdir(parents=True)
    for d in (root, root / "artefacts", root / "artefacts" / "deep"):
        d.chmod(0o755)
    files = [root / "data.duckdb", root / "artefacts" / ("a" * 32), root / "artefacts/deep/f"]
    for f in files:
        f.write_bytes(b"x")
        f.chmod(0o644)
    (root / "locked").mkdir(mode=0o000)  # even a directory we cannot list yet

    changed = make_private(root)

    assert changed == 3 + len(files) + 1
    assert {mode(d) for d in (root, root / "artefacts", root / "artefacts/deep")} == {0o700}
    assert {mode(f) for f in files} == {0o600}
    assert mode(root / "locked") == 0o700
    assert make_private(root) == 0  # idempotent


def test_links_are_neither_changed_nor_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours to change")
    outside.chmod(0o644)
    outside_dir = tmp_path / "outside-dir"
    outside_dir.mkdir(mode=0o755)
    (outside_dir / "inner").write_text("x")
    (outside_dir / "inner").chmod(0o644)
    root = tmp_path / "data"
    root.mkdir()
    (root / "link").symlink_to(outside)
    (root / "dirlink").symlink_to(outside_dir)

    make_private(root)

    assert mode(outside) == 0o644
    assert mode(outside_dir) == 0o755 and mode(outside_dir / "inner") == 0o644


def test_a_missing_data_dir_is_created_private(tmp_path: Path) -> None:
    root = tmp_path / "new" / "data"
    make_private(root)
    assert mode(root) == 0o700


def test_the_umask_clears_group_and_other_bits(tmp_path: Path, restore_umask: None) -> None:
    private_umask()
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    assert mode(tmp_path / "f") == 0o600 and mode(tmp_path / "d") == 0o700
