"""The restricted unpickler: nothing from the file runs, and what a checkpoint holds can still be read."""
import builtins
import os
import pickle
import subprocess
import sys
import types
from collections import OrderedDict

import pytest
import torch

from edgeprune.errors import CheckpointError
from edgeprune.models import safe_pickle as sp


class _Payload:
    """Pickles as a call of `func(*args)`: what a malicious checkpoint carries."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _evil_module():
    mod = types.ModuleType("evilpkg")

    def run(cmd):
        os.system(cmd)
    run.__module__ = "evilpkg"
    run.__qualname__ = "run"
    mod.run = run
    return mod


@pytest.mark.parametrize("target", ["os.system", "builtins.eval", "subprocess.call", "evilpkg.run", "builtins.exec"])
def test_a_payload_is_refused_and_never_runs(tmp_path, monkeypatch, target):
    marker = tmp_path / "marker"
    cmd = "touch " + str(marker)
    monkeypatch.setitem(sys.modules, "evilpkg", _evil_module())
    func, args = {"os.system": (os.system, (cmd,)),
                  "builtins.eval": (builtins.eval, ("__import__('os').system(%r)" % cmd,)),
                  "builtins.exec": (builtins.exec, ("import os; os.system(%r)" % cmd,)),
                  "subprocess.call": (subprocess.call, (["touch", str(marker)],)),
                  "evilpkg.run": (sys.modules["evilpkg"].run, (cmd,))}[target]
    path = tmp_path / "evil.pt"
    torch.save({"model": OrderedDict(w=torch.ones(2)), "x": _Payload(func, *args)}, path)
    with pytest.raises(sp.UnsafePickleError) as err:
        sp.read_pickled(path)
    msg = str(err.value)
    assert str(path) in msg and "nothing from the file was executed" in msg
    assert target.split(".")[-1] in msg
    assert not marker.exists()
    # the same file through the importer and the CLI: exit 1, one line
    from edgeprune.cli import main
    assert main(["import", str(path), "--out", str(tmp_path / "out.pt")]) == 1
    assert not marker.exists() and not (tmp_path / "out.pt").exists()


def test_a_payload_in_a_zip_without_torch_save_is_refused_too(tmp_path):
    # a hand-written torch-style zip whose data.pkl is a protocol-0 pickle calling posix.system
    import zipfile
    marker = tmp_path / "marker"
    data = b"cposix\nsystem\n(V touch " + str(marker).encode() + b"\ntR."
    path = tmp_path / "handmade.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data)
    with pytest.raises(sp.UnsafePickleError, match="posix.system"):
        sp.read_pickled(path)
    assert not marker.exists()


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, bias=False)
        self.bn = torch.nn.BatchNorm2d(4)
        self.register_buffer("scratch", torch.zeros(1), persistent=False)
        self.names = {0: "a"}


def test_stand_ins_give_the_state_dict_of_a_foreign_module(tmp_path, monkeypatch):
    mod = types.ModuleType("foreignpkg.nets")
    Block.__module__ = "foreignpkg.nets"
    mod.Block = Block
    monkeypatch.setitem(sys.modules, "foreignpkg", types.ModuleType("foreignpkg"))
    monkeypatch.setitem(sys.modules, "foreignpkg.nets", mod)
    m = Block()
    with torch.no_grad():
        m.bn.running_mean.uniform_()
    path = tmp_path / "m.pt"
    torch.save({"model": m.half(), "meta": {"size": torch.Size([1, 2]), "when": __import__("datetime").datetime.now(),
                                            "set": {1, 2}, "blob": b"\x00\xff"}}, path)
    obj = sp.read_pickled(path)
    got = obj["model"]
    assert isinstance(got, sp.StandIn) and sp.class_name(got) == "foreignpkg.nets.Block"
    assert got.names == {0: "a"} and sp.class_name(sp.children(got)["bn"]) == "torch.nn.modules.batchnorm.BatchNorm2d"
    sd = sp.state_dict(got)
    want = m.state_dict()
    assert list(sd) == list(want) and "scratch" not in sd
    assert all(torch.equal(sd[k], want[k]) and sd[k].dtype == want[k].dtype for k in want)
    assert obj["meta"]["size"] == torch.Size([1, 2]) and obj["meta"]["set"] == {1, 2} and obj["meta"]["blob"] == b"\x00\xff"
    assert isinstance(obj["meta"]["when"], sp.InertCall)


@pytest.mark.parametrize("zip_format", [True, False])
def test_legacy_and_zip_formats_read_the_same_tensors(tmp_path, zip_format):
    base = torch.arange(12.0).view(3, 4)
    obj = {"view": base[1:, 1:3], "half": torch.randn(5).half(), "long": torch.arange(3),
           "param": torch.nn.Parameter(torch.ones(2)), "shared": base}
    path = tmp_path / "x.pt"
    torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
    got = sp.read_pickled(path)
    for k, v in obj.items():
        assert torch.equal(got[k], v.detach()) and got[k].dtype == v.dtype, k
    if not zip_format:     # truncated legacy file: its last storage is short
        path.write_bytes(path.read_bytes()[:-8])
        with pytest.raises(CheckpointError, match="x.pt: storage .* bytes"):
            sp.read_pickled(path)


def test_empty_truncated_and_foreign_files_are_clear_errors(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.arange(1000.0)}, good)
    raw = good.read_bytes()
    cases = {"empty.pt": b"", "half.pt": raw[: len(raw) // 2], "text.pt": b"hello world\n" * 10,
             "legacy.pt": pickle.dumps({"a": 1}, protocol=2)}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError) as err:
            sp.read_pickled(tmp_path / name)
        assert str(tmp_path / name) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="not found"):
        sp.read_pickled(tmp_path / "missing.pt")
    assert torch.equal(sp.read_pickled(good)["w"], torch.arange(1000.0))


def test_a_storage_shorter_than_its_tensor_is_refused(tmp_path):
    import zipfile
    path = tmp_path / "t.pt"
    torch.save({"w": torch.arange(64.0)}, path)
    bad = tmp_path / "short.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            dst.writestr(item, data[:16] if "/data/" in item.filename else data)
    with pytest.raises(CheckpointError, match="bytes"):
        sp.read_pickled(bad)


def test_getattr_reaches_only_stand_ins(tmp_path):
    # getattr on a real object is the first step of escaping through __globals__; on a stand-in it is a record
    import zipfile
    for body, ok in ((b"cbuiltins\ngetattr\n(ccollections\nOrderedDict\nV__init__\ntR.", False),
                     (b"cbuiltins\ngetattr\n(cfoo.bar\nBaz\nVforward\ntR.", True)):
        path = tmp_path / "g.pt"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", body)
        if ok:
            assert isinstance(sp.read_pickled(path), sp.InertCall)
        else:
            with pytest.raises(sp.UnsafePickleError, match="getattr"):
                sp.read_pickled(path)


def test_mutated_pickles_give_only_checkpoint_errors(tmp_path):
    """Random byte edits of a real checkpoint's data.pkl: the reader returns something or raises a
    CheckpointError, never another exception, and never runs anything."""
    import zipfile

    from hypothesis import given, settings
    from hypothesis import strategies as st

    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    src = tmp_path / "m.pt"
    torch.save({"model": m.half(), "names": ["a"]}, src)
    with zipfile.ZipFile(src) as zf:
        entries = [(i, zf.read(i.filename)) for i in zf.infolist()]
    pkl = next(d for i, d in entries if i.filename.endswith("data.pkl"))

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, len(pkl) - 1), st.integers(0, 255)), min_size=1, max_size=4),
           st.integers(0, len(pkl)))
    def check(edits, cut):
        data = bytearray(pkl)
        for pos, byte in edits:
            data[pos] = byte
        out = tmp_path / "mut.pt"
        with zipfile.ZipFile(out, "w") as zf:
            for info, d in entries:
                zf.writestr(info, bytes(data[:cut] if cut < len(pkl) // 2 else data) if info.filename.endswith("data.pkl") else d)
        try:
            sp.read_pickled(out)
        except CheckpointError as exc:
            assert str(out) in str(exc)
    check()
