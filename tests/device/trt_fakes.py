"""Version-exact stand-ins for TensorRT's Python API (8.0.1, 8.2.1, 8.5.2, 8.6.1, 10.3.0) and for cuda-python's
runtime API, so the device-side TensorRT code runs in tests without TensorRT or a GPU. Python 3.6, numpy only.

`make_trt(version, cudart)` returns a new `tensorrt` module object; a new one stands for a new process (its
plugin registry starts empty). Its classes expose exactly the Python names of that version's bindings (NAMES,
read from NVIDIA/TensorRT python/src at tags 8.0.1, 8.2.1, 8.5.2, v8.6.1, v10.3.0) and their instances have
__slots__, so using a name the version lacks raises AttributeError as the pybind11 objects do; a name that
exists but is not modelled here raises NotImplementedError when called. Behaviour taken from NVIDIA's sources:
- plugins: only init_libnvinfer_plugins fills the registry; the 8.x ONNX parser calls it itself, the 10.x one
  does not. Parsing an ONNX that uses EfficientNMS_TRT, or deserializing a plan that does, fails without it.
- nptype: 8.0.1-8.5.2 build their table with `np.bool`, which numpy 1.24-1.26 do not have (2.x re-added it).
- calibrator wrapper: get_batch is called from noexcept C++: an exception aborts the process on 8.0/8.2
  (FakeAbort here), from 8.4 it is printed and calibration ends. 8.0.1 reads the read_calibration_cache
  result after dropping its reference (UseAfterFree here when nothing else holds it; kept from 8.2.1).
- builder: a dynamic input needs an optimization profile; INT8 calibration of a dynamic input needs a
  calibration profile; each get_batch must point at a device buffer holding the calibration shape's volume,
  which is read from it (images_seen) - as TensorRT does, whatever batch the calibrator says it has.
- runtime: a DLA plan runs on runtime.DLA_core (core 0 when it was not set).
The "network" is not parsed from the ONNX: it is make_trt's `network` (input name and shape, output names
and dtypes); the fake engine's output j is (j + 2) * input, reshaped to (N, C*H*W, 1). The ONNX bytes only
decide plugins (b"EfficientNMS_TRT") and parse errors (b"FakeUnsupportedOp", at node 7).
"""
import ctypes
import enum
import json
import sys
import types

import numpy as np

VERSIONS = ("8.0.1.6", "8.2.1.8", "8.5.2.2", "8.6.1.6", "10.3.0.30")
PLUGINS = ("EfficientNMS_TRT", "BatchedNMSDynamic_TRT")
PLAN_MAGIC = b"FAKETRTPLAN\n"


class FakeAbort(BaseException):
    """What the real process does instead: std::terminate (an exception escaped a noexcept function)."""


class UseAfterFree(BaseException):
    """TensorRT 8.0.1 read freed memory (the calibration cache bytes lost their last reference)."""


# Python names of each class, per version (from NVIDIA/TensorRT python/src/infer/pyCore.cpp and
# python/src/parsers/pyOnnx.cpp at the release tags; dunders left out).
NAMES = {
    "8.0.1": {
        "Builder": (
            "create_network max_batch_size platform_has_tf32 platform_has_fast_fp16 platform_has_fast_int8 "
            "max_DLA_batch_size num_DLA_cores gpu_allocator create_optimization_profile error_recorder "
            "create_builder_config build_engine build_serialized_network is_network_supported"
        ),
        "IBuilderConfig": (
            "min_timing_iterations avg_timing_iterations int8_calibrator engine_capability max_workspace_size flags "
            "default_device_type DLA_core clear_flag set_flag get_flag quantization_flags clear_quantization_flag "
            "set_quantization_flag get_quantization_flag reset profile_stream add_optimization_profile "
            "set_calibration_profile get_calibration_profile num_optimization_profiles set_device_type "
            "get_device_type is_device_type_set reset_device_type can_run_on_DLA profiling_verbosity "
            "algorithm_selector set_tactic_sources get_tactic_sources create_timing_cache set_timing_cache "
            "get_timing_cache"
        ),
        "ICudaEngine": (
            "num_bindings get_binding_name get_binding_index binding_is_input get_binding_shape get_binding_dtype "
            "has_implicit_batch_dimension max_batch_size num_layers serialize create_execution_context get_location "
            "create_execution_context_without_device_memory device_memory_size refittable name "
            "num_optimization_profiles engine_capability get_profile_shape get_profile_shape_input is_shape_binding "
            "is_execution_binding get_binding_bytes_per_component get_binding_components_per_element "
            "get_binding_format get_binding_format_desc get_binding_vectorized_dim error_recorder tactic_sources"
        ),
        "IExecutionContext": (
            "execute execute_async execute_v2 execute_async_v2 debug_sync profiler engine name device_memory "
            "active_optimization_profile get_strides set_binding_shape get_binding_shape set_shape_input get_shape "
            "all_binding_shapes_specified all_shape_inputs_specified set_optimization_profile_async error_recorder"
        ),
        "IOptimizationProfile": (
            "set_shape get_shape set_shape_input get_shape_input extra_memory_target"
        ),
        "OnnxParser": (
            "parse parse_with_weight_descriptors parse_from_file supports_operator supports_model num_errors "
            "get_error clear_errors"
        ),
        "ParserError": (
            "code desc file line func node get_nv_onnx_parser_version"
        ),
        "Runtime": (
            "deserialize_cuda_engine DLA_core num_DLA_cores gpu_allocator error_recorder"
        ),
    },
    "8.2.1": {
        "Builder": (
            "create_network max_batch_size platform_has_tf32 platform_has_fast_fp16 platform_has_fast_int8 "
            "max_DLA_batch_size num_DLA_cores gpu_allocator create_optimization_profile error_recorder "
            "create_builder_config build_engine build_serialized_network is_network_supported logger reset"
        ),
        "IBuilderConfig": (
            "min_timing_iterations avg_timing_iterations int8_calibrator engine_capability max_workspace_size flags "
            "default_device_type DLA_core clear_flag set_flag get_flag quantization_flags clear_quantization_flag "
            "set_quantization_flag get_quantization_flag reset profile_stream add_optimization_profile "
            "set_calibration_profile get_calibration_profile num_optimization_profiles set_device_type "
            "get_device_type is_device_type_set reset_device_type can_run_on_DLA profiling_verbosity "
            "algorithm_selector set_tactic_sources get_tactic_sources create_timing_cache set_timing_cache "
            "get_timing_cache"
        ),
        "ICudaEngine": (
            "num_bindings get_binding_name get_binding_index binding_is_input get_binding_shape get_binding_dtype "
            "has_implicit_batch_dimension max_batch_size num_layers serialize create_execution_context get_location "
            "create_execution_context_without_device_memory device_memory_size refittable name "
            "num_optimization_profiles engine_capability get_profile_shape get_profile_shape_input is_shape_binding "
            "is_execution_binding get_binding_bytes_per_component get_binding_components_per_element "
            "get_binding_format get_binding_format_desc get_binding_vectorized_dim error_recorder tactic_sources "
            "profiling_verbosity create_engine_inspector"
        ),
        "IExecutionContext": (
            "execute execute_async execute_v2 execute_async_v2 debug_sync profiler engine name device_memory "
            "active_optimization_profile get_strides set_binding_shape get_binding_shape set_shape_input get_shape "
            "all_binding_shapes_specified all_shape_inputs_specified set_optimization_profile_async error_recorder "
            "enqueue_emits_profile report_to_profiler"
        ),
        "IOptimizationProfile": (
            "set_shape get_shape set_shape_input get_shape_input extra_memory_target"
        ),
        "OnnxParser": (
            "parse parse_with_weight_descriptors parse_from_file supports_operator supports_model num_errors "
            "get_error clear_errors"
        ),
        "ParserError": (
            "code desc file line func node get_nv_onnx_parser_version"
        ),
        "Runtime": (
            "deserialize_cuda_engine DLA_core num_DLA_cores gpu_allocator error_recorder logger"
        ),
    },
    "8.5.2": {
        "Builder": (
            "create_network max_batch_size platform_has_tf32 platform_has_fast_fp16 platform_has_fast_int8 "
            "max_DLA_batch_size num_DLA_cores gpu_allocator create_optimization_profile error_recorder "
            "create_builder_config build_engine build_serialized_network is_network_supported logger max_threads "
            "reset"
        ),
        "IBuilderConfig": (
            "min_timing_iterations avg_timing_iterations int8_calibrator engine_capability max_workspace_size "
            "set_memory_pool_limit get_memory_pool_limit flags default_device_type DLA_core clear_flag set_flag "
            "get_flag quantization_flags clear_quantization_flag set_quantization_flag get_quantization_flag reset "
            "profile_stream add_optimization_profile set_calibration_profile get_calibration_profile "
            "num_optimization_profiles set_device_type get_device_type is_device_type_set reset_device_type "
            "can_run_on_DLA profiling_verbosity algorithm_selector set_tactic_sources get_tactic_sources "
            "create_timing_cache set_timing_cache get_timing_cache set_preview_feature get_preview_feature"
        ),
        "ICudaEngine": (
            "num_bindings get_binding_name get_binding_index binding_is_input get_binding_shape get_binding_dtype "
            "has_implicit_batch_dimension max_batch_size num_layers serialize create_execution_context get_location "
            "create_execution_context_without_device_memory device_memory_size refittable name "
            "num_optimization_profiles engine_capability get_profile_shape get_profile_shape_input is_shape_binding "
            "is_execution_binding get_binding_bytes_per_component get_binding_components_per_element "
            "get_binding_format get_binding_format_desc get_binding_vectorized_dim num_io_tensors get_tensor_name "
            "get_tensor_mode is_shape_inference_io get_tensor_shape get_tensor_dtype get_tensor_location "
            "get_tensor_bytes_per_component get_tensor_components_per_element get_tensor_format "
            "get_tensor_format_desc get_tensor_vectorized_dim get_tensor_profile_shape error_recorder tactic_sources "
            "profiling_verbosity create_engine_inspector"
        ),
        "IExecutionContext": (
            "execute execute_async execute_v2 execute_async_v2 debug_sync profiler engine name device_memory "
            "active_optimization_profile get_strides set_binding_shape get_binding_shape set_shape_input get_shape "
            "get_tensor_strides set_input_shape get_tensor_shape set_tensor_address get_tensor_address "
            "set_input_consumed_event get_input_consumed_event set_output_allocator get_output_allocator "
            "get_max_output_size temporary_allocator infer_shapes execute_async_v3 all_binding_shapes_specified "
            "all_shape_inputs_specified set_optimization_profile_async error_recorder enqueue_emits_profile "
            "report_to_profiler persistent_cache_limit nvtx_verbosity"
        ),
        "IOptimizationProfile": (
            "set_shape get_shape set_shape_input get_shape_input extra_memory_target"
        ),
        "OnnxParser": (
            "parse parse_with_weight_descriptors parse_from_file supports_operator supports_model num_errors "
            "get_error clear_errors"
        ),
        "ParserError": (
            "code desc file line func node get_nv_onnx_parser_version"
        ),
        "Runtime": (
            "deserialize_cuda_engine DLA_core num_DLA_cores gpu_allocator error_recorder logger max_threads"
        ),
    },
    "8.6.1": {
        "Builder": (
            "create_network max_batch_size platform_has_tf32 platform_has_fast_fp16 platform_has_fast_int8 "
            "max_DLA_batch_size num_DLA_cores gpu_allocator create_optimization_profile error_recorder "
            "create_builder_config build_engine build_serialized_network is_network_supported logger max_threads "
            "reset get_plugin_registry"
        ),
        "IBuilderConfig": (
            "min_timing_iterations avg_timing_iterations int8_calibrator engine_capability max_workspace_size "
            "set_memory_pool_limit get_memory_pool_limit flags default_device_type DLA_core clear_flag set_flag "
            "get_flag quantization_flags clear_quantization_flag set_quantization_flag get_quantization_flag reset "
            "profile_stream add_optimization_profile set_calibration_profile get_calibration_profile "
            "num_optimization_profiles set_device_type get_device_type is_device_type_set reset_device_type "
            "can_run_on_DLA profiling_verbosity algorithm_selector set_tactic_sources get_tactic_sources "
            "create_timing_cache set_timing_cache get_timing_cache set_preview_feature get_preview_feature "
            "builder_optimization_level hardware_compatibility_level plugins_to_serialize max_aux_streams"
        ),
        "ICudaEngine": (
            "num_bindings get_binding_name get_binding_index binding_is_input get_binding_shape get_binding_dtype "
            "has_implicit_batch_dimension max_batch_size num_layers serialize create_execution_context get_location "
            "create_execution_context_without_device_memory device_memory_size refittable name "
            "num_optimization_profiles engine_capability get_profile_shape get_profile_shape_input is_shape_binding "
            "is_execution_binding get_binding_bytes_per_component get_binding_components_per_element "
            "get_binding_format get_binding_format_desc get_binding_vectorized_dim num_io_tensors get_tensor_name "
            "get_tensor_mode is_shape_inference_io get_tensor_shape get_tensor_dtype get_tensor_location "
            "get_tensor_bytes_per_component get_tensor_components_per_element get_tensor_format "
            "get_tensor_format_desc get_tensor_vectorized_dim get_tensor_profile_shape error_recorder tactic_sources "
            "profiling_verbosity create_engine_inspector hardware_compatibility_level num_aux_streams"
        ),
        "IExecutionContext": (
            "execute execute_async execute_v2 execute_async_v2 debug_sync profiler engine name device_memory "
            "active_optimization_profile get_strides set_binding_shape get_binding_shape set_shape_input get_shape "
            "get_tensor_strides set_input_shape get_tensor_shape set_tensor_address get_tensor_address "
            "set_input_consumed_event get_input_consumed_event set_output_allocator get_output_allocator "
            "get_max_output_size temporary_allocator infer_shapes execute_async_v3 all_binding_shapes_specified "
            "all_shape_inputs_specified set_optimization_profile_async error_recorder enqueue_emits_profile "
            "report_to_profiler persistent_cache_limit nvtx_verbosity set_aux_streams"
        ),
        "IOptimizationProfile": (
            "set_shape get_shape set_shape_input get_shape_input extra_memory_target"
        ),
        "OnnxParser": (
            "parse parse_with_weight_descriptors parse_from_file supports_operator supports_model num_errors "
            "get_error clear_errors flags clear_flag set_flag get_flag get_used_vc_plugin_libraries"
        ),
        "ParserError": (
            "code desc file line func node get_nv_onnx_parser_version"
        ),
        "Runtime": (
            "deserialize_cuda_engine DLA_core num_DLA_cores gpu_allocator error_recorder logger max_threads "
            "temporary_directory tempfile_control_flags get_plugin_registry load_runtime engine_host_code_allowed"
        ),
    },
    "10.3.0": {
        "Builder": (
            "create_network platform_has_tf32 platform_has_fast_fp16 platform_has_fast_int8 max_DLA_batch_size "
            "num_DLA_cores gpu_allocator create_optimization_profile error_recorder create_builder_config "
            "build_serialized_network is_network_supported logger max_threads reset get_plugin_registry"
        ),
        "IBuilderConfig": (
            "avg_timing_iterations int8_calibrator engine_capability set_memory_pool_limit get_memory_pool_limit "
            "flags default_device_type DLA_core clear_flag set_flag get_flag quantization_flags "
            "clear_quantization_flag set_quantization_flag get_quantization_flag reset profile_stream "
            "add_optimization_profile set_calibration_profile get_calibration_profile num_optimization_profiles "
            "set_device_type get_device_type is_device_type_set reset_device_type can_run_on_DLA profiling_verbosity "
            "algorithm_selector set_tactic_sources get_tactic_sources create_timing_cache set_timing_cache "
            "get_timing_cache set_preview_feature get_preview_feature builder_optimization_level "
            "hardware_compatibility_level runtime_platform plugins_to_serialize max_aux_streams progress_monitor"
        ),
        "ICudaEngine": (
            "has_implicit_batch_dimension num_layers serialize create_serialization_config serialize_with_config "
            "create_execution_context create_execution_context_without_device_memory "
            "get_device_memory_size_for_profile get_device_memory_size_for_profile_v2 device_memory_size "
            "device_memory_size_v2 refittable name num_optimization_profiles engine_capability num_io_tensors "
            "get_tensor_name get_tensor_mode is_shape_inference_io get_tensor_shape get_tensor_dtype "
            "get_tensor_location get_tensor_bytes_per_component get_tensor_components_per_element get_tensor_format "
            "get_tensor_format_desc get_tensor_vectorized_dim get_tensor_profile_shape get_tensor_profile_values "
            "error_recorder tactic_sources profiling_verbosity create_engine_inspector hardware_compatibility_level "
            "num_aux_streams weight_streaming_budget weight_streaming_budget_v2 minimum_weight_streaming_budget "
            "streamable_weights_size get_weight_streaming_automatic_budget weight_streaming_scratch_memory_size "
            "is_debug_tensor"
        ),
        "IExecutionContext": (
            "execute_v2 debug_sync profiler engine name device_memory set_device_memory "
            "update_device_memory_size_for_shapes active_optimization_profile get_tensor_strides set_input_shape "
            "get_tensor_shape set_tensor_address get_tensor_address set_input_consumed_event get_input_consumed_event "
            "set_output_allocator get_output_allocator get_max_output_size temporary_allocator infer_shapes "
            "execute_async_v3 all_binding_shapes_specified all_shape_inputs_specified set_optimization_profile_async "
            "error_recorder enqueue_emits_profile report_to_profiler persistent_cache_limit nvtx_verbosity "
            "set_aux_streams set_debug_listener get_debug_listener set_tensor_debug_state get_debug_state "
            "set_all_tensors_debug_state"
        ),
        "IOptimizationProfile": (
            "set_shape get_shape set_shape_input get_shape_input extra_memory_target"
        ),
        "OnnxParser": (
            "parse parse_with_weight_descriptors parse_from_file supports_operator supports_model supports_model_v2 "
            "num_subgraphs is_subgraph_supported get_subgraph_nodes num_errors get_error clear_errors flags "
            "clear_flag set_flag get_flag get_layer_output_tensor get_used_vc_plugin_libraries"
        ),
        "ParserError": (
            "code desc file line func node node_name node_operator local_function_stack local_function_stack_size"
        ),
        "Runtime": (
            "deserialize_cuda_engine DLA_core num_DLA_cores gpu_allocator error_recorder logger max_threads "
            "temporary_directory tempfile_control_flags get_plugin_registry load_runtime engine_host_code_allowed"
        ),
    },
}

def _key(version):
    return ".".join(str(version).split(".")[:3])


def _vtuple(version):
    return tuple(int(p) for p in str(version).split(".")[:2])


class _Enum(object):
    """A pybind11 enum member: hashable, int(), .name."""
    __slots__ = ("name", "value")

    def __init__(self, name, value):
        self.name, self.value = name, value

    def __int__(self):
        return self.value

    def __repr__(self):
        return "<{}: {}>".format(self.name, self.value)


def _enum(name, members):
    return type(name, (object,), dict((m, _Enum(m, i)) for i, m in enumerate(members)))


class _NumpyAs(object):
    """numpy as version `version` shows itself to `np.<name>` lookups: 1.24 <= v < 2.0 has no `bool`."""

    def __init__(self, version):
        self.version = _vtuple(version)

    def __getattr__(self, name):
        if name == "bool" and (1, 24) <= self.version < (2, 0):
            raise AttributeError("module 'numpy' has no attribute 'bool'")
        return getattr(np, name)


def _unmodelled(cls, name):
    def call(self, *args, **kwargs):
        raise NotImplementedError("fake tensorrt: {}.{} is not modelled".format(cls, name))
    return call


def _exact(impl, version, state):
    """impl's behaviour under exactly the names `version` has, with __slots__."""
    ns = {"__slots__": ("_s",), "__module__": "tensorrt", "__init__": impl.__init__, "_t": state}
    for name in NAMES[_key(version)][impl.__name__].split():
        ns[name] = impl.__dict__[name] if name in impl.__dict__ else _unmodelled(impl.__name__, name)
    ns.update((k, v) for k, v in impl.__dict__.items() if k.startswith("_f_"))  # the fake's own helpers
    return type(impl.__name__, (object,), ns)


def _volume(shape):
    return int(np.prod([int(d) for d in shape]))


class _Network(object):
    def __init__(self, flags):
        self.flags = flags
        self.inputs = []
        self.outputs = []
        self.plugins = []


class _TimingCache(object):
    def __init__(self, blob):
        self.blob = bytes(blob)

    def serialize(self):
        return b"fake-timing-cache"


def _prop(key):
    def get(self):
        return self._s[key]

    def put(self, value):
        self._t.calls.append(("set", key, value))
        self._s[key] = value
    return property(get, put)


class IOptimizationProfile(object):
    def __init__(self):
        self._s = {}

    def set_shape(self, input, min, opt, max):  # noqa: A002 - TensorRT's keyword names
        shapes = [tuple(int(d) for d in s) for s in (min, opt, max)]
        if not all(a <= b <= c for a, b, c in zip(*shapes)):
            raise ValueError("fake tensorrt: profile needs min <= opt <= max, got {}".format(shapes))
        self._s[input] = shapes

    def get_shape(self, input):  # noqa: A002
        return self._s[input]


class IBuilderConfig(object):
    def __init__(self):
        self._s = {"flags": set(), "profiles": [], "calibration_profile": None, "int8_calibrator": None,
                   "DLA_core": -1, "default_device_type": self._t.trt.DeviceType.GPU, "max_workspace_size": 0,
                   "timing_cache": None}

    int8_calibrator = _prop("int8_calibrator")
    max_workspace_size = _prop("max_workspace_size")
    DLA_core = _prop("DLA_core")
    default_device_type = _prop("default_device_type")

    def set_flag(self, flag):
        self._t.calls.append(("flag", flag.name))
        self._s["flags"].add(flag.name)

    def get_flag(self, flag):
        return flag.name in self._s["flags"]

    def set_memory_pool_limit(self, pool, pool_size):
        self._t.calls.append(("memory_pool", pool.name, pool_size))

    def add_optimization_profile(self, profile):
        self._s["profiles"].append(profile)
        self._t.calls.append(("profile", dict(profile._s)))
        return len(self._s["profiles"]) - 1

    def set_calibration_profile(self, profile):
        self._s["calibration_profile"] = profile
        self._t.calls.append(("calibration_profile", dict(profile._s)))
        return True

    def get_calibration_profile(self):
        return self._s["calibration_profile"]

    def create_timing_cache(self, serialized_timing_cache):
        self._t.calls.append(("timing_cache_in", len(serialized_timing_cache)))
        return _TimingCache(serialized_timing_cache)

    def set_timing_cache(self, cache, ignore_mismatch):
        self._s["timing_cache"] = cache
        return True

    def get_timing_cache(self):
        return self._s["timing_cache"]


class Builder(object):
    def __init__(self, logger):
        self._s = {"logger": logger}

    platform_has_fast_fp16 = property(lambda self: True)
    platform_has_fast_int8 = property(lambda self: True)

    def create_network(self, flags=0):
        self._t.calls.append(("network_flags", flags))
        return _Network(flags)

    def create_builder_config(self):
        return self._t.trt.IBuilderConfig()

    def create_optimization_profile(self):
        return self._t.trt.IOptimizationProfile()

    def build_serialized_network(self, network, config):
        return self._t.build(network, config)


class ParserError(object):
    def __init__(self, node, name, desc):
        self._s = {"node": node, "name": name, "desc": desc}

    def node(self):
        return self._s["node"]

    def node_name(self):
        return self._s["name"]

    def desc(self):
        return self._s["desc"]

    def code(self):
        return 8  # ErrorCode.UNSUPPORTED_NODE


class OnnxParser(object):
    def __init__(self, network, logger):
        self._s = {"network": network, "errors": []}
        if self._t.v < (10, 0):  # the 8.x parser registers the plugins itself (onnx-tensorrt's createParser)
            self._t.trt.init_libnvinfer_plugins(logger, "")

    num_errors = property(lambda self: len(self._s["errors"]))

    def get_error(self, index):
        return self._s["errors"][index]

    def parse(self, model, path=None):
        net, spec = self._s["network"], self._t.network
        blob = bytes(model)
        if b"FakeUnsupportedOp" in blob:
            self._s["errors"].append(self._t.trt.ParserError(7, "/model.24/Foo", "No importer registered for op: "
                                                                                 "FakeUnsupportedOp"))
            return False
        for plugin in PLUGINS:
            if plugin.encode() in blob:
                if plugin not in self._t.registry:
                    self._s["errors"].append(self._t.trt.ParserError(
                        3, "/nms", "Plugin not found, are the plugin name, version, and namespace correct? "
                                   "({})".format(plugin)))
                    return False
                net.plugins.append(plugin)
        net.inputs = [(spec["input"][0], [int(d) for d in spec["input"][1]])]
        net.outputs = list(spec["outputs"])
        return True


class Runtime(object):
    def __init__(self, logger):
        self._s = {"logger": logger, "DLA_core": -1}

    DLA_core = _prop("DLA_core")

    def deserialize_cuda_engine(self, serialized_engine):
        blob = bytes(serialized_engine)
        t = self._t
        if not blob.startswith(PLAN_MAGIC):
            t.log.append("ERROR: not a serialized engine")
            return None
        plan = json.loads(blob[len(PLAN_MAGIC):].decode("utf-8"))
        if plan["version"] != t.version:
            t.log.append("ERROR: plan built by TensorRT {}, this is {}".format(plan["version"], t.version))
            return None
        missing = [p for p in plan["plugins"] if p not in t.registry]
        if missing:
            t.log.append("ERROR: getPluginCreator could not find plugin {}".format(missing[0]))
            return None
        if plan["dla_core"] is not None:
            plan["dla_core_run"] = max(0, self._s["DLA_core"])
        return t.trt.ICudaEngine(plan)


class ICudaEngine(object):
    def __init__(self, plan):
        self._s = plan

    def _f_io(self):
        name, shape = self._s["input"]
        batch = shape[0]
        io = [(name, tuple(shape), "FLOAT", True)]
        for out, dtype in self._s["outputs"]:
            io.append((out, (batch, _volume(shape[1:]), 1), dtype, False))
        return io

    def _f_index(self, binding):
        if isinstance(binding, int):
            return binding
        return [n for n, _, _, _ in self._f_io()].index(binding)

    def _f_dtype(self, dtype):
        return getattr(self._t.trt.DataType, dtype)

    num_bindings = property(lambda self: len(self._f_io()))
    num_io_tensors = num_bindings

    def get_binding_name(self, index):
        return self._f_io()[index][0]

    def get_binding_index(self, name):
        return self._f_index(name)

    def binding_is_input(self, index):
        return self._f_io()[self._f_index(index)][3]

    def get_binding_shape(self, index):
        return self._f_io()[self._f_index(index)][1]

    def get_binding_dtype(self, index):
        return self._f_dtype(self._f_io()[self._f_index(index)][2])

    def get_profile_shape(self, profile_index, binding):
        return self._f_profile(self._f_index(binding), profile_index)

    def _f_profile(self, index, profile_index):
        if index != 0 or profile_index != 0 or self._s["profile"] is None:
            raise RuntimeError("fake tensorrt: no profile shape for binding {} profile {}".format(index,
                                                                                              profile_index))
        return [tuple(s) for s in self._s["profile"]]

    def get_tensor_name(self, index):
        return self._f_io()[index][0]

    def get_tensor_mode(self, name):
        mode = self._t.trt.TensorIOMode
        return mode.INPUT if self._f_io()[self._f_index(name)][3] else mode.OUTPUT

    def get_tensor_shape(self, name):
        return self._f_io()[self._f_index(name)][1]

    def get_tensor_dtype(self, name):
        return self._f_dtype(self._f_io()[self._f_index(name)][2])

    def get_tensor_profile_shape(self, name, profile_index):
        return self._f_profile(self._f_index(name), profile_index)

    def create_execution_context(self):
        return self._t.trt.IExecutionContext(self)


class IExecutionContext(object):
    def __init__(self, engine):
        shape = engine._s["input"][1]
        self._s = {"engine": engine, "batch": shape[0] if shape[0] > 0 else None, "addr": {}}

    def _f_set_batch(self, shape):
        eng = self._s["engine"]
        static = tuple(eng._s["input"][1])
        shape = tuple(int(d) for d in shape)
        if static[0] > 0:
            return shape == static
        lo, _, hi = eng._s["profile"]
        if len(shape) != len(static) or not all(a <= d <= b for a, d, b in zip(lo, shape, hi)):
            return False
        self._s["batch"] = shape[0]
        return True

    def _f_shape(self, index):
        shape = self._s["engine"]._f_io()[index][1]
        return (self._s["batch"] if self._s["batch"] is not None else -1,) + tuple(shape[1:])

    def set_binding_shape(self, binding, shape):
        return binding == 0 and self._f_set_batch(shape)

    def get_binding_shape(self, binding):
        return self._f_shape(binding)

    def set_input_shape(self, name, shape):
        return self._s["engine"]._f_index(name) == 0 and self._f_set_batch(shape)

    def get_tensor_shape(self, name):
        return self._f_shape(self._s["engine"]._f_index(name))

    def set_tensor_address(self, name, memory):
        self._s["addr"][name] = int(memory)
        return True

    def _f_run(self, ptrs, stream_handle):
        cudart = self._t.cudart
        if self._s["batch"] is None or int(stream_handle) not in cudart.streams:
            return False
        io = self._s["engine"]._f_io()
        shape = self._f_shape(0)
        x = cudart.device_array(ptrs[0], shape, np.float32)
        for j, (_, _, dtype, _) in enumerate(io[1:]):
            y = (x.reshape(shape[0], -1, 1) * (j + 2)).astype(np.float16 if dtype == "HALF" else np.float32)
            cudart.device_array(ptrs[j + 1], y.shape, y.dtype)[...] = y
        return True

    def execute_async_v2(self, bindings, stream_handle):
        return self._f_run([int(b) for b in bindings], stream_handle)

    def execute_async_v3(self, stream_handle):
        names = [n for n, _, _, _ in self._s["engine"]._f_io()]
        if any(n not in self._s["addr"] for n in names):
            return False
        return self._f_run([self._s["addr"][n] for n in names], stream_handle)


class _CalibratorBase(object):
    """trt.IInt8EntropyCalibrator2 / IInt8MinMaxCalibrator: subclassed in Python, base __init__ required."""

    def __init__(self):
        self._base_initialised = True


class _State(object):
    """One fake `tensorrt` module's process state and its builder."""

    def __init__(self, version, cudart, network):
        self.version = version
        self.v = _vtuple(version)
        self.cudart = cudart
        self.network = network
        self.registry = set()
        self.calls = []
        self.log = []
        self.images_seen = []  # calibration images the builder read from device memory, in order
        self.trt = None

    # ---- the C++ calibrator trampolines -------------------------------------------------------------
    def call_get_batch(self, cal, names):
        try:
            return cal.get_batch(names)
        except Exception as exc:
            if self.v < (8, 4):
                raise FakeAbort("terminate called after an exception in noexcept getBatch: {!r}".format(exc))
            sys.stderr.write("[ERROR] Exception caught in get_batch(): {}\n".format(exc))
            return None

    def call_read_cache(self, cal):
        cache = cal.read_calibration_cache()
        if cache is None:
            return None
        if self.v[:2] == (8, 0) and sys.getrefcount(cache) <= 2:  # this local and getrefcount's argument
            raise UseAfterFree("TensorRT 8.0.1 read the calibration cache after its bytes were freed")
        return bytes(memoryview(cache))

    # ---- IBuilder::buildSerializedNetwork ----------------------------------------------------------
    def build(self, network, config):
        (name, shape), = network.inputs
        dynamic = shape[0] < 0
        s = config._s
        profile = None
        if dynamic:
            if not s["profiles"]:
                self.log.append("ERROR: Network has dynamic or shape inputs, but no optimization profile")
                return None
            profile = s["profiles"][0]._s[name]
        calibrated = None
        cal = s["int8_calibrator"]
        if "INT8" in s["flags"] and cal is not None:
            if not getattr(cal, "_base_initialised", False):
                raise TypeError("pybind11: calibrator base class __init__ was not called")
            if dynamic:
                if s["calibration_profile"] is None:
                    self.log.append("ERROR: Calibration profile must be set when calibrating a network with "
                                    "runtime dimensions")
                    return None
                calib_shape = s["calibration_profile"]._s[name][1]  # MIN and MAX are overwritten by OPT
            else:
                calib_shape = tuple(shape)
            calibrated = self.calibrate(cal, name, calib_shape)
        self.calls.append(("build", sorted(s["flags"])))
        dla = s["DLA_core"] if s["default_device_type"] is self.trt.DeviceType.DLA else None
        plan = {"version": self.version, "input": [name, list(shape)], "outputs": network.outputs,
                "plugins": network.plugins, "dla_core": dla, "flags": sorted(s["flags"]),
                "profile": [list(p) for p in profile] if profile else None, "calibrated_images": calibrated}
        return PLAN_MAGIC + json.dumps(plan).encode("utf-8")

    def calibrate(self, cal, name, shape):
        cal.get_batch_size()  # asked once, as TensorRT does; the engine shape decides what is read
        if self.call_read_cache(cal) is not None:
            return 0
        n = 0
        while True:
            ptrs = self.call_get_batch(cal, [name])
            if not ptrs:
                break
            batch = self.cudart.device_array(int(ptrs[0]), shape, np.float32)  # raises when the buffer is small
            self.images_seen.extend(np.array(img) for img in batch)
            n += int(shape[0])
        cal.write_calibration_cache(memoryview(b"TRT-fake-EntropyCalibration2\n" + name.encode() + b": 3c010a14\n"))
        return n


def make_trt(version, cudart, network=None, numpy_version=None):
    """A fresh fake `tensorrt` module for `version` (one of VERSIONS, or its first three fields).
    cudart: a FakeCudart (the engine and the calibration read its device memory). network: {"input": (name,
    shape), "outputs": [(name, "FLOAT"|"HALF"), ...]}. numpy_version: the numpy that trt.nptype sees."""
    version = [v for v in VERSIONS if _key(v) == _key(version)][0]
    vt = _vtuple(version)
    state = _State(version, cudart, network or {"input": ("images", [1, 3, 8, 8]), "outputs": [("output", "FLOAT")]})
    t = types.ModuleType("tensorrt")
    state.trt = t
    t.__version__ = version
    t._fake = state
    severities = ("INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE")
    t.Logger = type("Logger", (object,), dict([("__slots__", ("min_severity",)), ("__init__", _logger_init)]
                                              + [(n, _Enum(n, i)) for i, n in enumerate(severities)]))

    def init_libnvinfer_plugins(logger, namespace):
        state.registry.update(PLUGINS)
        return True
    t.init_libnvinfer_plugins = init_libnvinfer_plugins
    t.get_plugin_registry = lambda: types.SimpleNamespace(plugin_creator_list=sorted(state.registry))
    dtypes = ["FLOAT", "HALF", "INT8", "INT32", "BOOL"]
    if vt >= (8, 5):
        dtypes.append("UINT8")
    if vt >= (8, 6):
        dtypes.append("FP8")
    if vt >= (10, 0):
        dtypes += ["BF16", "INT64", "INT4"]
    t.DataType = _enum("DataType", dtypes)
    aliases = {"float32": "FLOAT", "float16": "HALF", "int8": "INT8", "int32": "INT32", "bool": "BOOL",
               "uint8": "UINT8", "int64": "INT64"}
    for alias, member in aliases.items():
        if hasattr(t.DataType, member):
            setattr(t, alias, getattr(t.DataType, member))
    numpy_seen = _NumpyAs(numpy_version or np.__version__)

    def nptype(trt_type):
        bool_name = "bool" if vt < (8, 6) else "bool_"  # np.bool until 8.5.2 (8.5.3 fixed it)
        mapping = dict((getattr(t.DataType, m), getattr(numpy_seen, n)) for m, n in (
            ("FLOAT", "float32"), ("HALF", "float16"), ("INT8", "int8"), ("INT32", "int32"), ("BOOL", bool_name),
            ("UINT8", "uint8"), ("INT64", "int64")) if hasattr(t.DataType, m))
        if trt_type in mapping:
            return mapping[trt_type]
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
    t.nptype = nptype
    if vt >= (8, 5):
        t.TensorIOMode = _enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
    if vt >= (8, 4):
        t.MemoryPoolType = _enum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM", "DLA_LOCAL_DRAM",
                                                    "DLA_GLOBAL_DRAM"])
    flags = ["FP16", "INT8", "DEBUG", "GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "TF32"]
    t.BuilderFlag = _enum("BuilderFlag", flags + (["STRICT_TYPES"] if vt < (10, 0) else []))
    t.DeviceType = _enum("DeviceType", ["GPU", "DLA"])
    t.NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag", ["EXPLICIT_BATCH"] + (
        ["STRONGLY_TYPED"] if vt >= (10, 0) else ["EXPLICIT_PRECISION"]))
    t.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (_CalibratorBase,), {})
    t.IInt8MinMaxCalibrator = type("IInt8MinMaxCalibrator", (_CalibratorBase,), {})
    for impl in (Builder, IBuilderConfig, IOptimizationProfile, OnnxParser, ParserError, Runtime, ICudaEngine,
                 IExecutionContext):
        setattr(t, impl.__name__, _exact(impl, version, state))
    return t


def _logger_init(self, min_severity=None):
    self.min_severity = min_severity


# ---- cuda-python's runtime API (cuda.bindings.runtime / cuda.cudart) over host memory ------------------
class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorInvalidResourceHandle = 400


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class _Handle(object):
    """cudaStream_t / cudaEvent_t: int() gives the address; freeing it is the caller's job."""
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __int__(self):
        return self.value


class FakeCudart(object):
    """The cuda-python runtime calls jetson.backends.cudamem makes, with "device" memory in host numpy arrays
    (device pointers are their addresses, copies are real memmoves) and counts of events created/destroyed."""
    OK = cudaError_t.cudaSuccess
    BAD = cudaError_t.cudaErrorInvalidValue
    cudaError_t = cudaError_t
    cudaMemcpyKind = cudaMemcpyKind

    def __init__(self, compute_capability=(8, 7)):
        self.cc = compute_capability
        self.allocs = {}
        self.streams = set()
        self.events = set()
        self.events_created = 0
        self.events_destroyed = 0
        self._next = 1

    def _handle(self):
        self._next += 1
        return _Handle(0x7f0000 + self._next)

    @property
    def live_events(self):
        return len(self.events)

    def device_array(self, ptr, shape, dtype):
        """A numpy view of `shape` at device pointer `ptr`; ValueError unless one allocation holds it."""
        nbytes = _volume(shape) * np.dtype(dtype).itemsize
        for base, buf in self.allocs.items():
            if base <= ptr and ptr + nbytes <= base + buf.nbytes:
                return buf[ptr - base:ptr - base + nbytes].view(dtype).reshape(shape)
        raise ValueError("fake CUDA: {} bytes at 0x{:x} are not inside one device allocation".format(nbytes, ptr))

    def cudaMalloc(self, size):
        buf = np.zeros(max(int(size), 1), np.uint8)
        self.allocs[buf.ctypes.data] = buf
        return self.OK, buf.ctypes.data

    def cudaFree(self, ptr):
        return (self.OK,) if self.allocs.pop(int(ptr), None) is not None else (self.BAD,)

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):
        if int(stream) not in self.streams:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        device = dst if kind == cudaMemcpyKind.cudaMemcpyHostToDevice else src
        try:
            self.device_array(int(device), (int(count),), np.uint8)
        except ValueError:
            return (self.BAD,)
        ctypes.memmove(int(dst), int(src), int(count))
        return (self.OK,)

    def cudaStreamCreate(self):
        h = self._handle()
        self.streams.add(int(h))
        return self.OK, h

    def cudaStreamDestroy(self, stream):
        if int(stream) not in self.streams:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        self.streams.discard(int(stream))
        return (self.OK,)

    def cudaStreamSynchronize(self, stream):
        return (self.OK,) if int(stream) in self.streams else (cudaError_t.cudaErrorInvalidResourceHandle,)

    def cudaEventCreate(self):
        h = self._handle()
        self.events.add(int(h))
        self.events_created += 1
        return self.OK, h

    def cudaEventDestroy(self, event):
        if int(event) not in self.events:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        self.events.discard(int(event))
        self.events_destroyed += 1
        return (self.OK,)

    def cudaEventRecord(self, event, stream):
        ok = int(event) in self.events and int(stream) in self.streams
        return (self.OK,) if ok else (cudaError_t.cudaErrorInvalidResourceHandle,)

    def cudaEventSynchronize(self, event):
        return (self.OK,) if int(event) in self.events else (cudaError_t.cudaErrorInvalidResourceHandle,)

    def cudaEventElapsedTime(self, start, end):
        if int(start) not in self.events or int(end) not in self.events:
            return cudaError_t.cudaErrorInvalidResourceHandle, 0.0
        return self.OK, 0.25

    def cudaGetDeviceProperties(self, device):
        return self.OK, types.SimpleNamespace(major=self.cc[0], minor=self.cc[1], name="fake GPU")
