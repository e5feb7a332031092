"""The one atomic writer: whole-folder replacement, umask permissions, stale staging folders,
and outputs that would destroy an input refused before anything moves."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from timesnet_gen.atomic import OutputError, remove_stale, staged_dir, staged_file


def test_folder_is_replaced_whole_and_only_on_success(tmp_path):
    out = tmp_path / "out"
    with staged_dir(out) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (out / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError), staged_dir(out) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("killed half-way")
    assert (out / "a.txt").read_text() == "first"  # the previous version is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging left behind
    with staged_dir(out) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]


def test_folders_and_files_get_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with staged_dir(tmp_path / "d") as tmp:
            (tmp / "x").write_text("x")
        with staged_file(tmp_path / "f.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == 0o644


def test_staging_of_a_killed_run_is_removed_by_the_next(tmp_path):
    # a process that dies while writing: its PID is gone afterwards
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = int(proc.stdout)
    stale = tmp_path / f".out.tmp-{dead}-abc"
    stale.mkdir()
    (stale / "partial.bin").write_bytes(b"x")
    alive = tmp_path / f".out.tmp-{os.getpid()}-xyz"  # a run still going: left alone
    alive.mkdir()
    unrelated = tmp_path / ".other.tmp-1-abc"
    unrelated.mkdir()
    with staged_dir(tmp_path / "out") as tmp:
        (tmp / "ok").write_text("ok")
    assert not stale.exists() and alive.exists() and unrelated.exists()
    assert remove_stale(tmp_path / "out") == []


def test_out_that_is_a_file_or_holds_a_source_is_refused_before_anything_moves(tmp_path):
    src = tmp_path / "p" / "afad"
    src.mkdir(parents=True)
    (src / "rec.asc").write_text("data")
    with pytest.raises(OutputError, match="would replace the input"):
        with staged_dir(tmp_path / "p", sources=[src]):
            pytest.fail("must not start")
    with pytest.raises(OutputError, match="would replace the input"):
        with staged_dir(src, sources=[src]):
            pytest.fail("must not start")
    assert (src / "rec.asc").read_text() == "data"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    with pytest.raises(OutputError, match="is an existing file"):
        with staged_dir(a_file):
            pytest.fail("must not start")
    assert a_file.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "p"]
    # a sibling that merely shares a name prefix is not "inside" the source
    with staged_dir(tmp_path / "p" / "afad2", sources=[src]) as tmp:
        (tmp / "x").write_text("x")


def test_a_failed_write_is_one_output_error_and_leaves_nothing_behind(tmp_path, monkeypatch):
    import errno
    import tempfile

    out = tmp_path / "out"
    with staged_dir(out) as tmp:
        (tmp / "a.txt").write_text("first")

    # the disk is full half-way through: an OutputError naming out and the reason
    full = r"out: cannot write there \(No space left on device\)"
    with pytest.raises(OutputError, match=full):
        with staged_dir(out) as tmp:
            (tmp / "a.txt").write_text("half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp / "b.bin"))
    assert (out / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    # an input that cannot be read keeps its own error
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        with staged_file(tmp_path / "m.json"):
            (tmp_path / "missing.csv").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    # no staging can be made there (a read-only disk): refused before anything is written
    def read_only(prefix: str, dir: Path):  # noqa: A002 (tempfile's keyword)
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir / f"{prefix}x"))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    for stage, name in ((staged_file, "f.json"), (staged_dir, "out")):
        with pytest.raises(OutputError, match=r"cannot write there \(Read-only file system\)"):
            with stage(tmp_path / name):
                pytest.fail("must not start")
    assert (out / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
