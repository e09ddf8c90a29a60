"""The one helper that writes files under ``state_dir``: atomic and durable.

Membership's member snapshot and the election's ``(term, vote)`` state
both go through it, so both get the same guarantee: a failed write leaves
the old file intact and no temporary file behind.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from trio_distribute import _state_dir
from trio_distribute._proto.raft import Persist
from trio_distribute._state_dir import read_state, safe_file_name, write_atomic
from trio_distribute.cluster.membership import load_snapshot, save_snapshot
from trio_distribute.election.raft_lite import load_state, save_state


def test_a_write_replaces_the_file_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "deeper" / "state.json"
    assert read_state(path) is None
    write_atomic(path, b"one")
    assert read_state(path) == b"one"
    write_atomic(path, b"two")
    assert read_state(path) == b"two"
    assert os.listdir(path.parent) == ["state.json"]


def test_the_file_and_then_its_directory_are_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        mode = os.fstat(fd).st_mode
        synced.append("dir" if stat.S_ISDIR(mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    write_atomic(tmp_path / "state.json", b"x")
    # The data before the rename, the rename (the directory entry) after it.
    assert synced == ["file", "dir"]


@pytest.mark.parametrize("failing", ["fsync", "replace", "write"])
def test_a_failed_write_leaves_the_old_file_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    path = tmp_path / "state.json"
    write_atomic(path, b"old and complete")

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    if failing == "write":
        real_fdopen = os.fdopen

        class FullDisk:
            def __init__(self, *args: object, **kwargs: object) -> None:
                self.file = real_fdopen(*args, **kwargs)  # type: ignore[call-overload]

            def __enter__(self) -> FullDisk:
                return self

            def __exit__(self, *exc: object) -> None:
                self.file.close()

            def write(self, data: bytes) -> None:
                self.file.write(data[:3])  # a torn write, then the disk is full
                raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "fdopen", FullDisk)
    else:
        monkeypatch.setattr(os, failing, broken)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(path, b"new")
    monkeypatch.undo()
    assert read_state(path) == b"old and complete"
    assert os.listdir(tmp_path) == ["state.json"]  # no temporary file left behind


def test_a_stale_temporary_file_does_not_block_a_write(tmp_path: Path) -> None:
    # A crash between creating the temporary file and the rename leaves it.
    (tmp_path / "state.json.tmp").write_bytes(b"torn")
    (tmp_path / ".state.json.x.tmp").write_bytes(b"torn")
    write_atomic(tmp_path / "state.json", b"fine")
    assert read_state(tmp_path / "state.json") == b"fine"


def test_file_names_are_made_safe() -> None:
    assert safe_file_name("a@10.0.0.1") == "a_10.0.0.1"
    assert safe_file_name("../../etc/passwd") == ".._.._etc_passwd"


def test_membership_and_election_write_through_the_helper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    members = tmp_path / "members-a.json"
    election = tmp_path / "election-a.json"
    save_snapshot(members, {"b@h": "h:1"})
    save_state(election, Persist(3, "b@h", (1, 2), ("a@h", "b@h")))
    assert load_snapshot(members) == {"b@h": "h:1"}
    assert load_state(election) == Persist(3, "b@h", (1, 2), ("a@h", "b@h"))

    written: list[Path] = []
    real_write = _state_dir.write_atomic

    def failing_write(path: Path, data: bytes) -> None:
        written.append(path)
        raise OSError(28, "No space left on device")

    # Each module calls the helper it imported: patch both names, then
    # check each one failed through it and kept its old file.
    import trio_distribute.cluster.membership as membership_module
    import trio_distribute.election.raft_lite as raft_module

    monkeypatch.setattr(membership_module, "write_atomic", failing_write)
    monkeypatch.setattr(raft_module, "write_atomic", failing_write)
    with pytest.raises(OSError, match="No space left"):
        save_snapshot(members, {"c@h": "h:2"})
    with pytest.raises(OSError, match="No space left"):
        save_state(election, Persist(4, None, (1, 2), ("a@h", "b@h")))
    assert written == [members, election]
    assert load_snapshot(members) == {"b@h": "h:1"}
    assert load_state(election) == Persist(3, "b@h", (1, 2), ("a@h", "b@h"))
    assert real_write is write_atomic
