"""Device profiles: what each Jetson (and a host GPU) can do, and sensible build defaults. Python 3.6.

Facts (docs/reference anchors): TX2 is Pascal sm_62 with fast FP16 but no fast INT8 (no DP4A);
Xavier (sm_72) and Orin (sm_87) have FP16, INT8 and, on NX/AGX parts, two DLA cores; Orin Nano has no DLA.
"""
from edgeprune.errors import UsageError

DEVICE_TREE_MODEL = "/proc/device-tree/model"  # e.g. "NVIDIA Jetson Xavier NX Developer Kit" on L4T


class DeviceProfile(object):
    def __init__(self, name, description, compute_capability, fp16, int8, dla_cores, workspace_mb, batch,
                 jetpack, tensorrt):
        self.name = name
        self.description = description
        self.compute_capability = compute_capability  # (major, minor), or None: ask the GPU
        self.fp16 = fp16
        self.int8 = int8
        self.dla_cores = dla_cores
        self.workspace_mb = workspace_mb
        self.batch = batch
        self.jetpack = jetpack
        self.tensorrt = tensorrt

    def sm(self):
        cc = self.compute_capability
        return "sm_{}{}".format(cc[0], cc[1]) if cc else "host GPU"

    def as_dict(self):
        d = dict(self.__dict__)
        d["compute_capability"] = list(self.compute_capability) if self.compute_capability else None
        return d


PRECISIONS = ("fp32", "fp16", "int8")

PROFILES = dict((p.name, p) for p in (
    DeviceProfile("tx2", "Jetson TX2 (Pascal GP10B, 256 CUDA cores)", (6, 2), True, False, 0, 1024, 1,
                  "4.6.x (L4T r32.7)", "8.0.1 / 8.2.1"),
    DeviceProfile("xavier-nx", "Jetson Xavier NX (Volta, 384 CUDA cores, 2 DLA)", (7, 2), True, True, 2, 1024, 1,
                  "4.6.x / 5.x", "8.2 / 8.5"),
    DeviceProfile("agx-xavier", "Jetson AGX Xavier (Volta, 512 CUDA cores, 2 DLA)", (7, 2), True, True, 2, 2048, 1,
                  "4.6.x / 5.x", "8.2 / 8.5"),
    DeviceProfile("orin-nano", "Jetson Orin Nano (Ampere, 512/1024 CUDA cores, no DLA)", (8, 7), True, True, 0, 1024,
                  1, "5.1 / 6.x", "8.5 / 8.6 / 10.3"),
    DeviceProfile("orin-agx", "Jetson AGX Orin (Ampere, 2048 CUDA cores, 2 DLA)", (8, 7), True, True, 2, 4096, 1,
                  "5.x / 6.x", "8.5 / 8.6 / 10.3"),
    DeviceProfile("host", "this machine (x86 GPU if TensorRT is present, else CPU via onnxruntime)", None, True, True,
                  0, 4096, 1, "-", "any"),
))


def get_profile(name):
    if isinstance(name, DeviceProfile):
        return name
    if name not in PROFILES:
        raise UsageError("--device {!r}: choose one of {}".format(name, ", ".join(sorted(PROFILES))))
    return PROFILES[name]


def resolve_precision(requested, profile, fast_fp16=None, fast_int8=None):
    """The precision to build, with the reasons for any fallback.

    fast_fp16/fast_int8: what TensorRT reports for the GPU (None when unknown); the profile's facts decide
    otherwise. TX2: int8 -> fp16 (Pascal sm_62 has no fast INT8; INT8 engines there run slower than FP16)."""
    notes = []
    fp16 = profile.fp16 if fast_fp16 is None else (fast_fp16 and profile.fp16)
    int8 = profile.int8 if fast_int8 is None else (fast_int8 and profile.int8)
    prec = requested
    if prec == "int8" and not int8:
        notes.append("{} ({}) has no fast INT8: building FP16 instead".format(profile.name, profile.sm()))
        prec = "fp16"
    if prec == "fp16" and not fp16:
        notes.append("{} ({}) has no fast FP16: building FP32 instead".format(profile.name, profile.sm()))
        prec = "fp32"
    return prec, notes


def channel_alignment(profile, precision):
    """The channel multiple a pruned width should keep on this target (the latency target's default alignment):
    32 for INT8 on a profile with fast INT8 (tensor-core INT8 tiles), 8 otherwise (FP16 tensor cores; eight fp32
    lanes of an AVX2 register for ONNX Runtime on a CPU host)."""
    profile = get_profile(profile)
    return 32 if precision == "int8" and profile.int8 else 8


def board_model(path=None):
    """The board, for the engine cache key: the device-tree model string on a Jetson ("NVIDIA Jetson Xavier NX
    Developer Kit"; Xavier NX and AGX Xavier are both sm_72, Orin Nano and AGX Orin both sm_87, and an engine is
    tuned for its board's SM count and clocks), None where there is none (x86 hosts). Not the --device profile:
    that only picks defaults and must not split the cache."""
    try:
        with open(path or DEVICE_TREE_MODEL, "rb") as f:
            model = f.read().replace(b"\0", b"").decode("utf-8", "replace").strip()
    except (IOError, OSError):
        model = ""
    return model or None


def optimization_shapes(profile, input_shape):
    """(min, opt, max) input shapes of the TensorRT optimization profile for a dynamic-batch input, None for a
    static one. The largest batch is 8x the profile's batch."""
    if int(input_shape[0]) != -1:
        return None
    top = int(profile.batch) * 8
    chw = [int(d) for d in input_shape[1:]]
    return [[1] + chw, [max(1, top // 2)] + chw, [top] + chw]
