"""A minimal ONNX writer for one conv block, so the device can time a layer at any width. Python 3.6, numpy only.

The device has no `onnx` package, and shipping one ONNX file per (layer, width) in the bundle would mean
thousands of files. An ONNX model is a protobuf message, and the few messages a conv block needs (ModelProto,
GraphProto, NodeProto, AttributeProto, TensorProto, ValueInfoProto) are written here from their field numbers in
onnx/onnx.proto. Both onnxruntime and TensorRT's ONNX parser read the result; tests check it with
onnx.checker and compare onnxruntime's output with a numpy convolution.
"""
import numpy as np

IR_VERSION = 7   # what opset 13 pairs with; onnxruntime 1.10 (JetPack 4.6's Python 3.6) reads it
OPSET = 13
FLOAT = 1        # TensorProto.DataType.FLOAT
ATTR_INT, ATTR_INTS = 2, 7


def _varint(v):
    v = int(v)
    if v < 0:
        v += 1 << 64  # int64 fields: two's complement, ten bytes
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field, wire):
    return _varint((field << 3) | wire)


def _int(field, v):
    return _key(field, 0) + _varint(v)


def _bytes(field, data):
    if not isinstance(data, bytes):
        data = data.encode("utf-8")
    return _key(field, 2) + _varint(len(data)) + data


def _attr_int(name, v):
    return _bytes(1, name) + _int(3, v) + _int(20, ATTR_INT)


def _attr_ints(name, vs):
    return _bytes(1, name) + b"".join(_int(8, v) for v in vs) + _int(20, ATTR_INTS)


def _node(op, inputs, outputs, name, attrs=()):
    msg = b"".join(_bytes(1, i) for i in inputs) + b"".join(_bytes(2, o) for o in outputs)
    msg += _bytes(3, name) + _bytes(4, op)
    return msg + b"".join(_bytes(5, a) for a in attrs)


def _tensor(name, array):
    a = np.ascontiguousarray(array, dtype="<f4")
    return b"".join(_int(1, d) for d in a.shape) + _int(2, FLOAT) + _bytes(8, name) + _bytes(9, a.tobytes())


def _value_info(name, shape):
    dims = b"".join(_bytes(1, _int(1, d)) for d in shape)             # TensorShapeProto.dim.dim_value
    tensor_type = _int(1, FLOAT) + _bytes(2, dims)                      # TypeProto.Tensor
    return _bytes(1, name) + _bytes(2, _bytes(1, tensor_type))          # ValueInfoProto.type.tensor_type


def conv_out_size(size, kernel, stride, pad, dilation=1):
    return (int(size) + 2 * int(pad) - int(dilation) * (int(kernel) - 1) - 1) // int(stride) + 1


def conv_block_model(batch, cin, cout, hw, kernel, stride=1, pad=None, groups=1, dilation=1, act="silu",
                     seed=0):
    """Serialized ONNX of one conv block: Conv(+bias) [-> SiLU as Sigmoid*Mul, the form torch exports].
    Inputs "x" [batch, cin, H, W], output "y". BatchNorm is folded into the conv (as TensorRT and onnxsim do),
    so the block is what runs on the target. Random weights: timing does not depend on their values."""
    if pad is None:
        pad = dilation * (kernel - 1) // 2
    if cin % groups or cout % groups:
        raise ValueError("channels {} -> {} are not divisible by groups {}".format(cin, cout, groups))
    h, w = int(hw[0]), int(hw[1])
    ho, wo = conv_out_size(h, kernel, stride, pad, dilation), conv_out_size(w, kernel, stride, pad, dilation)
    rng = np.random.RandomState(seed)
    weight = rng.standard_normal((cout, cin // groups, kernel, kernel)).astype(np.float32)
    weight *= np.float32(1.0 / np.sqrt(cin // groups * kernel * kernel))
    bias = rng.standard_normal(cout).astype(np.float32) * np.float32(0.1)
    attrs = [_attr_ints("kernel_shape", [kernel, kernel]), _attr_ints("strides", [stride, stride]),
             _attr_ints("pads", [pad, pad, pad, pad]), _attr_ints("dilations", [dilation, dilation]),
             _attr_int("group", groups)]
    conv_out = "c" if act == "silu" else "y"
    nodes = [_node("Conv", ["x", "w", "b"], [conv_out], "conv", attrs)]
    if act == "silu":
        nodes += [_node("Sigmoid", ["c"], ["s"], "sigmoid"), _node("Mul", ["c", "s"], ["y"], "mul")]
    elif act is not None:
        raise ValueError("act must be 'silu' or None, got {!r}".format(act))
    graph = b"".join(_bytes(1, n) for n in nodes) + _bytes(2, "conv_block")
    graph += _bytes(5, _tensor("w", weight)) + _bytes(5, _tensor("b", bias))
    graph += _bytes(11, _value_info("x", [batch, cin, h, w])) + _bytes(12, _value_info("y", [batch, cout, ho, wo]))
    opset = _bytes(1, "") + _int(2, OPSET)
    return _int(1, IR_VERSION) + _bytes(2, "edgeprune") + _bytes(7, graph) + _bytes(8, opset)
