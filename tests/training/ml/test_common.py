"""training.ml.common.atomic_output_dir: the folder appears whole or not at all, and what it holds is
on disk before the rename makes it visible (every file and folder fsynced, the parent after)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from training.ml import common


class FsyncSpy:
    """Records (path, whether the final folder existed yet) for every fsync, by the fd's /proc link."""

    def __init__(self, final: Path):
        self.final, self.calls, self.real = final, [], os.fsync

    def __call__(self, fd: int) -> None:
        self.calls.append((os.readlink(f"/proc/self/fd/{fd}"), self.final.exists()))
        self.real(fd)


@pytest.fixture
def spy(monkeypatch):
    def make(final: Path) -> FsyncSpy:
        recorder = FsyncSpy(final)
        monkeypatch.setattr(common.os, "fsync", recorder)
        return recorder
    return make


def test_files_and_folders_are_fsynced_before_the_rename_and_the_parent_after(tmp_path, spy):
    final = tmp_path / "models" / "reward-run1"
    synced = spy(final).calls
    with common.atomic_output_dir(final) as tmp:
        (tmp / "model.safetensors").write_bytes(b"\0" * 1024)
        (tmp / "tokenizer").mkdir()
        (tmp / "tokenizer" / "vocab.txt").write_text("a\nb\n")

    assert (final / "model.safetensors").stat().st_size == 1024 and (final / "tokenizer" / "vocab.txt").exists()
    before = [Path(path).name for path, after_rename in synced if not after_rename]
    assert sorted(before[:2]) == ["model.safetensors", "vocab.txt"]  # the files first
    assert before[2:] == ["tokenizer", tmp.name]  # then the folders, deepest first
    assert [(Path(path), after) for path, after in synced[len(before):]] == [(final.parent, True)]


def test_a_failed_block_leaves_nothing_and_syncs_nothing(tmp_path, spy):
    final = tmp_path / "reward-run2"
    synced = spy(final).calls
    with pytest.raises(RuntimeError):
        with common.atomic_output_dir(final) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("killed mid-save")
    assert not final.exists() and not list(tmp_path.iterdir()) and synced == []
