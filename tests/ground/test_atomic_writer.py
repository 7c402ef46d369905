"""convtrain.atomic, the one writer: a file is replaced whole or not at all, and no temporary file stays."""

from __future__ import annotations

import os

import pytest

from convtrain import atomic


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if atomic.TEMP_MARK in p.name)


def test_replacing_publishes_the_new_content_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old")
    with atomic.replacing(path) as tmp:
        assert tmp.parent == tmp_path and tmp.name == f".results.json{atomic.TEMP_MARK}{os.getpid()}"
        tmp.write_text("new")
        assert path.read_text() == "old"  # nothing is visible before the block ends
    assert path.read_text() == "new" and _leftovers(tmp_path) == []


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary_one(tmp_path, error):
    path = tmp_path / "best.pt"
    path.write_bytes(b"old")
    with pytest.raises(type(error)):
        with atomic.replacing(path) as tmp:
            tmp.write_bytes(b"half")
            tmp.with_name(tmp.name + ".data").write_bytes(b"sidecar")  # what an exporter may leave
            raise error
    assert path.read_bytes() == b"old" and _leftovers(tmp_path) == []


def test_creating_never_replaces_a_file(tmp_path):
    path = tmp_path / "mine.yaml"
    with atomic.creating(path) as tmp:
        tmp.write_text("a")
    assert path.read_text() == "a"
    with pytest.raises(FileExistsError):
        with atomic.creating(path) as tmp:
            tmp.write_text("b")
    assert path.read_text() == "a" and _leftovers(tmp_path) == []


def test_write_text_and_the_owner_of_a_temporary_name(tmp_path):
    atomic.write_text(tmp_path / "a.txt", "x\n")
    assert (tmp_path / "a.txt").read_text() == "x\n"
    assert atomic.temp_owner(atomic.temp_path(tmp_path / "a.txt")) == os.getpid()
    assert atomic.temp_owner(tmp_path / "a.txt") is None
    assert atomic.temp_owner(tmp_path / ".a.txt.tmp-abc") is None


def _recording_fsync(monkeypatch) -> list[str]:
    """os.fsync and os.replace recorded in order: ("file" | "folder" | "replace")."""
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        import stat

        events.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        return real_fsync(fd)

    def replace(a, b):
        events.append("replace")
        return real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def test_the_folder_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    """A rename is durable only once its folder is fsynced (a power cut could otherwise bring the old file
    back after a run said it saved). Break tried: the fsync_dir call after the rename removed (issue 32's
    audit planted it and no test noticed): the events were ["file", "replace"]."""
    events = _recording_fsync(monkeypatch)
    atomic.write_text(tmp_path / "a.txt", "new")
    assert events == ["file", "replace", "folder"]


def test_replaceable_refuses_what_is_not_a_regular_file_or_not_ours(tmp_path):
    """predict --output's rule (issue 32): a missing path may be written, an earlier output replaced, a user's
    file only with overwrite, a folder, a FIFO or a link never."""
    ours = lambda head: head.startswith(b"ours")  # noqa: E731
    (tmp_path / "earlier").write_bytes(b"ours,1\n")
    (tmp_path / "mine").write_bytes(b"my notes\n")
    os.mkfifo(tmp_path / "fifo")
    os.symlink(tmp_path / "earlier", tmp_path / "link")
    assert atomic.replaceable(tmp_path / "new", ours=ours) is None
    assert atomic.replaceable(tmp_path / "earlier", ours=ours) is None
    assert "--overwrite" in atomic.replaceable(tmp_path / "mine", ours=ours)
    assert atomic.replaceable(tmp_path / "mine", ours=ours, overwrite=True) is None
    assert "folder" in atomic.replaceable(tmp_path, ours=ours, overwrite=True)
    for name in ("fifo", "link"):
        assert "not a regular file" in atomic.replaceable(tmp_path / name, ours=ours, overwrite=True)
    assert "not a regular file" in atomic.replaceable("/dev/full", ours=ours, overwrite=True)
