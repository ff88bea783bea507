"""Per-layer latency tables measured on the target (`edgeprune bench BUNDLE --profile-layers`), and the
whole-network prediction read from them. Python 3.6, numpy only.

The bundle's `layers.json` (written by the exporter) lists every conv of the model with its geometry. Each conv
block (conv + folded BN + SiLU, as the engine fuses it) is timed alone, with the backend that will run the model,
at a grid of output-channel counts: the multiples of 8, 16 and 32 around each step of a ladder from the dense
width down to min_channels, plus one unaligned count (a multiple of 8 minus one) per step, so the table shows
the staircase an unaligned width falls off. A coarser grid of input-channel counts (a multiple of 8 and one less
at each step) at the dense output width gives the input side. The whole model is timed too; what the blocks do not explain
(concat, upsample, pooling, adds, the box decode, per-call overhead) is the table's `rest_ms`.

Prediction for a (pruned) model = S * (1 + rest_ms / S_dense), S = the sum over its convs of
T_out(cout) * T_in(cin) / T_in(cin_dense), S_dense the same sum for the dense model, where T_out / T_in interpolate
linearly between grid points of the same alignment class (multiple of 8 or not). The rest scales with the blocks
(`rest_share`) instead of staying a constant: the whole network differs from its blocks timed alone by a share of
their time (ONNX Runtime CPU: 4-9 % faster than the sum, so a negative rest), and a constant rest under-predicted
pruned models by 12-17 % (BENCHMARKS.md §5c); the dense model is predicted at its measured time either way.
"""
import json
import os
import platform
import tempfile
import time

import numpy as np

from edgeprune.errors import BundleError, DeviceError, UsageError

from .onnx_min import conv_block_model

TABLE_VERSION = 1
LAYERS_VERSION = 1
LADDER = (1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125)  # fractions of the dense width
ALIGNMENTS = (8, 16, 32)
ALIGNED = 8  # a width that is a multiple of this is on the "aligned" staircase
_LAYER_KEYS = (("name", str), ("cin", int), ("cout", int), ("kernel", int), ("stride", int), ("pad", int),
               ("groups", int), ("dilation", int), ("hw", list), ("act", (str, type(None))),
               ("prune_out", bool), ("prune_in", bool))


# ---- grids --------------------------------------------------------------------------------------------------

def out_grid(width, min_channels=8, alignments=ALIGNMENTS, ladder=LADDER):
    """Output-channel counts to time for a layer of `width` channels (sorted, within [min_channels, width])."""
    width, lo = int(width), min(int(min_channels), int(width))
    pts = set([width, lo])
    for f in ladder:
        t = f * width
        for a in alignments:
            pts.add(int(a * np.floor(t / a)))
            pts.add(int(a * np.ceil(t / a)))
        pts.add(int(ALIGNED * np.floor(t / ALIGNED)) - 1)  # one unaligned count per step
    return sorted(p for p in pts if lo <= p <= width)


def in_grid(width, min_channels=8, ladder=LADDER):
    """Input-channel counts: at each ladder step the multiple of 8 below it and one less (an unaligned count),
    sorted, within [min_channels, width]."""
    width, lo = int(width), min(int(min_channels), int(width))
    pts = set([width, lo])
    for f in ladder:
        step = int(ALIGNED * np.floor(f * width / ALIGNED))
        pts.update((step, step - 1))
    return sorted(p for p in pts if lo <= p <= width)


def _is_depthwise(layer):
    return layer["groups"] > 1 and layer["groups"] == layer["cin"] == layer["cout"]


def layer_points(layer, min_channels=8):
    """[(axis, cin, cout)] to time for one layer; axis 'out' varies cout, 'in' varies cin, 'dense' is one point.
    A depthwise conv varies its channels together (on 'out'); other grouped convs are timed dense only."""
    cin, cout = layer["cin"], layer["cout"]
    if _is_depthwise(layer):
        if not layer["prune_out"]:
            return [("dense", cin, cout)]
        return [("out", c, c) for c in out_grid(cout, min_channels)]
    if layer["groups"] != 1:
        return [("dense", cin, cout)]
    pts = [("out", cin, c) for c in out_grid(cout, min_channels)] if layer["prune_out"] else [("dense", cin, cout)]
    if layer["prune_in"]:
        pts += [("in", c, cout) for c in in_grid(cin, min_channels) if c != cin]
    return pts


# ---- layers.json --------------------------------------------------------------------------------------------

def read_layers(path):
    """The validated layers.json: {"version", "input_shape", "layers": [...]}; BundleError naming the layer/key."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except (IOError, OSError) as exc:
        raise BundleError("{}: cannot read: {}".format(path, exc))
    except ValueError as exc:
        raise BundleError("{}: not valid JSON: {}".format(path, exc))
    if not isinstance(doc, dict) or doc.get("version") != LAYERS_VERSION or not isinstance(doc.get("layers"), list):
        raise BundleError("{}: expected {{\"version\": {}, \"input_shape\": [...], \"layers\": [...]}}"
                          .format(path, LAYERS_VERSION))
    shape = doc.get("input_shape")
    if not (isinstance(shape, list) and len(shape) == 4 and all(isinstance(d, int) for d in shape)):
        raise BundleError("{}: key 'input_shape' must be [batch, 3, H, W], got {!r}".format(path, shape))
    seen = set()
    for i, layer in enumerate(doc["layers"]):
        where = "{}: layers[{}]".format(path, i)
        if not isinstance(layer, dict):
            raise BundleError("{} is not an object".format(where))
        for key, kind in _LAYER_KEYS:
            v = layer.get(key)
            if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
                raise BundleError("{} ({}): key {!r} is missing or not {}".format(
                    where, layer.get("name", "?"), key, getattr(kind, "__name__", "str or null")))
        if any(layer[k] <= 0 for k in ("cin", "cout", "kernel", "stride", "groups", "dilation")):
            raise BundleError("{} ({}): channel/kernel/stride/groups/dilation must be > 0".format(where, layer["name"]))
        if layer["cin"] % layer["groups"] or layer["cout"] % layer["groups"]:
            raise BundleError("{} ({}): {} -> {} channels do not divide into {} groups".format(
                where, layer["name"], layer["cin"], layer["cout"], layer["groups"]))
        if len(layer["hw"]) != 2 or not all(isinstance(d, int) and d > 0 for d in layer["hw"]):
            raise BundleError("{} ({}): key 'hw' must be [H, W] of the layer's input".format(where, layer["name"]))
        if layer["act"] not in ("silu", None):
            raise BundleError("{} ({}): act {!r} is not 'silu' or null".format(where, layer["name"], layer["act"]))
        if layer["name"] in seen:
            raise BundleError("{}: layer {} is listed twice".format(where, layer["name"]))
        seen.add(layer["name"])
    return doc


# ---- timers -------------------------------------------------------------------------------------------------

def block_model(batch, cin, cout, layer):
    """The serialized one-block ONNX of `layer` at (cin, cout) (a depthwise conv keeps groups = channels)."""
    groups = cout if _is_depthwise(layer) else layer["groups"]
    return conv_block_model(batch, cin, cout, layer["hw"], layer["kernel"], layer["stride"], layer["pad"], groups,
                            layer["dilation"], layer["act"])


STATISTICS = {"median": np.median, "min": np.min}
# wall: what a dedicated target sees. cpu: CPU time of this process, for a single-threaded backend on a machine
# shared with other jobs, where preemption (not the model) decides most wall-clock samples.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _samples_ms(run, iterations, warmup, clock=time.perf_counter):
    for _ in range(warmup):
        run()
    times = []
    for _ in range(iterations):
        t0 = clock()
        run()
        times.append((clock() - t0) * 1e3)
    return times


class OrtLayerTimer(object):
    """Times one conv block with onnxruntime (the ONNX is written in memory by jetson.onnx_min)."""
    backend = "onnxruntime"

    def __init__(self, threads=None, providers=None, clock="wall"):
        try:
            import onnxruntime as ort
        except ImportError:
            raise DeviceError("onnxruntime is not installed: pip install onnxruntime")
        if clock == "cpu" and threads != 1:
            raise UsageError("--clock cpu measures one thread's work: add --threads 1")
        self.clock = clock
        from .backends.ort import choose_providers
        self.ort = ort
        self.threads = threads
        self.providers = providers or choose_providers(ort.get_available_providers())
        self.precision = "fp32"
        self.versions = {"onnxruntime": ort.__version__}
        self.ran_on = "onnxruntime {} {}".format(ort.__version__, self.providers[0])

    def time_block(self, batch, cin, cout, layer, iterations, warmup):
        opts = self.ort.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads = int(self.threads)
            opts.inter_op_num_threads = 1
        model = block_model(batch, cin, cout, layer)
        sess = self.ort.InferenceSession(model, sess_options=opts, providers=self.providers)
        x = np.random.RandomState(0).rand(batch, cin, layer["hw"][0], layer["hw"][1]).astype(np.float32)
        return _samples_ms(lambda: sess.run(None, {"x": x}), iterations, warmup, CLOCKS[self.clock])


class TrtLayerTimer(object):
    """Times one conv block as its own TensorRT engine (built from the jetson.onnx_min ONNX with the build code
    the bundles use), reading the compute time from CUDA events (TrtBackend.last_split)."""
    backend = "tensorrt"
    clock = "cuda events"

    def __init__(self, profile, precision="fp16", workspace_mb=None, trt=None, open_backend=None, log=None):
        if trt is None:
            try:
                import tensorrt as trt
            except ImportError:
                raise DeviceError("TensorRT is not importable; on a Jetson install JetPack's python3-libnvinfer, "
                                  "elsewhere profile with --backend onnxruntime")
        from .engine import plan_build
        self.trt = trt
        self.profile = profile
        builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
        if precision == "int8":
            # per-layer INT8 timing needs calibration per block; the QDQ route needs onnx on the device
            raise DeviceError("--profile-layers times fp32/fp16 with TensorRT; INT8 layer tables are not supported yet")
        self.plan = plan_build(trt.__version__, profile, precision,
                               has_fp16_flag=hasattr(trt.BuilderFlag, "FP16"),
                               fast_fp16=getattr(builder, "platform_has_fast_fp16", None))
        self.precision = self.plan["precision"]
        self.workspace_mb = int(workspace_mb or profile.workspace_mb)
        self.versions = {"tensorrt": trt.__version__}
        self.ran_on = "tensorrt {} {}".format(trt.__version__, self.precision)
        self.log = log or (lambda msg: None)
        if open_backend is None:
            from .backends.trt import open_trt_backend as open_backend
        self.open_backend = open_backend
        self.folder = tempfile.mkdtemp(prefix="edgeprune-layerprof-")

    def time_block(self, batch, cin, cout, layer, iterations, warmup):
        from .engine import build_engine
        model = block_model(batch, cin, cout, layer)
        onnx_path = os.path.join(self.folder, "block.onnx")
        plan_path = os.path.join(self.folder, "block.engine")
        with open(onnx_path, "wb") as f:
            f.write(model)
        blob = build_engine(self.trt, onnx_path, self.plan, "x", [batch, cin] + list(layer["hw"]), self.workspace_mb,
                            timing_cache_path=os.path.join(self.folder, "timing.cache"), log=self.log)
        with open(plan_path, "wb") as f:
            f.write(blob)
        backend = self.open_backend(plan_path, device=self.profile.name, precision=self.precision)
        try:
            x = np.random.RandomState(0).rand(batch, cin, layer["hw"][0], layer["hw"][1]).astype(np.float32)
            for _ in range(warmup):
                backend.infer(x)
            times = []
            for _ in range(iterations):
                backend.infer(x)
                times.append(backend.last_split["compute"])
            return times
        finally:
            backend.close()

    def close(self):
        for fn in os.listdir(self.folder):
            os.remove(os.path.join(self.folder, fn))
        os.rmdir(self.folder)


# ---- the table ----------------------------------------------------------------------------------------------

def machine_note():
    """What else the machine was doing: tables from a shared machine carry its load."""
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    return {"loadavg": load, "cpus": os.cpu_count(), "machine": platform.machine(), "node": platform.node()}


def table_key(device_profile, backend, precision, input_shape, versions):
    return {"device_profile": device_profile, "backend": backend, "precision": precision,
            "batch": int(input_shape[0]), "input_size": [int(input_shape[2]), int(input_shape[3])],
            "versions": dict(versions, numpy=np.__version__, python=platform.python_version())}


def measure_table(layers_doc, timer, device_profile, whole_model_ms=None, min_channels=8, iterations=20, warmup=3,
                  model_sha256=None, log=None, only=None, statistic="median", whole_model=None):
    """Time every layer's grid with `timer` (OrtLayerTimer / TrtLayerTimer / the host's torch timer; its
    time_block returns the samples in ms). The whole model with the same backend gives rest_ms: either
    whole_model_ms (the same statistic, measured before), or whole_model, a function n -> n samples in ms, which
    is sampled before the first layer and again after every layer, so that the whole model and the blocks are
    measured over the same stretch of time (on a shared machine the load drifts). statistic: 'median', or 'min'.
    only: an optional set of layer names to time (tests)."""
    reduce = STATISTICS[statistic]
    whole_samples = list(whole_model(iterations)) if whole_model is not None else []
    shape = layers_doc["input_shape"]
    batch = int(shape[0]) if int(shape[0]) > 0 else 1
    note_before = machine_note()
    t_start = time.time()
    layers = {}
    todo = [l for l in layers_doc["layers"] if only is None or l["name"] in only]
    for i, layer in enumerate(todo):
        entry = dict((k, layer[k]) for k, _ in _LAYER_KEYS if k != "name")
        entry.update({"out_grid": [], "in_grid": []})
        for axis, cin, cout in layer_points(layer, min_channels):
            ms = float(reduce(timer.time_block(batch, cin, cout, layer, iterations, warmup)))
            if axis == "out":
                entry["out_grid"].append([cout, ms])
            elif axis == "in":
                entry["in_grid"].append([cin, ms])
            if cin == layer["cin"] and cout == layer["cout"]:
                entry["dense_ms"] = ms
        if entry["in_grid"]:
            entry["in_grid"].append([layer["cin"], entry["dense_ms"]])
            entry["in_grid"].sort()
        layers[layer["name"]] = entry
        if whole_model is not None:
            whole_samples.extend(whole_model(max(1, iterations // 4)))
        if log:
            log("layer {}/{} {}: {} -> {} ch, {:.3f} ms dense, {} points".format(
                i + 1, len(todo), layer["name"], layer["cin"], layer["cout"], entry["dense_ms"],
                len(entry["out_grid"]) + len(entry["in_grid"])))
    dense_sum = float(sum(e["dense_ms"] for e in layers.values()))
    if whole_samples:
        whole_model_ms = float(reduce(whole_samples))
    return {"version": TABLE_VERSION, "kind": "edgeprune latency table",
            "key": table_key(device_profile, timer.backend, timer.precision, [batch] + list(shape[1:]),
                             timer.versions),
            "ran_on": timer.ran_on, "model_sha256": model_sha256, "min_channels": int(min_channels),
            "iterations": int(iterations), "warmup": int(warmup), "statistic": statistic, "clock": timer.clock,
            "whole_model_ms": whole_model_ms, "whole_model_samples": len(whole_samples) or None,
            "layers_dense_ms": dense_sum,
            "rest_ms": None if whole_model_ms is None else float(whole_model_ms) - dense_sum,
            "machine": {"before": note_before, "after": machine_note()},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
            "wall_s": time.time() - t_start, "layers": layers}


def read_table(path):
    """A latency_table.json, checked enough to predict from; BundleError naming the file and key."""
    try:
        with open(str(path)) as f:
            table = json.load(f)
    except (IOError, OSError) as exc:
        raise BundleError("{}: cannot read the latency table: {}".format(path, exc))
    except ValueError as exc:
        raise BundleError("{}: the latency table is not valid JSON: {}".format(path, exc))
    if not isinstance(table, dict) or table.get("version") != TABLE_VERSION:
        raise BundleError("{}: not a version-{} latency table (edgeprune bench --profile-layers writes one)"
                          .format(path, TABLE_VERSION))
    for key in ("key", "layers"):
        if not isinstance(table.get(key), dict):
            raise BundleError("{}: key {!r} is missing or not an object".format(path, key))
    for name, e in table["layers"].items():
        for key in ("cin", "cout", "dense_ms", "out_grid", "in_grid"):
            if key not in e:
                raise BundleError("{}: layers.{} has no {!r}".format(path, name, key))
        for grid in ("out_grid", "in_grid"):
            if any(not (isinstance(p, list) and len(p) == 2 and p[1] >= 0) for p in e[grid]):
                raise BundleError("{}: layers.{}.{} must be [[channels, ms], ...]".format(path, name, grid))
    return table


def key_mismatches(table, backend=None, precision=None, input_shape=None, device_profile=None):
    """Why this table does not describe the run asked for ([] when it does)."""
    k = table["key"]
    out = []
    for name, want in (("backend", backend), ("precision", precision), ("device_profile", device_profile)):
        if want is not None and k.get(name) != want:
            out.append("{} {} (table) != {}".format(name, k.get(name), want))
    if input_shape is not None:
        if k.get("batch") != int(input_shape[0]) or k.get("input_size") != [int(input_shape[2]), int(input_shape[3])]:
            out.append("batch/input {}x{} (table) != {}x{}".format(k.get("batch"), k.get("input_size"),
                                                                  int(input_shape[0]), list(input_shape[2:])))
    return out


# ---- prediction ---------------------------------------------------------------------------------------------

def staircase(points, c):
    """Latency at `c` channels from measured [[channels, ms], ...]: exact at a grid point, else linear between
    the nearest points of c's alignment class (multiple of 8 or not; all points when that class has < 2),
    proportional to c beyond the measured range."""
    pts = sorted((int(p[0]), float(p[1])) for p in points)
    for ch, ms in pts:
        if ch == c:
            return ms
    aligned = c % ALIGNED == 0
    same = [p for p in pts if (p[0] % ALIGNED == 0) == aligned]
    pts = same if len(same) >= 2 else pts
    xs = [p[0] for p in pts]
    if c < xs[0]:
        return pts[0][1] * c / float(xs[0])
    if c > xs[-1]:
        return pts[-1][1] * c / float(xs[-1])
    return float(np.interp(c, xs, [p[1] for p in pts]))


def layer_ms(entry, cin, cout):
    """Predicted latency of one conv block at (cin, cout) from its table entry."""
    if entry["groups"] > 1 and entry["groups"] == entry["cin"] == entry["cout"]:  # depthwise: one axis
        return staircase(entry["out_grid"], cout) if entry["out_grid"] else float(entry["dense_ms"])
    ms = staircase(entry["out_grid"], cout) if entry["out_grid"] else float(entry["dense_ms"])
    if entry["in_grid"] and cin != entry["cin"]:
        ms *= staircase(entry["in_grid"], cin) / staircase(entry["in_grid"], entry["cin"])
    return ms


def rest_share(table):
    """rest_ms as a share of the dense model's conv blocks: a model whose blocks take S ms runs S * (1 + share)."""
    if table.get("rest_ms") is None:
        raise BundleError("latency table has no rest_ms (the whole model was not timed): profile again")
    dense = float(sum(e["dense_ms"] for e in table["layers"].values()))
    return float(table["rest_ms"]) / dense if dense > 0 else 0.0


def predict(table, layers, where="model"):
    """Whole-network latency of `layers` ([{"name", "cin", "cout"}, ...], e.g. a bundle's layers.json) from
    `table`: {"total_ms", "layers_ms", "rest_ms" (this model's share of the rest), "per_layer"}. A conv the table
    does not know is an error (the table belongs to another architecture); a table layer absent from `layers`
    (a removed block) costs 0."""
    share = rest_share(table)
    per = {}
    for layer in layers:
        entry = table["layers"].get(layer["name"])
        if entry is None:
            raise BundleError("{}: conv {} is not in the latency table (profiled for another architecture); "
                              "profile the dense bundle of this model".format(where, layer["name"]))
        if layer["cin"] > entry["cin"] or layer["cout"] > entry["cout"]:
            raise BundleError("{}: conv {} has {} -> {} channels, wider than the table's {} -> {}".format(
                where, layer["name"], layer["cin"], layer["cout"], entry["cin"], entry["cout"]))
        per[layer["name"]] = layer_ms(entry, layer["cin"], layer["cout"])
    total = float(sum(per.values()))
    return {"total_ms": total * (1.0 + share), "layers_ms": total, "rest_ms": total * share, "per_layer": per}


# ---- driving it from a bundle (edgeprune bench --profile-layers) ------------------------------------------------

LAYERS_HINT = "re-export the bundle with this edgeprune (edgeprune export writes layers.json)"


def bundle_layers(manifest):
    from .bundle import extra_file
    return read_layers(extra_file(manifest, "layers", hint=LAYERS_HINT))


def whole_model_sampler(det, clock="wall", warmup=3):
    """n -> n latency samples (ms) of the bundle's model with the backend that runs it: TensorRT's compute phase
    (CUDA events, as the layer timer reads), else the `clock` time of one inference call."""
    tick = CLOCKS[clock]
    shape = [d if d > 0 else 1 for d in det.manifest["model"]["input_shape"]]
    x = np.random.RandomState(0).rand(*shape).astype(np.float32)
    for _ in range(warmup):
        det.infer(x)

    def sample(n):
        det.infer(x)  # untimed: the first call after the block sessions ran finds cold caches
        times = []
        for _ in range(n):
            t0 = tick()
            det.infer(x)
            wall = (tick() - t0) * 1e3
            split = det.backend.last_split
            times.append(split["compute"] if split else wall)
        return times
    return sample


def profile_bundle(det, timer, device_profile, min_channels=8, iterations=20, warmup=3, log=None,
                   statistic="median"):
    """The latency table of the bundle `det` runs (a jetson.runtime detector), measured with `timer`."""
    layers = bundle_layers(det.manifest)
    if log:
        log("timing {} conv blocks and the whole model between them".format(len(layers["layers"])))
    return measure_table(layers, timer, device_profile, min_channels=min_channels, iterations=iterations,
                         warmup=warmup, model_sha256=det.manifest["model"]["sha256"], log=log, statistic=statistic,
                         whole_model=whole_model_sampler(det, getattr(timer, "clock", "wall"), warmup))


def add_predictions(report, models, table, table_path):
    """Put the table's prediction beside each measured model of a bench report (models: [(label, detector)])."""
    report["latency_table"] = {"file": str(table_path), "key": table["key"], "ran_on": table.get("ran_on")}
    for entry, (_, det) in zip(report["models"], models):
        try:
            layers = bundle_layers(det.manifest)["layers"]
            pred = predict(table, layers, where=det.manifest["_root"])
        except BundleError as exc:
            entry["predicted"] = {"error": str(exc)}
            continue
        phase = "compute" if "compute" in entry else "infer"
        stat = table.get("statistic", "median")
        measured = entry[phase][stat]
        entry["predicted"] = {
            "ms": pred["total_ms"], "layers_ms": pred["layers_ms"], "rest_ms": pred["rest_ms"],
            "measured_phase": phase, "statistic": stat, "measured_ms": measured,
            "error_pct": 100.0 * (pred["total_ms"] - measured) / measured if measured > 0 else None,
            "key_mismatch": key_mismatches(table, backend=det.backend_name, precision=det.precision,
                                           input_shape=[d if d > 0 else 1 for d in det.input_shape])}
        if table.get("clock") == "cpu":
            entry["predicted"]["key_mismatch"].append("clock cpu (table) != wall (bench)")
    return report


def format_table_summary(table, path):
    k = table["key"]
    lines = ["latency table {} ({} {} {}, batch {}, {}x{}; {} layers in {:.0f} s)".format(
        path, k["device_profile"], k["backend"], k["precision"], k["batch"], k["input_size"][0], k["input_size"][1],
        len(table["layers"]), table["wall_s"]),
        "  whole model {:.3f} ms = conv blocks {:.3f} ms + rest {:.3f} ms ({} of {} iterations)".format(
            table["whole_model_ms"], table["layers_dense_ms"], table["rest_ms"], table["statistic"],
            table["iterations"])]
    load = table["machine"]["before"]["loadavg"]
    if load:
        lines.append("  machine load {} on {} CPUs when it started".format(load, table["machine"]["before"]["cpus"]))
    return "\n".join(lines)
