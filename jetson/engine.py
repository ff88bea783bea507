"""TensorRT engine build (FP32/FP16/INT8) and the engine cache. Python 3.6 (TRT 8.0/8.2) to TRT 10.

An engine is only valid for the ONNX, precision, input shape and optimization-profile shapes, TensorRT version,
GPU (compute capability), board model, workspace and DLA core it was built with, so the cache key hashes all of
them; a cached engine built by another TensorRT, for another GPU or on another board is reported and rebuilt,
never loaded. The choices that depend on the
TensorRT version are made by `plan_build` from a version string (unit-tested without TensorRT):
- INT8: calibrators (IInt8EntropyCalibrator2 / MinMax over calib/ batches) on TRT < 10.1; from 10.1,
  where calibrators are deprecated (removed in 11), explicit quantization from the bundle's QDQ model.int8.onnx.
- workspace: config.set_memory_pool_limit (TRT >= 8.4) or config.max_workspace_size (8.0/8.2).
"""
import hashlib
import json
import os
import sys

from edgeprune.errors import DeviceError
from edgeprune.fsio import atomic_write_bytes, atomic_write_json, sha256_file

from .backends.trt import load_plugins, parse_version
from .bundle import extra_file, model_file
from .profiles import board_model, optimization_shapes, resolve_precision

CACHE_FORMAT = 2
CALIBRATORS_UNTIL = (10, 1)    # first version where calibrators are deprecated -> explicit quantization
MEMORY_POOL_FROM = (8, 4)      # set_memory_pool_limit replaces max_workspace_size


def _log_default(msg):
    sys.stderr.write("edgeprune: " + msg + "\n")


def cache_fields(onnx_sha256, precision, input_shape, trt_version, compute_capability, workspace_mb,
                 dla_core=None, int8_source=None, board=None, profile_shapes=None):
    """Everything an engine depends on. int8_source: calib manifest sha / QDQ model sha for INT8 engines;
    board: jetson.profiles.board_model; profile_shapes: (min, opt, max) of a dynamic input, else None."""
    cc = compute_capability
    return {"format": CACHE_FORMAT, "onnx_sha256": onnx_sha256, "precision": precision,
            "input_shape": [int(d) for d in input_shape], "trt_version": str(trt_version),
            "compute_capability": "{}.{}".format(cc[0], cc[1]) if cc else "unknown", "board": board,
            "profile_shapes": [[int(d) for d in s] for s in profile_shapes] if profile_shapes else None,
            "workspace_mb": int(workspace_mb), "dla_core": dla_core, "int8_source": int8_source}


def cache_key(fields):
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:20]


# What must match for two entries to be "the same engine request" (what differs then explains staleness).
_REQUEST = ("onnx_sha256", "precision", "input_shape", "profile_shapes", "workspace_mb", "dla_core", "int8_source")
_ENVIRONMENT = ("trt_version", "compute_capability", "board", "format")


class EngineCache(object):
    """A folder of `<name>.engine` plans, each with `<name>.json` = its cache fields + plan sha256."""

    def __init__(self, folder, log=_log_default):
        self.folder = str(folder)
        self.log = log

    def _name(self, fields):
        return "{}-{}-{}".format(fields["onnx_sha256"][:12], fields["precision"], cache_key(fields))

    def path_for(self, fields):
        return os.path.join(self.folder, self._name(fields) + ".engine")

    def _entries(self):
        if not os.path.isdir(self.folder):
            return []
        out = []
        for fn in sorted(os.listdir(self.folder)):
            if fn.endswith(".json") and os.path.exists(os.path.join(self.folder, fn[:-5] + ".engine")):
                try:
                    with open(os.path.join(self.folder, fn)) as f:
                        out.append((fn[:-5], json.load(f)))
                except (OSError, ValueError):
                    out.append((fn[:-5], None))
        return out

    def lookup(self, fields):
        """Path of a valid cached engine for `fields`, or None. Stale siblings (same request, other TensorRT or
        GPU) and corrupt entries are reported and deleted so they cannot be loaded by mistake."""
        want = self._name(fields)
        hit = None
        for name, meta in self._entries():
            plan = os.path.join(self.folder, name + ".engine")
            if meta is None:
                self.log("engine cache: {}.json is unreadable; removing that entry".format(name))
                self._remove(name)
                continue
            stored = meta.get("fields", {})
            if name == want and stored == fields:
                if sha256_file(plan) != meta.get("plan_sha256"):
                    self.log("engine cache: {} is corrupt (sha256 differs); rebuilding".format(plan))
                    self._remove(name)
                    continue
                hit = plan
            elif all(stored.get(k) == fields.get(k) for k in _REQUEST):
                diff = ["{} {} -> {}".format(k, stored.get(k), fields.get(k)) for k in _ENVIRONMENT
                        if stored.get(k) != fields.get(k)]
                self.log("engine cache: {} was built for another environment ({}); rebuilding for this one"
                         .format(plan, ", ".join(diff) or "different key"))
                self._remove(name)
        return hit

    def store(self, fields, plan_bytes):
        path = self.path_for(fields)
        atomic_write_bytes(path, plan_bytes)
        atomic_write_json(path[:-len(".engine")] + ".json", {
            "fields": fields, "plan_sha256": hashlib.sha256(plan_bytes).hexdigest(), "plan_bytes": len(plan_bytes)})
        return path

    def _remove(self, name):
        for ext in (".engine", ".json"):
            p = os.path.join(self.folder, name + ext)
            if os.path.exists(p):
                os.remove(p)


def plan_build(trt_version, profile, precision, has_fp16_flag=True, has_int8_flag=True, fast_fp16=None,
               fast_int8=None, has_int8_model=False, has_calib=False, dla_core=None):
    """Decide what to build on this TensorRT/GPU. Pure: returns a dict, raises DeviceError for impossible asks."""
    v = parse_version(trt_version)
    prec, notes = resolve_precision(precision, profile, fast_fp16, fast_int8)
    int8_mode = None
    if prec == "int8":
        if v[:2] >= CALIBRATORS_UNTIL:
            if not has_int8_model:
                raise DeviceError("TensorRT {} quantizes explicitly (calibrators are deprecated from 10.1): the bundle "
                                  "needs model.int8.onnx; run `edgeprune export --int8 --calib DIR` on the host"
                                  .format(trt_version))
            int8_mode = "explicit"
        elif has_calib:
            int8_mode = "calibrator"
        elif has_int8_model:
            int8_mode = "explicit"
            notes.append("no calib/ batches in the bundle: using its QDQ model.int8.onnx (explicit quantization)")
        else:
            raise DeviceError("INT8 needs calibration data: run `edgeprune calib build --data DATA --bundle BUNDLE` "
                              "(or export a QDQ model with `edgeprune export --int8`)")
    if prec == "fp16" and not has_fp16_flag:
        notes.append("TensorRT {} has no BuilderFlag.FP16 (removed in 11; convert the ONNX to FP16 first): "
                     "building a strongly typed FP32 engine".format(trt_version))
        prec = "fp32"
    if dla_core is not None:
        if profile.dla_cores == 0:
            raise DeviceError("--dla-core {}: {} has no DLA (only Xavier NX/AGX and AGX Orin have DLA cores)"
                              .format(dla_core, profile.name))
        if not 0 <= dla_core < profile.dla_cores:
            raise DeviceError("--dla-core {}: {} has DLA cores 0..{}".format(dla_core, profile.name,
                                                                              profile.dla_cores - 1))
        if prec == "fp32":
            raise DeviceError("DLA runs FP16 or INT8 only: add --precision fp16 (layers DLA cannot run fall back "
                              "to the GPU)")
    return {"precision": prec, "int8_mode": int8_mode,
            "onnx": "int8_model" if int8_mode == "explicit" else "model",
            "set_int8_flag": prec == "int8" and has_int8_flag,
            "set_fp16_flag": prec in ("fp16", "int8") and has_fp16_flag,
            "workspace_api": "memory_pool" if v[:2] >= MEMORY_POOL_FROM else "max_workspace_size",
            "build_api": "build_serialized_network", "dla_core": dla_core, "notes": notes}


def _parser_errors(parser, onnx_path):
    msgs = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        node = ""
        if hasattr(err, "node_name"):     # TRT >= 10 (8.x ParserError has only the node index)
            node = err.node_name()
        elif hasattr(err, "node"):
            node = "node #{}".format(err.node())
        msgs.append("{}: {}".format(node or "?", err.desc()))
    return DeviceError("{}: TensorRT cannot parse the ONNX: {}".format(onnx_path, "; ".join(msgs) or "unknown error"))


def build_engine(trt, onnx_path, plan, input_name, input_shape, workspace_mb, profile_shapes=None,
                 calibrator=None, timing_cache_path=None, log=_log_default):
    """Build and serialize an engine with the real TensorRT API as `plan` (from plan_build) says. Returns bytes.
    profile_shapes: (min, opt, max) for a dynamic input (jetson.profiles.optimization_shapes). A calibrator
    (jetson.calibrators) feeds batches of `calibrator.input_shape`; for a dynamic input that shape becomes the
    calibration profile, which TensorRT requires there."""
    logger = trt.Logger(trt.Logger.WARNING)
    load_plugins(trt, logger)  # the 10.x parser no longer does it: EfficientNMS_TRT would be "not found"
    builder = trt.Builder(logger)
    flags = 0
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    if explicit is not None and parse_version(trt.__version__)[0] < 10:  # implicit batch is gone in 10
        flags |= 1 << int(explicit)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, "rb") as f:
        if not parser.parse(f.read()):
            raise _parser_errors(parser, onnx_path)
    config = builder.create_builder_config()
    nbytes = int(workspace_mb) << 20
    if plan["workspace_api"] == "memory_pool":
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, nbytes)
    else:
        config.max_workspace_size = nbytes
    if plan["set_fp16_flag"]:
        config.set_flag(trt.BuilderFlag.FP16)
    if plan["set_int8_flag"]:
        config.set_flag(trt.BuilderFlag.INT8)
    if plan["int8_mode"] == "calibrator":
        config.int8_calibrator = calibrator
    if plan["dla_core"] is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(plan["dla_core"])
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if input_shape[0] == -1:
        if not profile_shapes:
            raise DeviceError("{}: dynamic-batch input {!r} needs optimization-profile shapes".format(onnx_path,
                                                                                                  input_name))
        prof = builder.create_optimization_profile()
        prof.set_shape(input_name, *[tuple(s) for s in profile_shapes])
        config.add_optimization_profile(prof)
        if plan["int8_mode"] == "calibrator":
            cal = builder.create_optimization_profile()
            shape = tuple(calibrator.input_shape)
            cal.set_shape(input_name, shape, shape, shape)
            config.set_calibration_profile(cal)
    timing = None
    if timing_cache_path and hasattr(config, "create_timing_cache"):
        blob = b""
        if os.path.exists(timing_cache_path):
            with open(timing_cache_path, "rb") as f:
                blob = f.read()
        timing = config.create_timing_cache(blob)
        config.set_timing_cache(timing, False)
    log("building TensorRT {} {} engine from {} (workspace {} MiB{}) - this takes minutes on a Jetson".format(
        trt.__version__, plan["precision"], os.path.basename(onnx_path), workspace_mb,
        ", DLA core {}".format(plan["dla_core"]) if plan["dla_core"] is not None else ""))
    serialized = builder.build_serialized_network(network, config)
    failed = getattr(calibrator, "error", None)
    if failed is not None:  # get_batch stopped calibration early: an engine from part of the set is not kept
        raise failed
    if serialized is None:
        raise DeviceError("{}: TensorRT failed to build a {} engine (see its log above)".format(onnx_path,
                                                                                               plan["precision"]))
    if timing is not None:
        atomic_write_bytes(timing_cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(serialized))


def default_cache_dir(manifest):
    return os.environ.get("EDGEPRUNE_ENGINE_CACHE") or os.path.join(manifest["_root"], "engines")


def get_engine(manifest, profile, precision, cache_dir=None, workspace_mb=None, dla_core=None, calib_kind="entropy",
               log=None, force=False):
    """Return (engine path, precision built) for this bundle on this GPU, building and caching when needed."""
    log = log or _log_default
    try:
        import tensorrt as trt
    except ImportError:
        raise DeviceError("TensorRT is not importable: engines are built on the device (JetPack's "
                          "python3-libnvinfer); use --backend onnxruntime elsewhere")
    from .backends.cudamem import open_memory
    mem = open_memory()
    try:
        cc = mem.compute_capability()
    finally:
        mem.close()
    if profile.compute_capability and tuple(profile.compute_capability) != tuple(cc):
        log("--device {} is {} but this GPU is sm_{}{}: the engine is built and keyed for the GPU that is here"
            .format(profile.name, profile.sm(), cc[0], cc[1]))
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    int8_model = extra_file(manifest, "int8_model", required=False)
    calib_manifest = extra_file(manifest, "calib", required=False)
    plan = plan_build(trt.__version__, profile, precision,
                      has_fp16_flag=hasattr(trt.BuilderFlag, "FP16"), has_int8_flag=hasattr(trt.BuilderFlag, "INT8"),
                      fast_fp16=getattr(builder, "platform_has_fast_fp16", None),
                      fast_int8=getattr(builder, "platform_has_fast_int8", None),
                      has_int8_model=int8_model is not None, has_calib=calib_manifest is not None, dla_core=dla_core)
    for note in plan["notes"]:
        log(note)
    onnx_path = int8_model if plan["onnx"] == "int8_model" else model_file(manifest)
    int8_source = None
    if plan["int8_mode"] == "calibrator":
        from .calibset import load_calib_set
        calib = load_calib_set(calib_manifest, manifest)
        int8_source = "calib:" + calib["sha256"] + ":" + calib_kind
    elif plan["int8_mode"] == "explicit":
        int8_source = "qdq:" + sha256_file(onnx_path)
    workspace = int(workspace_mb or profile.workspace_mb)
    shape = manifest["model"]["input_shape"]
    shapes = optimization_shapes(profile, shape)
    fields = cache_fields(manifest["model"]["sha256"], plan["precision"], shape, trt.__version__, cc, workspace,
                          dla_core, int8_source, board=board_model(), profile_shapes=shapes)
    cache = EngineCache(cache_dir or default_cache_dir(manifest), log)
    hit = None if force else cache.lookup(fields)
    if hit:
        return hit, plan["precision"]
    calibrator = None
    if plan["int8_mode"] == "calibrator":
        from .calibrators import make_trt_calibrator
        # what TensorRT reads per get_batch: the static input, or for a dynamic one the calibration profile
        calib_shape = list(shape) if shapes is None else [min(int(calib["batch_size"]), shapes[2][0])] + shapes[0][1:]
        calibrator = make_trt_calibrator(trt, calib, calib_kind, os.path.join(cache.folder, "calib-{}.cache".format(
            cache_key(dict(fields, precision="calib")))), open_memory(), input_shape=calib_shape)
    timing_path = os.path.join(cache.folder, "timing-trt{}-sm{}{}.cache".format(trt.__version__, cc[0], cc[1]))
    try:
        blob = build_engine(trt, onnx_path, plan, manifest["model"]["input_name"], shape, workspace,
                            profile_shapes=shapes, calibrator=calibrator,
                            timing_cache_path=timing_path, log=log)
    finally:
        if calibrator is not None:
            calibrator.close()
    path = cache.store(fields, blob)
    log("engine cached at {}".format(path))
    return path, plan["precision"]
