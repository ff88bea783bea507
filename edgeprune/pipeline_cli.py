"""`edgeprune compress`: the whole host chain as resumable stages (argument declarations only)."""
import argparse

from .cliconfig import ConfigHelpFormatter, config_flag
from .stagedefs import STAGES


def register(sub):
    p = sub.add_parser(
        "compress",
        help="run the host pipeline: data -> dense -> L1RR sparse -> prune -> fine-tune -> export -> report",
        description="Run the whole host pipeline as resumable stages in runs/<name>/. Rerunning the same command "
                    "resumes after the last finished stage; a changed config reruns only the stages that depend on it.",
        epilog="example:\n  edgeprune compress                      # the synthetic default (about 12 min on an idle 2-core CPU)\n"
               "  edgeprune compress --preset quick --name smoke\n"
               "  edgeprune compress --data path/to/NWPU_VHR-10 --set model.size=s --set train.epochs=100\n"
               "  edgeprune compress --data path/to/NWPU_VHR-10 --model path/to/yolov5s_nwpu.pt   # prune your trained model\n"
               "  edgeprune compress --nproc-per-node 4 --data path/to/DIOR   # 4 GPUs, DDP\n"
               "  edgeprune compress --nnodes 2 --nproc-per-node 8 --rdzv-endpoint node0:29400 --runs-dir /nfs/runs",
        formatter_class=ConfigHelpFormatter,
    )
    p.add_argument("--preset", default=None, help="default | quick | benchmark (default: default)")
    p.add_argument("--config", default=None, help="YAML config file (see runs/<name>/config.yaml for the full schema)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. train.epochs=5")
    config_flag(p, "--data", "data.source", help="dataset path (YOLO/COCO/VOC/NWPU) or 'synthetic'")
    p.add_argument("--model", default=None, metavar="CKPT",
                   help="start from this trained detector (an edgeprune checkpoint, or a yolov5/ultralytics file "
                        "as `edgeprune import` reads it): the dense stage evaluates it on the data instead of training")
    p.add_argument("--name", default=None, help="run name (default: the preset name)")
    p.add_argument("--runs-dir", default="runs", help="parent folder of run directories (default: runs)")
    p.add_argument("--until", choices=STAGES, default=None, help="stop after this stage")
    p.add_argument("--restart", action="store_true", help="ignore finished stages and run everything again")
    p.add_argument("--json", action="store_true", help="print the final summary as JSON")
    d = p.add_argument_group("distributed training (torchrun; the dense, sparse and fine-tune stages run DDP)")
    d.add_argument("--nproc-per-node", type=_procs, default="auto", metavar="N|auto",
                   help="training processes on this machine, one per GPU (gloo on CPU); N > 1 relaunches "
                        "compress under torchrun. auto (default): one per GPU, or on a Linux CPU one per free core "
                        "(two 1-thread processes ran the default in 12.2 min, one process in 19-20, on 2 cores), at "
                        "least 8 images of train.batch a process; 1 reproduces a single-process run")
    d.add_argument("--nnodes", type=int, default=1, metavar="M",
                   help="machines in the job; run the same command on each (the run directory must be on "
                        "shared storage)")
    d.add_argument("--rdzv-endpoint", default=None, metavar="HOST:PORT",
                   help="rendezvous of a multi-node job: the first node's address and a free port, the same "
                        "on every node; a node that cannot join gives up after train.dist_timeout_s")
    d.add_argument("--rdzv-id", default=None, help="job id shared by the nodes (default: the run name)")
    p.set_defaults(handler=_run)


def _procs(text):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number or 'auto'") from None


def _run(args):
    from .pipeline import run_from_args

    return run_from_args(args)
