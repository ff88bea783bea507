from pathlib import Path

import pytest

from edgeprune.config import ConfigError, load_config, make_config
from edgeprune.rundir import RunDir, stale_stage_dir
from edgeprune.stagedefs import stage_sections


def test_stage_keys_change_only_downstream(tmp_path: Path):
    a = RunDir(tmp_path, make_config("quick"))
    b = RunDir(tmp_path, make_config("quick", {"prune": {"rule": "topk"}}))
    for stage in ("data", "dense", "sparse"):
        assert a.key(stage) == b.key(stage)
    for stage in ("prune", "finetune", "export", "report"):
        assert a.key(stage) != b.key(stage)
    assert stage_sections("sparse") == ("data", "model", "train", "sparse")


@pytest.mark.parametrize("change", [{"round_to": 1}, {"min_channels": 1}, {"skip_unsupported": True}])
def test_prune_keys_the_ratio_solver_reads_rerun_the_sparse_stage(tmp_path: Path, change):
    """The sparse stage solves ratios.json with the widths prune.round_to/min_channels allow: a run resumed with
    other values must not prune to ratios solved for the old ones."""
    a = RunDir(tmp_path, make_config("quick"))
    b = RunDir(tmp_path, make_config("quick", {"prune": change}))
    assert a.key("dense") == b.key("dense")
    for stage in ("sparse", "prune", "finetune"):
        assert a.key(stage) != b.key(stage)


def test_resource_keys_keep_every_stage(tmp_path: Path):
    """Workers, threads and the image cache change no result: a finished or resumable stage survives them."""
    a = RunDir(tmp_path, make_config("quick"))
    b = RunDir(tmp_path, make_config("quick", {"train": {"workers": 12, "threads": 3, "cache": "off"}}))
    c = RunDir(tmp_path, make_config("quick", {"train": {"lr0": 0.02}}))
    for stage in ("data", "dense", "sparse", "prune", "finetune", "export", "report"):
        assert a.key(stage) == b.key(stage)
        assert (a.key(stage) == c.key(stage)) == (stage == "data")


def test_markers_and_invalidation(tmp_path: Path):
    run = RunDir(tmp_path, make_config("quick"))
    for stage in ("data", "dense", "sparse"):
        run.finish(stage, {"x": stage}, 0.1)
    assert run.is_done("dense") and run.outputs("sparse") == {"x": "sparse"}
    run.invalidate_from("dense")
    assert run.is_done("data") and not run.is_done("dense") and not run.is_done("sparse")
    run.marker_path("data").write_text("{truncated")
    assert not run.is_done("data")  # a garbled marker means the stage reruns


def test_stale_stage_dir_is_emptied_when_its_config_changed(tmp_path: Path):
    run = RunDir(tmp_path, make_config("quick"))
    d = stale_stage_dir(run, "dense")
    (d / "last.pt").write_text("checkpoint of these settings")
    assert (stale_stage_dir(run, "dense") / "last.pt").exists()  # same key: resume material kept
    other = RunDir(tmp_path, make_config("quick", {"train": {"lr0": 0.02}}))
    assert not (stale_stage_dir(other, "dense") / "last.pt").exists()


def test_config_file_errors_name_the_key(tmp_path: Path):
    p = tmp_path / "c.yaml"
    p.write_text("preset: quick\ntrain:\n  epochs: -1\n")
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(p)
    p.write_text("preset: quick\nsparse:\n  target: 1.5\n")
    with pytest.raises(ConfigError, match="sparse.target"):
        load_config(p)
    p.write_text("preset: quick\nprune:\n  rule: bogus\n")
    with pytest.raises(ConfigError, match="prune.rule"):
        load_config(p)
    p.write_text("preset: quick\nmodel: [1, 2]\n")
    with pytest.raises(ConfigError, match="model"):
        load_config(p)
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")


def test_progress_names_stage_k_of_n_and_an_eta(tmp_path: Path, monkeypatch):
    """The stage bodies replaced by instant fakes: every stage line says where the run is, and once a
    training stage has run, how long the rest should take (from its measured time and the stage weights)."""
    import edgeprune.stages as stages
    from edgeprune.pipeline import run_pipeline
    from edgeprune.stagedefs import stage_weights

    for name in ("data", "dense", "sparse", "prune", "finetune", "export", "report"):
        monkeypatch.setattr(stages, f"stage_{name}", lambda run: {})
    lines: list[str] = []
    cfg = make_config("quick")
    run_pipeline(cfg, tmp_path, log=lines.append)
    running = [ln for ln in lines if ": running" in ln]
    assert running[1] == "[compress] stage dense: running (stage 2 of 7)"
    finished = [ln for ln in lines if ": finished in" in ln]
    assert "ETA" not in finished[0]                   # after data alone: no basis for an estimate
    assert "(stage 2 of 7, ETA ~" in finished[1] and "ETA" not in finished[-1]
    w = stage_weights(cfg)
    assert w["dense"] == cfg.train.epochs and w["sparse"] > cfg.sparse.epochs


def test_every_registered_stage_has_a_body_and_is_a_compress_choice():
    import argparse

    import edgeprune.stages as stages
    from edgeprune import pipeline_cli
    from edgeprune.stagedefs import REGISTRY

    parser = argparse.ArgumentParser()
    pipeline_cli.register(parser.add_subparsers())
    until = next(a for a in parser._subparsers._group_actions[0].choices["compress"]._actions if a.dest == "until")
    assert list(until.choices) == [s.name for s in REGISTRY]
    for s in REGISTRY:
        assert callable(getattr(stages, s.body)), s
        assert set(s.sections) <= set(make_config().to_dict()), s
