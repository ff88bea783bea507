"""ONNX export, graph verification, ORT parity, TensorRT NMS head, INT8 and the deploy bundle.

Host side (torch). The device side reads the bundle this package writes (docs/CONTRACTS.md)."""
