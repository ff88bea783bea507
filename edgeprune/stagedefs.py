"""What each `compress` stage is: its name (in run order), the config sections its own work reads, whether it
trains. Python 3.6 and import-free: `pipeline_cli` takes `--until`'s choices from here, `rundir` the resume keys,
`report` the stage list; the bodies are in stages.py, the machinery in pipeline.py.
"""
STAGES = ("data", "dense", "sparse", "prune", "finetune", "export", "report")

# Config sections each stage reads (cumulative: a stage also depends on everything upstream).
OWN_SECTIONS = {
    "data": ("data",),
    "dense": ("model", "train"),
    "sparse": ("sparse",),
    "prune": ("prune",),
    "finetune": ("finetune",),
    "export": ("export",),
    "report": (),
}
# prune keys the sparse stage's ratio solver reads for prune.target=latency; added to the keys only then, so
# runs with the FLOPs target keep the keys they had.
LATENCY_KEYS = ("prune.target", "prune.latency_budget", "prune.latency_table")
# Stages that train, and so run on every rank under torchrun.
TRAINING_STAGES = ("dense", "sparse", "finetune")


def stage_sections(stage):
    """The config sections a stage's resume key hashes: its own and every upstream stage's."""
    out = []
    for s in STAGES[: STAGES.index(stage) + 1]:
        out.extend(OWN_SECTIONS[s])
    return tuple(out)
