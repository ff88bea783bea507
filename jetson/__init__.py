"""Device side of edgeprune (Python >= 3.6, numpy core, no torch): pre/post-processing, backends
(TensorRT, ONNX Runtime), engine build and cache, detect, bench, serve."""
