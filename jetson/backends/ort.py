"""ONNX Runtime backend (CPU or CUDA execution provider): the portable fallback and the tested backend.
Python 3.6 (onnxruntime 1.10) and newer."""
import os
import warnings

import numpy as np

from edgeprune.errors import DeviceError

from . import Backend

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def choose_providers(available, device="host", want_gpu=True):
    """CUDA first when present (and wanted), CPU always last."""
    order = []
    if want_gpu and "CUDAExecutionProvider" in available:
        order.append("CUDAExecutionProvider")
    order.append("CPUExecutionProvider")
    return order


class OrtBackend(Backend):
    name = "onnxruntime"

    def __init__(self, model_path, device="host", precision="fp32", threads=None, providers=None,
                 output_names=None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise DeviceError("onnxruntime is not installed: pip install onnxruntime")
        self.model_path = str(model_path)
        self.precision = precision
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = providers or choose_providers(ort.get_available_providers(), device)
        try:
            self.session = ort.InferenceSession(self.model_path, sess_options=opts, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NotImplemented types
            text = str(exc)
            hint = ""
            if "EfficientNMS_TRT" in text or "TRT" in text:
                hint = "; this bundle has a TensorRT-only NMS plugin: run it with --backend tensorrt or re-export without --nms-plugin"
            raise DeviceError("{}: onnxruntime cannot load the model ({}){}".format(self.model_path, text.splitlines()[0]
                                                                                    if text else type(exc).__name__, hint))
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise DeviceError("{}: expected one input, the model has {}".format(self.model_path, len(inputs)))
        self.input_name = inputs[0].name
        self.input_dtype = _DTYPES.get(inputs[0].type, np.float32)
        b = inputs[0].shape[0]
        self.batch = b if isinstance(b, int) and b > 0 else None
        self.output_names = list(output_names) if output_names else [o.name for o in self.session.get_outputs()]
        self.provider = self.session.get_providers()[0]
        # ORT runs on this machine whatever --device says; say where it really ran
        where = "GPU" if self.provider == "CUDAExecutionProvider" else "CPU"
        self.description = "onnxruntime {} {} on host {} ({}, {})".format(ort.__version__, self.provider, where,
                                                                          precision, os.path.basename(self.model_path))

    def infer(self, batch):
        x = np.ascontiguousarray(batch, dtype=self.input_dtype)
        try:
            outs = self.session.run(self.output_names, {self.input_name: x})
        except Exception as exc:
            raise DeviceError("{}: inference failed on input {} {}: {}".format(self.model_path, x.shape, x.dtype, exc))
        return [np.asarray(o, dtype=np.float32) if o.dtype == np.float16 else o for o in outs]

    def close(self):
        self.session = None


def ort_precision(requested, has_int8_model):
    """ORT runs fp32, or int8 through the bundle's QDQ model; fp16 falls back to fp32 with a warning."""
    if requested == "int8":
        if has_int8_model:
            return "int8"
        warnings.warn("int8 asked but the bundle has no model.int8.onnx (edgeprune export --int8); running fp32")
        return "fp32"
    if requested == "fp16":
        warnings.warn("onnxruntime runs this model in fp32 (fp16 needs TensorRT); running fp32")
        return "fp32"
    return "fp32"
