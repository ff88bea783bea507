"""Host side of the latency tables (jetson/layerprof.py holds the grid, the file format and the prediction):
the conv geometry of a torch model (what the exporter writes as the bundle's layers.json), a torch timer for
host GPUs (CUDA events; also runs on CPU), and the whole-network prediction for a torch model."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from jetson.layerprof import LAYERS_VERSION, STATISTICS, measure_table, predict

from ..errors import ModelError


def _block_act(parent: nn.Module | None, conv: nn.Conv2d) -> str | None:
    """'silu' when `conv` is the conv of a conv -> BN -> SiLU block (edgeprune.models.blocks.Conv and its kind)."""
    if parent is None or getattr(parent, "conv", None) is not conv:
        return None
    if isinstance(getattr(parent, "bn", None), nn.BatchNorm2d) and isinstance(getattr(parent, "act", None), nn.SiLU):
        return "silu"
    return None


def conv_layers(model: nn.Module, imgsz: int | tuple[int, int], batch: int = 1) -> dict[str, Any]:
    """layers.json of `model`: every square-kernel Conv2d with its channels, kernel/stride/pad/groups/dilation
    and input H x W (from one forward pass on zeros), `act` ('silu' for a conv-BN-SiLU block, else null),
    `prune_out` (its output channels may be pruned: a conv of a block; head convs are not) and `prune_in`
    (its input is not the image). Convs with non-square kernels, strides or padding are left out: their time
    lands in the table's measured rest."""
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    modules = dict(model.named_modules())
    found: dict[str, dict[str, Any]] = {}
    image = torch.zeros(batch, 3, h, w)
    hooks = []

    def hook(name: str, conv: nn.Conv2d) -> Callable[..., None]:
        def record(_m: nn.Module, args: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
            x = args[0]
            square = (conv.kernel_size[0] == conv.kernel_size[1] and conv.stride[0] == conv.stride[1]
                      and isinstance(conv.padding, tuple) and conv.padding[0] == conv.padding[1]
                      and conv.dilation[0] == conv.dilation[1])
            if not square or name in found:
                return
            parent = modules.get(name.rpartition(".")[0]) if "." in name else None
            act = _block_act(parent, conv)
            found[name] = {"name": name, "cin": conv.in_channels, "cout": conv.out_channels,
                           "kernel": conv.kernel_size[0], "stride": conv.stride[0], "pad": conv.padding[0],
                           "groups": conv.groups, "dilation": conv.dilation[0], "hw": [int(x.shape[2]), int(x.shape[3])],
                           "act": act, "prune_out": act is not None, "prune_in": x.data_ptr() != image.data_ptr()}
        return record

    for name, m in modules.items():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(hook(name, m)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(image)
    except Exception as exc:  # a model that cannot run at this size
        raise ModelError(f"cannot run the model at {h}x{w} to read its conv geometry: {type(exc).__name__}: "
                         f"{exc}") from None
    finally:
        for hk in hooks:
            hk.remove()
        model.train(was_training)
    order = [n for n in modules if n in found]
    return {"version": LAYERS_VERSION, "input_shape": [batch, 3, h, w], "layers": [found[n] for n in order]}


class TorchLayerTimer:
    """Times one conv block (conv with the BN folded into its bias, then SiLU) with torch on `device`:
    CUDA events on a GPU (the host CUDA backend of the tables), perf_counter on a CPU."""
    backend = "torch"
    clock = "wall"

    def __init__(self, device: str = "cuda", precision: str = "fp16") -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ModelError("--backend torch on cuda: no CUDA GPU is available to torch here")
        if precision not in ("fp32", "fp16"):
            raise ModelError(f"torch layer timer: precision {precision!r} is not fp32 or fp16")
        if precision == "fp16" and self.device.type != "cuda":
            precision = "fp32"  # CPU half convolutions are not what any target runs
        self.precision = precision
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        self.versions = {"torch": torch.__version__, "device": name,
                         "cuda": torch.version.cuda if self.device.type == "cuda" else None}
        self.ran_on = f"torch {torch.__version__} {name} {precision}"

    def time_block(self, batch: int, cin: int, cout: int, layer: dict[str, Any], iterations: int,
                   warmup: int) -> float:
        depthwise = layer["groups"] > 1 and layer["groups"] == layer["cin"] == layer["cout"]
        groups = cout if depthwise else layer["groups"]
        conv = nn.Conv2d(cin, cout, layer["kernel"], layer["stride"], layer["pad"], dilation=layer["dilation"],
                         groups=groups, bias=True)
        block = nn.Sequential(conv, nn.SiLU()) if layer["act"] == "silu" else conv
        block = block.to(self.device, self.dtype).eval()
        x = torch.rand(batch, cin, *layer["hw"], device=self.device, dtype=self.dtype)
        with torch.no_grad():
            for _ in range(warmup):
                block(x)
            if self.device.type != "cuda":
                import time
                times = []
                for _ in range(iterations):
                    t0 = time.perf_counter()
                    block(x)
                    times.append((time.perf_counter() - t0) * 1e3)
                return times
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(iterations)]
            for start, end in events:
                start.record()
                block(x)
                end.record()
            torch.cuda.synchronize(self.device)
            return [s.elapsed_time(e) for s, e in events]


def time_model_torch(model: nn.Module, input_shape: list[int], timer: TorchLayerTimer, iterations: int,
                     warmup: int, statistic: str = "median") -> float:
    """The statistic (ms) of the whole model with the timer's device and dtype (the table's whole_model_ms)."""
    import copy
    import time
    m = copy.deepcopy(model).to(timer.device, timer.dtype).eval()
    x = torch.rand(*input_shape, device=timer.device, dtype=timer.dtype)
    times = []
    with torch.no_grad():
        for i in range(warmup + iterations):
            if timer.device.type == "cuda":
                torch.cuda.synchronize(timer.device)
            t0 = time.perf_counter()
            m(x)
            if timer.device.type == "cuda":
                torch.cuda.synchronize(timer.device)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    return float(STATISTICS[statistic](times))


def measure_table_torch(model: nn.Module, imgsz: int, batch: int = 1, device: str = "cuda", precision: str = "fp16",
                        min_channels: int = 8, iterations: int = 20, warmup: int = 3,
                        device_profile: str = "host", log: Callable[[str], None] | None = None,
                        statistic: str = "median") -> dict[str, Any]:
    """A latency table of `model` measured on the spot with torch (the host CUDA backend)."""
    layers = conv_layers(model, imgsz, batch)
    timer = TorchLayerTimer(device, precision)
    whole = time_model_torch(model, layers["input_shape"], timer, iterations, warmup, statistic)
    return measure_table(layers, timer, device_profile, whole_model_ms=whole, min_channels=min_channels,
                         iterations=iterations, warmup=warmup, log=log, statistic=statistic)


def predict_model(table: dict[str, Any], model: nn.Module, imgsz: int, batch: int = 1) -> dict[str, Any]:
    """Whole-network latency of a torch model (dense or pruned) from a table of its dense architecture."""
    return predict(table, conv_layers(model, imgsz, batch)["layers"], where=type(model).__name__)
