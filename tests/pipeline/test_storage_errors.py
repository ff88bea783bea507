"""Storage failures become StorageError naming the path, and never leave a half-written artefact."""
import errno
import os
import subprocess
import sys

import pytest

from edgeprune.errors import StorageError
from edgeprune.fsio import AtomicFile, atomic_write_json, atomic_write_text


def test_atomic_write_replaces_whole_file(tmp_path):
    p = tmp_path / "a.json"
    atomic_write_json(p, {"v": 1})
    atomic_write_json(p, {"v": 2})
    assert p.read_text().strip().endswith("}") and '"v": 2' in p.read_text()
    assert [f.name for f in tmp_path.iterdir()] == ["a.json"]  # no temp files left behind


def test_disk_full_keeps_the_old_content(tmp_path, monkeypatch):
    p = tmp_path / "m.json"
    atomic_write_text(p, "old")

    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)  # the kernel reports ENOSPC when the data is flushed
    with pytest.raises(StorageError, match=r"m\.json: disk full"):
        atomic_write_text(p, "new")
    monkeypatch.undo()
    assert p.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["m.json"]


def test_parent_is_a_file(tmp_path):
    (tmp_path / "runs").write_text("not a folder")
    with pytest.raises(StorageError, match="runs"):
        atomic_write_text(tmp_path / "runs" / "x" / "report.md", "text")
    with pytest.raises(StorageError, match="runs"):
        with AtomicFile(tmp_path / "runs" / "w.pt") as tmp:
            open(tmp, "wb").close()


def test_failed_library_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with AtomicFile(tmp_path / "w.pt") as tmp:
            open(tmp, "wb").write(b"partial")
            raise RuntimeError("serialiser crashed")
    assert list(tmp_path.iterdir()) == []


def test_compress_into_an_unusable_runs_dir_is_a_clear_error(tmp_path):
    (tmp_path / "runs").write_text("a file where the runs folder should be")
    out = subprocess.run([sys.executable, "-m", "edgeprune", "compress", "--preset", "quick", "--runs-dir",
                          str(tmp_path / "runs")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "cannot create the run directory" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_atomic_writes_get_the_mode_of_a_plain_open(tmp_path, umask, mode):
    from edgeprune.fsio import AtomicFile, atomic_write_text

    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with AtomicFile(tmp_path / "b.bin") as tmp:
            with open(tmp, "wb") as f:
                f.write(b"y")
    finally:
        os.umask(old)
    for name in ("a.txt", "b.bin"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == mode, name
