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


# A real file-size limit in a child process (RLIMIT_FSIZE; SIGXFSZ ignored so write() fails with EFBIG instead of
# killing the process): torch's C++ serializer then raises its own RuntimeError, the Python writer an OSError.
_FSIZE_CHILD = r"""
import json, os, resource, signal, sys
import torch
from edgeprune.errors import StorageError
from edgeprune.fsio import AtomicFile, atomic_write_bytes
from edgeprune.models.io import save_checkpoint
from edgeprune.models.yolo import build_model
from edgeprune.models.spec import new_spec
folder = sys.argv[1]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
results = {}
def attempt(name, write):
    try:
        write()
        results[name] = "written"
    except StorageError as exc:
        results[name] = "StorageError: " + str(exc)
    except BaseException as exc:
        results[name] = "{}: {}".format(type(exc).__name__, exc)
def torch_save():
    with AtomicFile(os.path.join(folder, "big.pt")) as tmp:
        torch.save({"w": torch.zeros(100000)}, tmp)
attempt("torch.save", torch_save)
attempt("atomic_write_bytes", lambda: atomic_write_bytes(os.path.join(folder, "big.bin"), b"x" * 200000))
attempt("save_checkpoint", lambda: save_checkpoint(os.path.join(folder, "last.pt"), build_model(new_spec(2))))
print(json.dumps(results))
"""


def test_real_file_size_limit_is_a_storage_error_naming_the_path(tmp_path):
    import json
    pytest.importorskip("resource")
    folder = tmp_path / "out"
    folder.mkdir()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", _FSIZE_CHILD, str(folder)], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ, PYTHONPATH=root))
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert results["atomic_write_bytes"].startswith("StorageError") and "big.bin" in results["atomic_write_bytes"]
    assert "file too large" in results["atomic_write_bytes"]
    for name, path in (("torch.save", "big.pt"), ("save_checkpoint", "last.pt")):
        assert results[name].startswith("StorageError: cannot write") and path in results[name], results[name]
    assert list(folder.iterdir()) == []  # neither the targets nor a temp file


@pytest.mark.parametrize("code,why", [(errno.ENOSPC, "disk full"), (errno.EDQUOT, "quota"),
                                      (errno.EFBIG, "file too large")])
def test_library_oserror_inside_atomic_file_is_named(tmp_path, code, why):
    # ENOSPC/EDQUOT cannot be produced for real without a full file system; the errno mapping is what is checked.
    with pytest.raises(StorageError, match=r"w\.pt: .*" + why):
        with AtomicFile(tmp_path / "w.pt") as tmp:
            open(tmp, "wb").write(b"partial")
            raise OSError(code, os.strerror(code))
    assert list(tmp_path.iterdir()) == []


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
