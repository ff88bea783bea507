"""The `compress` stage registry: one declaration per stage, in run order. Python 3.6 and import-light:
`pipeline_cli` takes `--until`'s choices from here, `rundir` the resume keys (`stage_sections`), `pipeline` the
order, which stages train and the ETA weights, `report` the stage list. The bodies are functions in stages.py,
named here and looked up when the stage runs (so that this module never imports torch).
"""
from collections import namedtuple

# name; sections: the config sections its own work reads (its resume key hashes these and every upstream
# stage's); trains: runs on every rank under torchrun (DDP), the other stages on rank 0 alone; body: its function
# in edgeprune/stages.py (`body(run_dir) -> outputs`); cost: rough run time in dense-epoch units, for the ETA
# (the default run on 2 cores: dense 355 s for 12 epochs, sparse 276 s for 8, fine-tune 97 s for 8, the rest
# seconds; docs/DESIGN.md facts).
Stage = namedtuple("Stage", "name sections trains body cost")

REGISTRY = (
    Stage("data", ("data",), False, "stage_data", lambda cfg: 0.5),
    Stage("dense", ("model", "train"), True, "stage_dense", lambda cfg: float(cfg.train.epochs)),
    Stage("sparse", ("sparse",), True, "stage_sparse", lambda cfg: 1.2 * cfg.sparse.epochs),
    Stage("prune", ("prune",), False, "stage_prune", lambda cfg: 0.5),
    Stage("finetune", ("finetune",), True, "stage_finetune", lambda cfg: 0.4 * cfg.finetune.epochs),
    Stage("export", ("export",), False, "stage_export", lambda cfg: 0.5),
    Stage("report", (), False, "stage_report", lambda cfg: 0.2),
)
# prune keys the sparse stage's ratio solver reads (rundir.RunDir.key adds them to the keys of the sparse stage and
# those downstream): the widths it rounds every candidate to and the layers it may trace, always; the latency
# target's, only with prune.target=latency, so runs with the FLOPs target keep their keys.
SOLVER_KEYS = ("prune.round_to", "prune.min_channels", "prune.skip_unsupported")
LATENCY_KEYS = ("prune.target", "prune.latency_budget", "prune.latency_table")
STAGES = tuple(s.name for s in REGISTRY)
BY_NAME = dict((s.name, s) for s in REGISTRY)


def stage_sections(stage):
    """The config sections a stage's resume key hashes: its own and every upstream stage's."""
    out = []
    for s in REGISTRY[: STAGES.index(stage) + 1]:
        out.extend(s.sections)
    return tuple(out)


def stage_weights(cfg):
    """Each stage's ETA weight under `cfg` (dense-epoch units)."""
    return dict((s.name, s.cost(cfg)) for s in REGISTRY)
