"""A user's own CNN (a module outside the package, built by a factory) is pruned, saved without pickle
and rebuilt in a fresh process from model.json + weights.pt."""
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from edgeprune.errors import PruneError
from edgeprune.prune import anymodel
from edgeprune.prune.apply import prune_model
from edgeprune.prune.graph import build_graph
from edgeprune.prune.recombine import keep_per_gate

USER_CNN = textwrap.dedent('''
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
            self.block = nn.Sequential(nn.Conv2d(32, 16, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=4,
                                       bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 1))
            self.head = nn.Linear(32, 5)

        def forward(self, x):
            y = self.stem(x)
            y = y + self.block(y)
            return self.head(y.mean((2, 3)))

    def build():
        torch.manual_seed(0)
        return Net()
''')


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_cnn_pkg").mkdir()
    (tmp_path / "user_cnn_pkg" / "__init__.py").write_text("")
    (tmp_path / "user_cnn_pkg" / "net.py").write_text(USER_CNN)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_prune_save_and_rebuild_in_a_fresh_process(user_module, tmp_path, helpers):
    model = helpers.randomize_bn(anymodel.build("user_cnn_pkg.net:build"), 0).eval()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    res = prune_model(model, keep_per_gate(build_graph(model, x), 0.5), example_input=x, fold=False,
                      round_to=1, min_channels=1)
    assert res.stats["params_after"] < res.stats["params_before"]
    out = anymodel.save(tmp_path / "pruned", model, "user_cnn_pkg.net:build")
    doc = json.loads((out / "model.json").read_text())
    assert doc["factory"] == "user_cnn_pkg.net:build" and doc["modules"]["stem.0"]["out_channels"] < 32
    assert doc["modules"]["block.2"]["groups"] < 4 and doc["modules"]["block.0"]["out_channels"] < 16
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(model(x), tmp_path / "y.pt")
    code = textwrap.dedent(f'''
        import torch
        from edgeprune.prune import anymodel
        model, doc = anymodel.load({str(out)!r})
        x = torch.load({str(tmp_path / "x.pt")!r}, weights_only=True)
        y = torch.load({str(tmp_path / "y.pt")!r}, weights_only=True)
        with torch.no_grad():
            assert torch.equal(model.eval()(x), y)
        print("rebuilt", model.stem[0].out_channels)
    ''')
    import edgeprune
    env = {"PYTHONPATH": f"{user_module}:{edgeprune.__path__[0].rsplit('/', 1)[0]}", "OMP_NUM_THREADS": "1",
           "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"rebuilt {model.stem[0].out_channels}"


def test_bad_factories_and_folders_say_what_is_wrong(user_module, tmp_path):
    with pytest.raises(PruneError, match="expected package.module:factory"):
        anymodel.load_factory("user_cnn_pkg.net")
    with pytest.raises(PruneError, match=r"cannot import 'no_such_pkg\.net'.*PYTHONPATH"):
        anymodel.load_factory("no_such_pkg.net:build")
    with pytest.raises(PruneError, match="has no callable 'nope'"):
        anymodel.load_factory("user_cnn_pkg.net:nope")
    with pytest.raises(PruneError, match="model.json: not found"):
        anymodel.load(tmp_path)
    out = anymodel.save(tmp_path / "p", anymodel.build("user_cnn_pkg.net:build"), "user_cnn_pkg.net:build")
    doc = json.loads((out / "model.json").read_text())
    doc["modules"]["nothere"] = {"out_channels": 3}
    (out / "model.json").write_text(json.dumps(doc))
    with pytest.raises(PruneError, match=r"modules \['nothere'\] are not in the model"):
        anymodel.load(out)


def test_cli_prunes_a_user_model_by_factory(user_module, tmp_path):
    import edgeprune
    model = anymodel.build("user_cnn_pkg.net:build")
    torch.save(model.state_dict(), tmp_path / "net.pt")
    env = {"PYTHONPATH": f"{user_module}:{edgeprune.__path__[0].rsplit('/', 1)[0]}", "OMP_NUM_THREADS": "1",
           "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "edgeprune", "prune", "--model", "user_cnn_pkg.net:build", "--weights",
           str(tmp_path / "net.pt"), "--global-ratio", "0.5", "--round-to", "1", "--min-channels", "1",
           "--imgsz", "16", "--out", str(tmp_path / "pruned"), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["params_after"] < stats["params_before"]
    rebuilt, doc = anymodel.load(tmp_path / "pruned")
    assert sum(p.numel() for p in rebuilt.parameters()) == stats["params_after"] and doc["imgsz"] == 16
    assert doc["modules"]["block.0"]["out_channels"] < 16     # BN-less: ranked by its weight rows' norm
    bad = subprocess.run(cmd[:4] + ["--model", "user_cnn_pkg.net:nope", "--global-ratio", "0.5", "--out",
                                    str(tmp_path / "x")], capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 1 and "has no callable 'nope'" in bad.stderr
