"""compare_pruners.py end to end (--quick) and its pieces on a tiny detector."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _tiny_model(seed: int = 0, family: str = "yolov5"):
    from edgeprune.models.spec import new_spec
    from edgeprune.models.yolo import build_model

    torch.manual_seed(seed)
    model = build_model(new_spec(3, ["a", "b", "c"], "n", family=family))
    for m in model.modules():      # distinct gammas, as after (sparse) training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.0, 1.0)
    return model.eval()


# yolov8: Torch-Pruning 1.6 cannot score the groups of a C2f's last bottleneck conv; compare_tp ignores their roots
@pytest.mark.parametrize("arm,family", [("tp_bnscale", "yolov5"), ("tp_groupnorm", "yolov5"), ("tp_groupnorm", "yolov8")])
def test_torch_pruning_bisection_meets_flops_and_rebuilds_spec(arm, family):
    from compare_tp import prune_to_flops
    from edgeprune.metrics.complexity import count
    from edgeprune.models.yolo import build_model

    torch.set_num_threads(1)
    model = _tiny_model(family=family)
    dense_flops = count(model, 64)["flops"]
    pruned, table, stats = prune_to_flops(arm, model, 64, 0.5, iters=8, tol=0.03)
    red = 1 - count(pruned, 64)["flops"] / dense_flops
    assert abs(red - 0.5) <= 0.03, stats["search"]
    # the rebuilt spec carries the new widths: a fresh model from it takes the weights exactly
    fresh = build_model(pruned.spec)
    fresh.load_state_dict(pruned.state_dict())
    fresh.eval(), pruned.eval()
    x = torch.rand(1, 3, 64, 64)
    assert torch.allclose(fresh(x), pruned(x))
    assert all(r["after"] % 8 == 0 or r["fixed"] or r["after"] == r["before"] for r in table)
    head = [r for r in table if r["fixed"]]
    assert head and all(r["after"] == r["before"] for r in head)      # detect head outputs untouched


def test_tp_regularizer_hook_moves_gammas():
    from compare_tp import TPRegularizerHook

    model = _tiny_model().train()

    class T:   # the two trainer attributes the hook reads
        pass
    trainer = T()
    trainer.model = model
    hook = TPRegularizerHook("tp_bnscale", 64)
    hook.on_train_start(trainer)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    hook.after_backward(trainer, 0)
    # BNScalePruner adds reg * sign(gamma) to the gamma gradients (gammas are positive here)
    assert bool((bn.weight.grad > 0).all())


@pytest.mark.slow
def test_quick_run_writes_json_table_and_plot(tmp_path, quick_dense):
    from compare_pruners import FLOPS_TOL

    from tests.quick_floors import check_learned
    out = tmp_path / "bench"
    # --dense: the quick preset's dense model of this session (tests/conftest.py), trained on the same scenes
    cmd = [sys.executable, str(ROOT / "benchmarks" / "compare_pruners.py"), "--quick", "--out", str(out),
           "--synth-root", str(tmp_path / "synth"), "--latency-iters", "20", "--control",
           "--dense", str(quick_dense[0] / "best.pt")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    dense = doc["dense"]
    assert dense["flops"] > 0 and dense["params"] > 0
    check_learned(dense)          # the quick preset's dense model detects: the arms have accuracy to lose
    arms = {r["arm"]: r for r in doc["arms"]}
    assert set(arms) == {"slimming", "tp_bnscale", "l1rr"}
    table = (out / "results.md").read_text()
    for r in arms.values():
        assert 0.0 <= r["map50"] <= 1.0 and 0.0 <= r["map"] <= r["map50"] + 1e-9
        # the premise is equal FLOPs: within FLOPS_TOL of the target, or flagged off-target in JSON and table
        on_target = abs(r["flops_reduction"] - 0.5) <= FLOPS_TOL
        assert r["off_target"] is (not on_target), r
        row = next(line for line in table.splitlines() if line.startswith(f"| {r['arm']} |"))
        assert ("(off-target)" in row) is (not on_target), row
        assert r["params"] < dense["params"]
    for arm in ("slimming", "tp_bnscale"):      # their searches bisect the FLOPs reduction itself: they must hit it
        assert not arms[arm]["off_target"], arms[arm]
        la = r["latency"]
        assert la["infer_median_ms"] > 0 and la["dense_infer_median_ms"] > 0
        assert la["speedup_infer_median"] == pytest.approx(la["dense_infer_median_ms"] / la["infer_median_ms"])
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert table.count("\n") == 2 + 2 + len(arms) and "(control)" in table
    control = doc["control"]       # the dense model trained on for the arms' extra epochs, not pruned
    assert control["params"] == dense["params"] and control["epochs"] == 2 and 0.0 <= control["map50"] <= 1.0
    # a second invocation resumes from the cache: nothing is retrained, the numbers are identical
    proc2 = subprocess.run(cmd + ["--no-latency", "--cached-only", "--targets", "0.5,0.6"], cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    assert "training" not in proc2.stdout and "fine-tuning" not in proc2.stdout and "control:" not in proc2.stdout
    assert "@ -60%: not run yet, left out" in proc2.stdout      # --cached-only skips what is not finished
    again = json.loads((out / "results.json").read_text())
    assert [r["map50"] for r in again["arms"]] == [r["map50"] for r in doc["arms"]]
    # the same folder on held-out scenes (seed 0 + 1), with paired bootstrap intervals
    ho = tmp_path / "heldout"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "heldout_eval.py"), "--run", str(out), "--out", str(ho),
           "--holdout", "6", "--bootstrap", "4", "--synth-root", str(tmp_path / "synth"),
           "--pair", "l1rr@50,slimming@50", "--models", "l1rr@50"]      # + the pair's, dense, control
    proc3 = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc3.returncode == 0, proc3.stderr[-3000:]
    held = json.loads((ho / "heldout.json").read_text())
    assert held["heldout"]["images"] == 6 and "-s1-" in held["heldout"]["name"]
    models = {m["label"]: m for m in held["models"]}
    assert set(models) == {"dense", "control", "slimming@50", "l1rr@50"}
    val = {"dense": dense, "control": control, **{f"{a}@50": r for a, r in arms.items()}}
    for label, m in models.items():
        assert 0.0 <= m["map50"] <= 1.0 and m["val_map50"] == val[label]["map50"]
        if label not in ("dense", "control"):
            for key in ("vs_dense", "vs_control"):
                c = m[key]
                assert c["delta_map50"] == pytest.approx(m["map50"] - models[key[3:]]["map50"])
                assert c["ci95"][0] <= c["ci95"][1] and 0.0 <= c["share_a_better"] <= 1.0
    pair = held["pairs"][0]
    assert pair["delta_map50"] == pytest.approx(models["l1rr@50"]["map50"] - models["slimming@50"]["map50"])
    # again: detections and bootstrap vectors come from the cache, the numbers are the same
    proc4 = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc4.returncode == 0 and "bootstrap" not in proc4.stdout, proc4.stderr[-3000:]
    assert json.loads((ho / "heldout.json").read_text())["models"] == held["models"]
    assert len(list((ho / "dets").rglob("*.npz"))) == 4 and "| l1rr@50 − slimming@50 |" in (ho / "heldout.md").read_text()


def test_other_settings_in_the_same_folder_are_refused(tmp_path):
    (tmp_path / "settings.json").write_text(json.dumps({"config": {}, "dataset": "x"}))
    cmd = [sys.executable, str(ROOT / "benchmarks" / "compare_pruners.py"), "--quick", "--out", str(tmp_path),
           "--synth-root", str(tmp_path / "synth"), "--arms", "slimming"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "other settings" in proc.stderr


def test_heldout_refuses_folders_from_different_dense_models(tmp_path):
    from heldout_eval import main

    from edgeprune.errors import UsageError

    for k in "ab":
        (tmp_path / k).mkdir()
        (tmp_path / k / "settings.json").write_text("{}")
        (tmp_path / k / "results.json").write_text(json.dumps({"dense": {"sha256": k}, "arms": []}))
    with pytest.raises(UsageError, match="differ in their dense checkpoints"):
        main(["--run", str(tmp_path / "a"), "--run", str(tmp_path / "b"), "--out", str(tmp_path / "o")])
    with pytest.raises(UsageError, match="not a finished compare_pruners.py folder"):
        main(["--run", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])


def test_l1rr_gets_a_sparse_phase_per_target_the_others_share_one(tmp_path):
    import argparse

    from compare_pruners import Bench

    from edgeprune.config import make_config

    bench = Bench(make_config("default", {}), None, tmp_path, argparse.Namespace(headline=0.65))
    assert bench.sparse_dir("l1rr", 0.65) == tmp_path / "sparse" / "l1rr"
    assert bench.sparse_dir("l1rr", 0.5) == tmp_path / "sparse" / "l1rr@50"
    assert bench.sparse_dir("l1rr_no_attention", 0.75) == tmp_path / "sparse" / "l1rr_no_attention@75"
    for variant in ("slimming", "tp_bnscale", "tp_groupnorm"):       # their sparse phase ignores the target
        assert bench.sparse_dir(variant, 0.5) == bench.sparse_dir(variant, 0.65) == tmp_path / "sparse" / variant
    bench.cfg.sparse.target = 0.65                                  # --set sparse.target=0.65: no offset
    cfg = bench.sparse_cfg("l1rr_no_dynamic", 0.5)
    assert (cfg.sparse.target, cfg.sparse.flops_target, cfg.sparse.dynamic) == (0.5, 0.5, False)
    assert bench.cfg.sparse.target == 0.65                          # the shared config is left alone
    bench.cfg.sparse.target = 0.6                                   # --set sparse.target=0.6: 0.05 below
    assert bench.sparse_cfg("l1rr", 0.5).sparse.target == pytest.approx(0.45)


def test_benchmark_preset_is_the_config_preset_with_a_binding_flops_target():
    from compare_pruners import bench_config, parse_args

    from edgeprune.config import make_config

    cfg = bench_config(parse_args(["--out", "x", "--preset", "benchmark", "--set", "finetune.epochs=7"]))
    assert (cfg.data.synth_train, cfg.data.synth_size, cfg.model.size, cfg.model.imgsz) == (3000, 416, "s", 416)
    assert (cfg.sparse.attention_tol, cfg.finetune.epochs) == (1e-6, 7)
    quick = bench_config(parse_args(["--out", "x", "--quick", "--preset", "benchmark"]))
    q = make_config("quick")      # --quick wins: the config's quick preset (learnable), 1 epoch per later phase
    assert (quick.data.synth_style, quick.data.synth_train, quick.model.imgsz, quick.train.epochs) == \
        (q.data.synth_style, q.data.synth_train, q.model.imgsz, q.train.epochs)
    assert (quick.sparse.epochs, quick.finetune.epochs, quick.sparse.attention_tol) == (1, 1, 1e-6)


def test_converged_protocol_and_dior_data_options():
    from compare_pruners import bench_config, parse_args

    cfg = bench_config(parse_args(["--out", "x", "--preset", "small", "--converged", "--data", "synthetic-dior"]))
    assert (cfg.data.source, cfg.data.synth_style) == ("synthetic", "dior")
    assert (cfg.train.patience, cfg.train.eval_every, cfg.train.epochs, cfg.finetune.epochs) == (10, 1, 300, 48)
    assert cfg.data.synth_size == 160 and cfg.model.imgsz == 128          # the preset's data and model stay
    cfg = bench_config(parse_args(["--out", "x", "--converged", "--set", "train.patience=4", "--set", "train.epochs=60"]))
    assert (cfg.train.patience, cfg.train.epochs, cfg.data.synth_style) == (4, 60, "aerial")   # --set wins
    plain = bench_config(parse_args(["--out", "x", "--data", "synthetic"]))
    assert (plain.train.patience, plain.data.synth_style) == (0, "aerial")
    assert parse_args(["--out", "x", "--seeds", "0,1"]).seeds == [0, 1]
    with pytest.raises(SystemExit):
        parse_args(["--out", "x", "--seeds", "a"])


def test_synth_root_defaults_to_the_cache_compress_uses(tmp_path, monkeypatch):
    import compare_pruners
    import heldout_eval

    monkeypatch.setenv("EDGEPRUNE_CACHE", str(tmp_path))     # not a folder relative to the working directory
    for mod, argv in ((compare_pruners, ["--out", "x"]), (heldout_eval, ["--out", "x", "--run", "r"])):
        assert mod.parse_args(argv).synth_root == str(tmp_path / "synthetic")
        assert mod.parse_args([*argv, "--synth-root", "s"]).synth_root == "s"


def test_claim_sums_up_the_seed_folders_of_earlier_invocations_with_the_same_settings(tmp_path):
    import copy

    from compare_pruners import bench_config, earlier_seed_claims, folder_settings, parse_args

    args = parse_args(["--out", str(tmp_path), "--seeds", "0", "--heldout", "5"])
    cfg, data = bench_config(args), tmp_path / "data"

    def seed_folder(seed, images=5, other=False, heldout=True):
        scfg = copy.deepcopy(cfg)
        scfg.train.seed = seed
        (tmp_path / f"seed{seed}" / "heldout").mkdir(parents=True)
        settings = folder_settings(args, scfg, data) | ({"headline": 0.5} if other else {})
        (tmp_path / f"seed{seed}" / "settings.json").write_text(json.dumps(settings))
        (tmp_path / f"seed{seed}" / "results.json").write_text(json.dumps({"seed": seed}))
        if heldout:
            (tmp_path / f"seed{seed}" / "heldout" / "heldout.json").write_text(json.dumps({"heldout": {"images": images}}))

    seed_folder(0)                      # this invocation's own: not read back
    seed_folder(1)                      # finished earlier with these settings: summed up
    seed_folder(2, other=True)          # another --headline
    seed_folder(3, images=7)            # another held-out set
    seed_folder(4, heldout=False)       # not scored yet
    claims = earlier_seed_claims(args, cfg, data, tmp_path, [0])
    assert [(c["seed"], c["results"]) for c in claims] == [(1, {"seed": 1})]
    assert claims[0]["folder"] == str(tmp_path / "seed1")


def test_heldout_needs_a_test_split_of_a_real_data_set(tmp_path):
    from compare_pruners import main

    from edgeprune.data.synth import write_synthetic
    from edgeprune.errors import UsageError

    data = write_synthetic(tmp_path / "yolo", 2, 1, 64, progress=False)          # train + val, no test
    with pytest.raises(UsageError, match="test split"):
        main(["--out", str(tmp_path / "o"), "--data", str(data), "--heldout", "1", "--converged"])
    assert not (tmp_path / "o").exists()          # refused before anything was trained


def _ci(d, lo, hi):
    return {"delta_map50": d, "ci95": [lo, hi], "share_a_better": 0.5}


def test_claim_summary_checks_each_target_on_held_out_differences():
    from compare_pruners import heldout_pairs
    from compare_report import claim_markdown, claim_summary

    arm = lambda a, t, fr, pr: {"arm": a, "target": t, "flops_reduction": fr, "params_reduction": pr}  # noqa: E731
    results = {"dense": {"map50": 0.8, "epochs_run": 40, "epochs_max": 300, "best_epoch": 30, "stopped_early": True,
                         "patience": 10, "source": "trained here"},
               "arms": [arm("l1rr", 0.65, 0.652, 0.8), arm("tp_groupnorm", 0.65, 0.65, 0.6), arm("slimming", 0.5, 0.5, 0.6),
                        arm("l1rr", 0.75, 0.75, 0.9), arm("tp_bnscale", 0.75, 0.75, 0.7), arm("l1rr_topk", 0.65, 0.7, 0.9)]}
    assert heldout_pairs(results) == ["l1rr@65,tp_groupnorm@65", "l1rr@75,tp_bnscale@75"]
    heldout = {"heldout": {"name": "s1", "images": 500},
               "models": [{"label": "dense", "map50": 0.81}, {"label": "control", "map50": 0.815,
                                                               "vs_dense": _ci(0.005, -0.003, 0.012)},
                          {"label": "l1rr@65", "map50": 0.805, "vs_dense": _ci(-0.005, -0.015, 0.004),
                           "vs_control": _ci(-0.008, -0.009, 0.0)}],
               "pairs": [{"a": "l1rr@65", "b": "tp_groupnorm@65", **_ci(0.05, 0.03, 0.07)},
                         {"a": "l1rr@75", "b": "tp_bnscale@75", **_ci(0.015, -0.01, 0.03)}]}
    doc = claim_summary([{"seed": 0, "folder": "f", "results": results, "heldout": heldout}], [0.65, 0.75])
    checks = {c["what"]: c for c in doc["seeds"][0]["checks"]}
    assert set(checks) == {"dense converged: control - dense <= +1.0", "l1rr@65 - dense >= -1.0",
                           "l1rr@65 - control >= -1.0", "l1rr@65 - tp_groupnorm@65 >= +2.0",
                           "l1rr@75 - tp_bnscale@75 >= +2.0"}
    assert checks["dense converged: control - dense <= +1.0"]["met"] and \
        not checks["dense converged: control - dense <= +1.0"]["met_by_ci"]        # +1.2 at the interval's end
    assert checks["l1rr@65 - dense >= -1.0"]["met"] and not checks["l1rr@65 - dense >= -1.0"]["met_by_ci"]
    assert checks["l1rr@65 - control >= -1.0"]["met"] and checks["l1rr@65 - control >= -1.0"]["met_by_ci"]
    assert checks["l1rr@65 - tp_groupnorm@65 >= +2.0"]["met_by_ci"]
    assert not checks["l1rr@75 - tp_bnscale@75 >= +2.0"]["met"] and doc["all_met"] is False
    assert doc["seeds"][0]["l1rr_headline"]["params_ok"] is True
    md = claim_markdown(doc)
    assert "stopped at epoch 40 of at most 300 (best 30" in md and "| l1rr@75 - tp_bnscale@75 >= +2.0 | +1.5 [-1.0, +3.0] | no | no |" in md


def test_latency_arms_ask_for_the_flops_arms_predicted_latency_and_then_1_2x_less(tmp_path):
    """compare_pruners' l1rr_latency / l1rr_latency_fast: the budget is the FLOPs-targeted model's predicted share
    of dense (/ 1.2 for _fast), the solved model meets it, and the heldout pairs set each against l1rr."""
    import argparse

    from compare_pruners import LATENCY_ARMS, Bench, heldout_pairs

    from edgeprune.config import make_config
    from edgeprune.fsio import atomic_write_json
    from edgeprune.prune.apply import prune_from_ratios
    from edgeprune.prune.latency import predict_model
    from edgeprune.sparsity.ratios import save_ratios, solve_ratios
    from tests.sparsity.test_latency_target import linear, synthetic_table

    torch.set_num_threads(1)
    model = _tiny_model()
    cfg = make_config("default", {"model": {"imgsz": 64}, "sparse": {"ratio_grid": 2, "attention_tol": 1e-9}})
    gen = torch.Generator().manual_seed(2)
    batch = (torch.rand(2, 3, 64, 64, generator=gen), torch.tensor([[0, 0, 0.5, 0.5, 0.3, 0.3],
                                                                    [1, 1, 0.25, 0.25, 0.1, 0.1]]))
    bench = Bench(cfg, None, tmp_path, argparse.Namespace(headline=0.5))
    bench._batches = [batch]
    table = synthetic_table(model, 64, linear)
    atomic_write_json(tmp_path / "latency_table.json", table)       # measured once per folder; here given
    flops_doc = solve_ratios(model, [batch], bench.sparse_cfg("l1rr", 0.5).sparse, cfg.prune)
    save_ratios(flops_doc, tmp_path / "flops_ratios.json")
    dense_ms = predict_model(table, model, 64)["total_ms"]
    flops_model = prune_from_ratios(copy.deepcopy(model), flops_doc, cfg.prune, imgsz=64).model
    share = predict_model(table, flops_model, 64)["total_ms"] / dense_ms
    budgets = {}
    for arm, speedup in LATENCY_ARMS.items():
        doc, info = bench.latency_ratios(model, str(tmp_path / "flops_ratios.json"), 0.5, speedup, tmp_path / arm)
        assert info["flops_arm_predicted_share"] == pytest.approx(share, abs=1e-4)
        assert info["budget"] == pytest.approx(share / speedup, abs=1e-4)
        assert doc["latency"]["met"] and doc["latency"]["predicted_share"] <= info["budget"] + 1e-4
        assert (tmp_path / arm / "ratios.json").is_file()
        budgets[arm] = doc["latency"]["predicted_share"]
    assert budgets["l1rr_latency_fast"] < budgets["l1rr_latency"]
    rows = {"arms": [{"arm": a, "target": 0.5} for a in ("l1rr", *LATENCY_ARMS)]}
    assert heldout_pairs(rows) == ["l1rr_latency@50,l1rr@50", "l1rr_latency_fast@50,l1rr@50"]


def test_scratch_arm_trains_the_l1rr_architecture_afresh_for_the_dense_epochs(tmp_path):
    """l1rr_scratch: the l1rr arm's pruned widths, new weights (not the pruned ones), trained with the dense
    schedule for as many epochs as the dense model ran; the held-out pairs set l1rr against it."""
    import argparse

    from compare_pruners import SCRATCH_ARM, Bench, heldout_pairs

    from edgeprune.config import make_config
    from edgeprune.data.dataset import load_dataset
    from edgeprune.data.synth import write_synthetic
    from edgeprune.fsio import atomic_write_json
    from edgeprune.metrics.complexity import count
    from edgeprune.models.spec import new_spec
    from edgeprune.models.yolo import build_model
    from edgeprune.prune.apply import prune_model
    from edgeprune.prune.graph import build_graph
    from edgeprune.prune.io import load_pruned, save_pruned, save_pruned_model, spec_from_pruned
    from tests.prune.conftest import random_keep

    torch.set_num_threads(1)
    data = load_dataset(write_synthetic(tmp_path / "yolo", 4, 2, 64, progress=False))
    torch.manual_seed(0)
    model = build_model(new_spec(len(data.names), list(data.names), "n")).eval()
    x = torch.zeros(1, 3, 64, 64)
    res = prune_model(copy.deepcopy(model), random_keep(build_graph(model, x), 0), round_to=1, min_channels=1,
                      example_input=x)
    l1rr = tmp_path / "arms" / "l1rr@50"
    save_pruned(l1rr / "pruned", res.model, spec_from_pruned(res.model, {**model.spec, "widths": {}}),
                res.recombination_map, res.table, res.stats)
    save_pruned_model(l1rr / "model", load_pruned(l1rr / "pruned").model, l1rr / "pruned")
    atomic_write_json(l1rr / "result.json", {"arm": "l1rr", "target": 0.5, "model_dir": str(l1rr / "model")})

    cfg = make_config("default", {"model": {"imgsz": 64}, "train": {"batch": 2, "epochs": 9, "workers": 0}})
    bench = Bench(cfg, data, tmp_path, argparse.Namespace(headline=0.5))
    bench.dense = {"epochs_run": 2, **count(model, 64)}         # the dense model ran 2 epochs (train.epochs: 9)
    row = bench.run_arm(SCRATCH_ARM, 0.5)
    scratch = load_pruned(row["model_dir"]).model
    pruned = load_pruned(l1rr / "pruned").model
    assert scratch.conv_widths() == pruned.conv_widths() and row["params"] == count(pruned, 64)["params"]
    assert row["prune_info"]["epochs"] == 2 and row["map50_pruned"] is None
    assert len(json.loads((tmp_path / "arms" / f"{SCRATCH_ARM}@50" / "train" / "log.json").read_text())["history"]) == 2
    a, b = scratch.state_dict(), pruned.state_dict()
    assert not any(torch.equal(a[k], b[k]) for k in a if k.endswith("conv.weight"))   # new weights, not the pruned
    assert heldout_pairs({"arms": [{"arm": "l1rr", "target": 0.5}, {"arm": SCRATCH_ARM, "target": 0.5}]}) == \
        [f"l1rr@50,{SCRATCH_ARM}@50"]
