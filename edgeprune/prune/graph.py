"""Channel dependency graph of any nn.Module, built from a torch.fx trace of a copy of the model.

Every output channel of a conv/linear (and every element of a small parameter or buffer the forward
reads directly) gets a global id. Each traced tensor carries a *layout*: an int array with the tensor's
number of dims whose entries are channel ids; along a dim where the ids do not change it has size 1
(so an NCHW feature map's layout has shape (1, C, 1, 1), a channels-last one (1, 1, 1, C)). Ops are
handled by what they do to those ids, not by name of the model:

- elementwise ops (add, mul, gating by an attention map, a parameter added or multiplied) broadcast the
  operands' layouts and tie the ids that meet at one output element (union-find);
- reshape / view / flatten / permute / transpose / squeeze move the ids with the data; a channel dim
  split into a literal size and an inferred one (a channel shuffle) ties the ids across the literal dim;
- cat concatenates layouts, chunk ties its pieces position by position, slicing / split with literal
  sizes, normalising or reducing across channels and a broadcast channel fix the ids involved;
- a grouped conv ties each group's input and output channels (it is pruned in whole groups).

The merged id sets are the *channel classes*. A class is removed as a whole, so slicing every producer
(its output rows), consumer (its input columns) and tied parameter by the kept classes leaves a
consistent, smaller network. Classes that reach a graph output, the graph input or an op the graph
does not understand (with skip_unsupported) are *fixed*: never pruned.

A *gate* is where a class can be silenced: the BatchNorm right after a conv (also a fused module that
calls F.batch_norm), or, for a producer without one, the producer's own weight rows.
"""
from __future__ import annotations

import builtins
import copy
import dis
import inspect
import operator
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx._symbolic_trace import _maybe_revert_all_patches
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import PruneError

# Elementwise unary ops: they keep every dim as it is (checked against the traced shapes).
_PASS_MODULES = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.LeakyReLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh,
                 nn.GELU, nn.Mish, nn.ELU, nn.SELU, nn.CELU, nn.Hardtanh, nn.Softplus, nn.Identity,
                 nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
# Ops that change only the spatial dims (the channel dims must come out unchanged).
_SPATIAL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                    nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample, nn.UpsamplingNearest2d,
                    nn.UpsamplingBilinear2d, nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d,
                    nn.ReplicationPad2d)
_PASS_FUNCTIONS = {F.relu, torch.relu, F.relu_, F.relu6, F.silu, F.hardswish, F.hardsigmoid, F.leaky_relu,
                   F.gelu, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.mish, F.elu, F.selu, F.celu,
                   F.hardtanh, F.softplus, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
                   torch.clone, torch.abs, torch.neg, torch.exp, torch.sqrt, torch.rsqrt, torch.clamp,
                   torch.clip, operator.neg, operator.pow, torch.pow, torch.square, F.hardtanh}
try:  # fx-wrapped (a leaf call in traces): scales whole samples, so it keeps every channel dim
    from torchvision.ops import stochastic_depth as _stochastic_depth
    _PASS_FUNCTIONS.add(_stochastic_depth)
except ImportError:
    pass
_SPATIAL_FUNCTIONS = {F.interpolate, F.upsample, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d,
                      F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                      F.adaptive_avg_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.pad}
_PASS_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "contiguous", "clone", "float", "half",
                 "double", "to", "type_as", "detach", "abs", "neg", "exp", "sqrt", "rsqrt", "clamp", "clamp_",
                 "clip", "pow", "__pow__", "square", "hardtanh_", "requires_grad_"}
# binary elementwise ops, by how a zeroed (removed) channel passes through them
_ADD = {operator.add, operator.iadd, operator.sub, operator.isub, torch.add, torch.sub, torch.subtract,
        torch.maximum, torch.minimum, "add", "add_", "sub", "sub_", "__add__", "__iadd__", "__radd__",
        "__sub__", "__rsub__", "maximum", "minimum"}
_MUL = {operator.mul, operator.imul, torch.mul, torch.multiply, "mul", "mul_", "__mul__", "__imul__",
        "__rmul__"}
_DIV = {operator.truediv, operator.itruediv, torch.div, torch.true_divide, "div", "div_", "__truediv__",
        "__itruediv__"}
_CAT = {torch.cat, torch.concat, torch.concatenate}
_RESHAPE = {"view", "reshape", torch.reshape}
_FLATTEN = {"flatten", torch.flatten}
_PERMUTE = {"permute", torch.permute}
_TRANSPOSE = {"transpose", "swapaxes", torch.transpose, torch.swapaxes}
_SQUEEZE = {"squeeze", "unsqueeze", torch.squeeze, torch.unsqueeze, "unflatten", torch.unflatten}
_REDUCE = {"mean", "sum", "amax", "amin", "std", "var", "prod", "logsumexp", torch.mean, torch.sum, torch.amax,
           torch.amin, torch.std, torch.var, torch.prod, torch.logsumexp}
_SOFTMAX = {"softmax", "log_softmax", F.softmax, F.log_softmax, torch.softmax, torch.log_softmax}
_META = {"size", "dim", "numel", "type", "get_device", "new_zeros", "new_ones", "new_empty", "new_full",
         "new_tensor", torch.zeros_like, torch.ones_like, torch.empty_like, torch.full_like}
_META_ATTRS = {"shape", "ndim", "dtype", "device", "is_cuda", "requires_grad", "data"}
_PARAM_IDS_MAX = 1 << 18   # parameters/buffers read directly by forward() get channel ids up to this size


@dataclass
class Junction:
    """Channel classes tied by residual adds (adds that share classes are one junction)."""
    id: str
    classes: np.ndarray                  # root class id per junction channel, in the first add's order
    add_nodes: list[str]
    producers: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)


@dataclass
class Gate:
    """Where a producer's channels can be silenced (masked) and scored: a BN (gamma/beta) or, for a
    producer without BN, its own weight rows and bias."""
    key: str                     # the name used in keep / importance / ratios.json
    kind: str                    # "bn" or "weight"
    ids: np.ndarray              # channel ids (one per gated channel)
    scale: str                   # dotted path of the tensor whose dim-0 entries scale a channel
    shift: str | None            # dotted path of the per-channel bias (None: no bias)
    producer: str | None         # conv/linear whose output channels this gate silences


@dataclass
class ChannelGraph:
    modules: dict[str, nn.Module]
    origin: list[tuple[str, int]]            # channel id -> (producer module path or label, index)
    root: np.ndarray                         # channel id -> class (union-find root)
    fixed: np.ndarray                        # per channel id: its class is never pruned
    producers: dict[str, np.ndarray]         # conv/linear path -> ids of its output channels
    owner_bn: dict[str, str]                 # BN path -> producer path (conv -> BN, nothing in between)
    bn_layouts: dict[str, np.ndarray]        # every BN path -> ids of its channels
    consumers: dict[str, np.ndarray]         # conv/linear path -> ids of its input channels (columns)
    depthwise: dict[str, np.ndarray]         # depthwise conv path -> ids (in == out)
    grouped: dict[str, tuple[np.ndarray, np.ndarray]]   # grouped conv path -> (input ids, output ids)
    out_shapes: dict[str, tuple[int, ...]]   # conv/linear path -> output shape on the example input
    params: dict[str, np.ndarray]            # dotted tensor path -> ids per element (tensors read directly)
    gates: dict[str, Gate]
    junctions: list[Junction]
    frozen: list[dict[str, Any]]             # ops whose neighbourhood was frozen, with the reason

    def producer_bn(self) -> dict[str, str]:
        return {p: b for b, p in self.owner_bn.items()}

    def tensor(self, dotted: str) -> torch.Tensor:
        mod, _, attr = dotted.rpartition(".")
        return getattr(self.modules[mod], attr)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def new(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, i: int) -> int:
        p = self.parent
        while p[i] != i:
            p[i] = p[p[i]]
            i = p[i]
        return i

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        a, b = np.broadcast_arrays(np.asarray(a), np.asarray(b))
        pairs = np.unique(np.stack([a.reshape(-1), b.reshape(-1)], 1), axis=0) if a.size > 64 else \
            zip(a.reshape(-1).tolist(), b.reshape(-1).tolist())
        for x, y in (pairs.tolist() if isinstance(pairs, np.ndarray) else pairs):
            if x == y:
                continue
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[max(rx, ry)] = min(rx, ry)

    def roots(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


class _Unsupported(Exception):
    pass


@dataclass
class _Opaque:
    """Layout of a non-tensor output (a tuple) of an op the graph does not understand: every piece is
    the one fixed id."""
    id: int


def _canon(a: np.ndarray) -> np.ndarray:
    """Collapse every dim along which the ids do not change to size 1."""
    for d in range(a.ndim):
        if a.shape[d] > 1 and np.array_equal(a, np.broadcast_to(a.take([0], axis=d), a.shape)):
            a = a.take([0], axis=d)
    return np.ascontiguousarray(a)


def _varying(a: np.ndarray) -> list[int]:
    return [d for d in range(a.ndim) if a.shape[d] > 1]


def _shape(node: Any) -> tuple[int, ...] | None:
    if not isinstance(node, fx.Node):
        return None
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _flat_nodes(arg: Any) -> list[fx.Node]:
    if isinstance(arg, fx.Node):
        return [arg]
    if isinstance(arg, (list, tuple)):
        return [n for a in arg for n in _flat_nodes(a)]
    if isinstance(arg, dict):
        return [n for a in arg.values() for n in _flat_nodes(a)]
    return []


def _arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _dims(value: Any, ndim: int) -> tuple[int, ...] | None:
    if value is None:
        return None
    vals = (value,) if isinstance(value, int) else tuple(value)
    return tuple(v % ndim for v in vals)


def module_path(node: fx.Node) -> str:
    """The module a traced op belongs to (its own path for a module call), for error messages."""
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path, cls = list(stack.values())[-1]
        return f"{path} ({getattr(cls, '__name__', cls)})"
    return "<top-level forward>"


def op_name(node: fx.Node) -> str:
    if node.op == "call_method":
        return f".{node.target}()"
    if node.op == "call_module":
        return type(node.graph.owning_module.get_submodule(node.target)).__name__
    return getattr(node.target, "__name__", str(node.target))


class _Builder:
    def __init__(self, model: nn.Module, gm: fx.GraphModule, skip_unsupported: bool):
        self.model = model
        self.gm = gm
        self.skip = skip_unsupported
        self.uf = _UnionFind()
        self.origin: list[tuple[str, int]] = []
        self.fixed_ids: list[np.ndarray] = []
        self.layout: dict[str, Any] = {}
        self.producers: dict[str, np.ndarray] = {}
        self.owner_bn: dict[str, str] = {}
        self.bn_layouts: dict[str, np.ndarray] = {}
        self.bn_tensors: dict[str, tuple[str, str | None]] = {}
        self.consumers: dict[str, np.ndarray] = {}
        self.depthwise: dict[str, np.ndarray] = {}
        self.grouped: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.out_shapes: dict[str, tuple[int, ...]] = {}
        self.params: dict[str, np.ndarray] = {}
        self.add_layouts: list[tuple[str, np.ndarray]] = []
        self.frozen: list[dict[str, Any]] = []

    # -- helpers ---------------------------------------------------------------------------------
    def new_ids(self, label: str, n: int) -> np.ndarray:
        ids = self.uf.new(n)
        self.origin.extend((label, i) for i in range(n))
        return ids

    def lay(self, arg: Any) -> Any:
        if isinstance(arg, fx.Node):
            return self.layout.get(arg.name)
        return None

    def fix(self, ids: Any) -> None:
        flat = self._flat_layouts(ids)
        if flat:
            self.fixed_ids.append(np.concatenate([f.reshape(-1) for f in flat]))

    def fail(self, node: fx.Node, why: str) -> Any:
        where, op = module_path(node), op_name(node)
        if not self.skip:
            raise PruneError(f"module {where}: op {op} (fx node {node.name!r}): {why}. Rewrite that part of "
                             "forward() with supported ops, or pass --skip-unsupported (skip_unsupported=True) "
                             "to keep the channels around it whole")
        self.freeze(node, f"unsupported: {why}")
        return self.fresh_fixed(node)

    def fresh_fixed(self, node: fx.Node) -> Any:
        """One new fixed id for every element of an output the graph cannot relate to its inputs: a
        consumer reads it as fixed columns, an add with it keeps the other operand's channels."""
        ids = self.new_ids(f"untracked:{node.name}", 1)
        self.fixed_ids.append(ids)
        shape = _shape(node)
        return _Opaque(int(ids[0])) if shape is None else ids.reshape((1,) * len(shape))

    def freeze(self, node: fx.Node, reason: str, ids: Any = None) -> None:
        if ids is None:
            ids = [self.lay(n) for n in _flat_nodes((node.args, node.kwargs))]
        flat = [np.asarray(x).reshape(-1) for x in self._flat_layouts(ids)]
        if flat:
            self.fixed_ids.append(np.concatenate(flat))
        self.frozen.append({"node": node.name, "module": module_path(node), "op": op_name(node),
                            "reason": reason, "ids": np.concatenate(flat) if flat else np.zeros(0, np.int64)})

    def _flat_layouts(self, layouts: Any) -> list[np.ndarray]:
        if isinstance(layouts, np.ndarray):
            return [layouts]
        if isinstance(layouts, (list, tuple)):
            return [x for l in layouts for x in self._flat_layouts(l)]
        return []

    def channel_vector(self, node: fx.Node, lay: Any, axis: int, n: int, what: str) -> np.ndarray:
        """The ids along `axis` of an input that a conv/linear/BN reads as its channels."""
        if not isinstance(lay, np.ndarray):
            raise _Unsupported(f"{what} input carries no traced channels")
        axis %= lay.ndim
        others = [d for d in _varying(lay) if d != axis]
        if others:
            # the same column reads different ids at different positions (a class token concatenated
            # before the patches): removing the column removes all of them, so they are tied
            first = lay
            for d in others:
                first = first.take([0], axis=d)
            self.uf.union(lay, first)
            lay = first
        vec = np.broadcast_to(lay.reshape(-1), (n,)) if lay.size == 1 else lay.reshape(-1)
        if len(vec) != n:
            raise _Unsupported(f"{what} expects {n} channels on dim {axis}, traced {len(vec)}")
        return np.ascontiguousarray(vec)

    def merge_repeat(self, table: dict[str, np.ndarray], path: str, ids: np.ndarray) -> np.ndarray:
        """A module called more than once shares its weights: its channels must agree across calls."""
        if path in table:
            if table[path].shape != ids.shape:
                raise _Unsupported(f"module {path!r} is called with {table[path].shape} and {ids.shape} channels")
            self.uf.union(table[path], ids)
            return table[path]
        table[path] = ids
        return ids

    def same_dims(self, node: fx.Node, src: Any) -> Any:
        """Ops that keep every channel dim (elementwise unary, pooling, upsampling)."""
        lay = self.lay(src)
        if not isinstance(lay, np.ndarray):
            return None
        shape, in_shape = _shape(node), _shape(src)
        if shape is None or len(shape) != lay.ndim or any(shape[d] != in_shape[d] for d in _varying(lay)):
            raise _Unsupported(f"expected the channel dims {_varying(lay)} of {in_shape} to stay, got {shape}")
        return lay

    # -- the walk --------------------------------------------------------------------------------
    def run(self) -> None:
        for node in self.gm.graph.nodes:
            try:
                out = self.visit(node)
            except _Unsupported as exc:
                out = self.fail(node, str(exc))
            self.layout[node.name] = out

    def visit(self, node: fx.Node) -> Any:
        if node.op == "placeholder":
            shape = _shape(node)
            if shape is not None and len(shape) >= 2:
                ids = self.new_ids(f"input:{node.name}", shape[1])
                self.fixed_ids.append(ids)
                return ids.reshape((1, -1) + (1,) * (len(shape) - 2))
            return None
        if node.op == "get_attr":
            return self.get_attr(node)
        if node.op == "output":
            self.fix([self.lay(n) for n in _flat_nodes(node.args)])
            return None
        if node.op == "call_module":
            return self.module(node)
        target = node.target
        if node.op == "call_function" and target is builtins.getattr:
            if node.args[1] in _META_ATTRS:
                return None
            raise _Unsupported(f"attribute .{node.args[1]} of a channel tensor")
        return self.op(node, target)

    def get_attr(self, node: fx.Node) -> Any:
        value = self.gm
        for part in str(node.target).split("."):
            value = getattr(value, part, None)
        if not isinstance(value, torch.Tensor) or value.dim() == 0 or value.numel() > _PARAM_IDS_MAX:
            return None
        return self.get_attr_ids(str(node.target), value)

    def module(self, node: fx.Node) -> Any:
        path = node.target
        mod = self.gm.get_submodule(path)
        src = node.args[0] if node.args else None
        lay = self.lay(src)
        if isinstance(mod, nn.modules.conv._ConvNd) and not mod.transposed:
            return self.conv(node, path, mod, lay)
        if isinstance(mod, nn.Linear):
            cols = self.channel_vector(node, lay, -1, mod.in_features, "linear")
            self.out_shapes.setdefault(path, _shape(node))
            self.merge_repeat(self.consumers, path, cols)
            out = self.produce(path, mod.out_features)
            return out.reshape((1,) * (len(_shape(node)) - 1) + (-1,))
        if isinstance(mod, nn.modules.batchnorm._NormBase):
            vec = self.channel_vector(node, lay, 1, mod.num_features, type(mod).__name__)
            if mod.weight is None:
                return lay  # no affine gamma/beta: its channels follow the producers (stats sliced below)
            self.batch_norm(node, path, vec, src, (f"{path}.weight", f"{path}.bias"))
            return lay
        if isinstance(mod, (nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)):
            return self.norm_across(node, src, mod)
        if isinstance(mod, nn.PReLU):
            if mod.num_parameters > 1:
                vec = self.channel_vector(node, lay, 1, mod.num_parameters, "PReLU")
                self.uf.union(self.get_attr_ids(f"{path}.weight", mod.weight.detach()), vec)
            return self.same_dims(node, src)
        if isinstance(mod, _PASS_MODULES) or isinstance(mod, _SPATIAL_MODULES):
            return self.same_dims(node, src)
        if isinstance(mod, nn.Flatten):
            return self.reshape(node, src, None)
        if isinstance(mod, nn.Unflatten):
            return self.reshape(node, src, {mod.dim % len(_shape(node)) + i: s
                                            for i, s in enumerate(mod.unflattened_size)})
        if isinstance(mod, (nn.Softmax, nn.LogSoftmax)):
            return self.softmax(node, src, mod.dim)
        if not any(self.lay(n) is not None for n in _flat_nodes((node.args, node.kwargs))):
            return None
        raise _Unsupported(f"module type {type(mod).__name__} is not supported by the channel graph")

    def get_attr_ids(self, dotted: str, value: torch.Tensor) -> np.ndarray | None:
        path, _, attr = dotted.rpartition(".")
        try:
            owner = self.model.get_submodule(path)
        except AttributeError:
            return None
        if not hasattr(owner, attr) or isinstance(owner, (nn.modules.conv._ConvNd, nn.Linear,
                                                          nn.modules.batchnorm._NormBase)):
            # a constant fx made up (not the model's own), or a tensor sliced with its module
            return None
        if dotted not in self.params:
            self.params[dotted] = self.new_ids(f"param:{dotted}", value.numel()).reshape(value.shape)
        return self.params[dotted]

    def produce(self, path: str, n: int) -> np.ndarray:
        if path not in self.producers:
            self.producers[path] = self.new_ids(path, n)
        return self.producers[path]

    def conv(self, node: fx.Node, path: str, mod: nn.Module, lay: Any) -> Any:
        vec = self.channel_vector(node, lay, 1, mod.in_channels, "conv")
        tail = (1,) * (len(_shape(node)) - 2)
        self.out_shapes.setdefault(path, _shape(node))
        if mod.groups == 1:
            self.merge_repeat(self.consumers, path, vec)
            return self.produce(path, mod.out_channels).reshape((1, -1) + tail)
        if mod.groups == mod.in_channels == mod.out_channels:
            # depthwise: output channel i reads only input channel i, so they live and die together
            return self.merge_repeat(self.depthwise, path, vec).reshape((1, -1) + tail)
        # grouped: output group g reads only input group g; the pair is one unit, pruned whole
        g = mod.groups
        if path in self.grouped:
            self.uf.union(self.grouped[path][0], vec)
            out = self.grouped[path][1]
        else:
            out = self.new_ids(path, mod.out_channels)
            self.grouped[path] = (vec, out)
        ins, outs = vec.reshape(g, -1), out.reshape(g, -1)
        self.uf.union(ins, ins[:, :1])
        self.uf.union(outs, ins[:, :1])
        return out.reshape((1, -1) + tail)

    def batch_norm(self, node: fx.Node, path: str, vec: np.ndarray, src: Any, tensors: tuple[str, str | None]) -> None:
        self.merge_repeat(self.bn_layouts, path, vec)
        self.bn_tensors[path] = tensors
        owner = src.target if isinstance(src, fx.Node) and src.op == "call_module" and (src.target in self.producers or src.target in self.grouped) and len(src.users) == 1 else None
        if owner is not None and path not in self.owner_bn:
            self.owner_bn[path] = owner
        elif path in self.owner_bn and self.owner_bn[path] != owner:
            del self.owner_bn[path]  # shared BN behind different convs: cannot mask one conv's channels

    def functional_batch_norm(self, node: fx.Node) -> Any:
        """F.batch_norm(x, running_mean, running_var, weight, bias, ...) in a fused BN+act module."""
        src = node.args[0]
        lay = self.lay(src)
        tensors = [_arg(node, i, name) for i, name in ((1, "running_mean"), (2, "running_var"),
                                                        (3, "weight"), (4, "bias"))]
        attrs = [t.target if isinstance(t, fx.Node) and t.op == "get_attr" else None for t in tensors]
        if any(t is not None and a is None for t, a in zip(tensors, attrs)) or attrs[2] is None:
            raise _Unsupported("F.batch_norm with statistics or affine tensors that are not module attributes")
        vec = self.channel_vector(node, lay, 1, _shape(src)[1], "F.batch_norm")
        for t in tensors:
            if t is not None and t.target in self.params:
                self.uf.union(self.params[t.target].reshape(-1), vec)
        path = attrs[2].rpartition(".")[0]
        self.batch_norm(node, path, vec, src, (attrs[2], attrs[3]))
        return lay

    def norm_across(self, node: fx.Node, src: Any, mod: Any) -> Any:
        """LayerNorm / GroupNorm: statistics over the normalised dims mix their channels, so ids that vary
        along those dims stay whole; per-channel affine parameters are tied to the channels."""
        lay = self.lay(src)
        if not isinstance(lay, np.ndarray):
            return None
        shape = _shape(src)
        if isinstance(mod, nn.LayerNorm) or mod == "layer_norm":
            nd = len(mod.normalized_shape) if isinstance(mod, nn.LayerNorm) else len(_arg(node, 1, "normalized_shape"))
            dims = list(range(len(shape) - nd, len(shape)))
        else:
            dims = [1]
        if any(d in dims for d in _varying(lay)):
            self.freeze(node, "normalises across channels; its input channels are kept whole", [lay])
        return self.same_dims(node, src)

    def reshape(self, node: fx.Node, src: Any, literal: dict[int, int] | None) -> Any:
        """view/reshape/flatten/unflatten/squeeze/unsqueeze. `literal`: output dims whose size is a
        literal in the code (it will not follow a pruned width)."""
        lay = self.lay(src)
        if not isinstance(lay, np.ndarray):
            return None
        in_shape, shape = _shape(src), _shape(node)
        if in_shape is None or shape is None:
            raise _Unsupported("reshape of a tensor without a traced shape")
        out = _canon(np.broadcast_to(lay, in_shape).reshape(shape))
        fixed_dims = [d for d in _varying(out) if literal and d in literal]
        if fixed_dims:
            free = [d for d in _varying(out) if d not in fixed_dims]
            if len(free) != 1:
                self.freeze(node, f"reshape to literal sizes {[shape[d] for d in fixed_dims]} on channel dims; "
                                  "those channels are kept whole", [lay])
                return out
            # a channel dim split into a literal count and an inferred size (a channel shuffle): pruning
            # shrinks only the inferred dim, so the ids across the literal dims are tied
            first = out
            for d in fixed_dims:
                first = first.take([0], axis=d)
            self.uf.union(out, first)
        return out

    def view_sizes(self, node: fx.Node) -> dict[int, int]:
        sizes = node.args[1:]
        if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
            sizes = sizes[0]
        elif len(sizes) == 1 and isinstance(sizes[0], fx.Node):
            return {}
        if not sizes:
            sizes = node.kwargs.get("shape", node.kwargs.get("size", ()))
        return {i: s for i, s in enumerate(sizes) if isinstance(s, int) and s != -1}

    def elementwise(self, node: fx.Node, operands: list[Any], kind: str) -> Any:
        shape = _shape(node)
        if shape is None:
            return None
        nd = len(shape)
        items = []
        for a in operands:
            lay, sh = self.lay(a), _shape(a)
            if sh is None:
                continue  # a Python scalar
            sh = (1,) * (nd - len(sh)) + tuple(sh)
            if isinstance(lay, np.ndarray):
                lay = lay.reshape((1,) * (nd - lay.ndim) + lay.shape)
            items.append((a, lay, sh))
        tracked = [(a, l, s) for a, l, s in items if isinstance(l, np.ndarray)]
        if not tracked:
            return None
        var = sorted({d for _, l, _ in tracked for d in _varying(l)})
        full, broadcast = [], []
        for a, l, s in tracked:
            (broadcast if any(s[d] == 1 and shape[d] > 1 for d in var) else full).append(l)
        for a, l, s in items:
            if l is None and kind == "add" and any(s[d] == shape[d] > 1 for d in var):
                # a tensor the graph does not track is added on channel dims: a removed channel would
                # not be zero, so the channels stay
                self.freeze(node, "adds an untracked tensor over channels; those channels are kept whole",
                            [x for _, x, _ in tracked])
        if broadcast:
            # a channel broadcast over other channels cannot be removed; in a sum neither can the others
            self.freeze(node, "broadcasts a channel over channels; those channels are kept whole",
                        broadcast + (full if kind == "add" else []))
        if kind == "div" and len(tracked) > 1 and tracked[-1][0] is operands[-1]:
            self.freeze(node, "divides by channels; the divisor's channels are kept whole", [tracked[-1][1]])
        if not full:
            return broadcast[0] if len(broadcast) == 1 else self.fresh_fixed(node)
        out = np.broadcast_to(full[0], np.broadcast_shapes(*(f.shape for f in full)))
        for f in full[1:]:
            self.uf.union(out, f)
        if kind == "add" and len(full) > 1 and len(_varying(out)) == 1:
            self.add_layouts.append((node.name, out.reshape(-1)))
        return _canon(np.ascontiguousarray(out))

    def cat(self, node: fx.Node, tensors: Any, dim: int) -> Any:
        lays = [self.lay(t) for t in tensors]
        if all(l is None for l in lays):
            return None
        shape = _shape(node)
        nd = len(shape)
        dim %= nd
        var = sorted({d for l in lays if isinstance(l, np.ndarray) for d in _varying(l)} | {dim})
        pieces = []
        for t, l in zip(tensors, lays):
            sh = _shape(t)
            if not isinstance(l, np.ndarray):
                l = self.new_ids(f"untracked:{node.name}", sh[dim]).reshape(
                    tuple(sh[dim] if d == dim else 1 for d in range(nd)))
                self.fixed_ids.append(l.reshape(-1))
            pieces.append(np.broadcast_to(l, tuple(sh[d] if d in var else l.shape[d] for d in range(nd))))
        return _canon(np.concatenate(pieces, axis=dim))

    def split_pieces(self, node: fx.Node, src: Any, dim: Any, even: bool, literal: bool) -> Any:
        """chunk / split / tensor_split / unbind: pieces along `dim`."""
        lay = self.lay(src)
        if not isinstance(lay, np.ndarray):
            return None
        metas = node.meta.get("tensor_meta", ())
        dim = (dim or 0) % lay.ndim
        if lay.shape[dim] == 1:
            return [lay.take([0], axis=dim) if len(m.shape) == lay.ndim else lay.reshape(
                lay.shape[:dim] + lay.shape[dim + 1:]) for m in metas]
        sizes = [m.shape[dim] if len(m.shape) == lay.ndim else 1 for m in metas]
        pieces = np.split(lay, np.cumsum(sizes)[:-1], axis=dim)
        if len(metas) and len(metas[0].shape) < lay.ndim:
            pieces = [p.squeeze(dim) for p in pieces]
        if even and not literal and len(set(sizes)) == 1:
            for p in pieces[1:]:
                # after pruning the op splits the kept channels evenly again: piece i's kept positions
                # must match piece 0's, so the pieces' channels are coupled position by position
                self.uf.union(pieces[0], p)
        else:
            self.freeze(node, f"split into literal sizes {sizes} on a channel dim; its input channels are "
                              "kept whole", [lay])
        return [_canon(p) for p in pieces]

    def getitem(self, node: fx.Node) -> Any:
        src, idx = node.args
        lay = self.lay(src)
        if isinstance(lay, _Opaque):
            shape = _shape(node)
            return lay if shape is None else np.full((1,) * len(shape), lay.id, np.int64)
        if isinstance(lay, list):
            if isinstance(idx, int):
                return lay[idx]
            if isinstance(idx, slice):
                return lay[idx]
            raise _Unsupported(f"index {idx!r} into a tuple of channel tensors")
        if not isinstance(lay, np.ndarray):
            return None
        in_shape = _shape(src)
        index = idx if isinstance(idx, tuple) else (idx,)
        if any(isinstance(i, fx.Node) and _shape(i) is not None for i in _flat_nodes(index)) or \
                any(not isinstance(i, (int, slice, type(None), type(Ellipsis), fx.Node)) for i in index):
            raise _Unsupported("indexing a channel tensor with a tensor")
        # resolve to concrete values for the traced shapes (dynamic bounds come from shapes)
        concrete = tuple(self.concrete(i) for i in index)
        full = np.broadcast_to(lay, in_shape)
        out = _canon(np.ascontiguousarray(full[concrete]))
        # which input dims does the index narrow?
        dims, d = [], 0
        n_real = sum(1 for i in concrete if i is not None and i is not Ellipsis)
        for i in concrete:
            if i is Ellipsis:
                d += len(in_shape) - n_real
                continue
            if i is None:
                continue
            if isinstance(i, int) or (isinstance(i, slice) and range(*i.indices(in_shape[d])) != range(in_shape[d])):
                dims.append(d)
            d += 1
        if any(lay.shape[x] > 1 for x in dims):
            self.freeze(node, "slices a channel dim; its channels are kept whole (the bounds would not follow "
                              "a pruned width)", [lay])
        return out

    def concrete(self, value: Any) -> Any:
        if isinstance(value, slice):
            return slice(self.concrete(value.start), self.concrete(value.stop), self.concrete(value.step))
        if isinstance(value, fx.Node):
            v = value.meta.get("concrete")
            if v is None:
                raise _Unsupported("slice bound the shape pass could not evaluate")
            return v
        return value

    def reduce(self, node: fx.Node, src: Any, dims: Any, keepdim: bool) -> Any:
        lay = self.lay(src)
        if not isinstance(lay, np.ndarray):
            return None
        dims = _dims(dims, lay.ndim)
        dims = tuple(range(lay.ndim)) if dims is None or dims == () else dims
        if any(lay.shape[d] > 1 for d in dims):
            self.freeze(node, "reduces across channels; those channels are kept whole", [lay])
        out = lay
        for d in sorted(dims, reverse=True):
            out = out.take([0], axis=d) if keepdim else out.take(0, axis=d)
        return out if out.ndim >= 1 else None

    def softmax(self, node: fx.Node, src: Any, dim: Any, what: str = "softmax") -> Any:
        """An op that keeps the shape but mixes the values along `dim` (softmax, an L2 normalisation)."""
        lay = self.lay(src)
        if isinstance(lay, np.ndarray) and dim is not None and lay.shape[dim % lay.ndim] > 1:
            self.freeze(node, f"{what} across channels; those channels are kept whole", [lay])
        return self.same_dims(node, src)

    def op(self, node: fx.Node, fn: Any) -> Any:
        """call_function and call_method, by what they do to the channel dims."""
        a0 = node.args[0] if node.args else None
        if fn in _META or fn == "dim":
            return None
        if fn is operator.getitem:
            return self.getitem(node)
        if fn is F.batch_norm:
            return self.functional_batch_norm(node)
        if fn in (F.layer_norm, F.group_norm):
            return self.norm_across(node, a0, "layer_norm" if fn is F.layer_norm else "group_norm")
        if fn in _ADD:
            return self.elementwise(node, [a0, _arg(node, 1, "other")], "add")
        if fn in _MUL:
            return self.elementwise(node, [a0, _arg(node, 1, "other")], "mul")
        if fn in _DIV:
            return self.elementwise(node, [a0, _arg(node, 1, "other")], "div")
        if fn is torch.where or fn == "where":
            return self.elementwise(node, [_arg(node, 1, "input"), _arg(node, 2, "other")], "add")
        if fn in _CAT:
            return self.cat(node, _arg(node, 0, "tensors"), _arg(node, 1, "dim", 0))
        if fn in _RESHAPE:
            return self.reshape(node, a0, self.view_sizes(node))
        if fn in _FLATTEN or fn in _SQUEEZE:
            literal = None
            if fn in ("unflatten", torch.unflatten):
                d = _arg(node, 1, "dim") % len(_shape(a0))
                literal = {d + i: s for i, s in enumerate(_arg(node, 2, "sizes")) if isinstance(s, int) and s != -1}
            return self.reshape(node, a0, literal)
        if fn in _PERMUTE or fn in _TRANSPOSE or fn in ("movedim", torch.movedim, "t"):
            return self.permute(node, a0)
        if fn in ("expand", "expand_as"):
            return self.same_dims(node, a0) if isinstance(self.lay(a0), np.ndarray) else None
        if fn in ("chunk", torch.chunk):
            return self.split_pieces(node, a0, _arg(node, 2, "dim", 0), True, False)
        if fn in ("split", torch.split):
            size = _arg(node, 1, "split_size_or_sections", _arg(node, 1, "split_size"))
            return self.split_pieces(node, a0, _arg(node, 2, "dim", 0), not isinstance(size, (list, tuple)),
                                     not isinstance(size, fx.Node))
        if fn in ("tensor_split", torch.tensor_split):
            return self.split_pieces(node, a0, _arg(node, 2, "dim", 0), False, True)
        if fn in ("unbind", torch.unbind):
            return self.split_pieces(node, a0, _arg(node, 1, "dim", 0), False, True)
        if fn in _REDUCE:
            return self.reduce(node, a0, _arg(node, 1, "dim"), bool(_arg(node, 2, "keepdim", False)))
        if fn in _SOFTMAX:
            return self.softmax(node, a0, _arg(node, 1, "dim"))
        if fn is F.normalize:
            return self.softmax(node, a0, _arg(node, 2, "dim", 1), "L2 normalisation (F.normalize)")
        if fn in _PASS_FUNCTIONS or fn in _PASS_METHODS:
            return self.same_dims(node, a0)
        if fn in _SPATIAL_FUNCTIONS:
            return self.same_dims(node, a0)
        if not any(self.lay(n) is not None for n in _flat_nodes((node.args, node.kwargs))):
            return None  # shape arithmetic and other values that carry no channels
        raise _Unsupported("op not supported by the channel graph")

    def permute(self, node: fx.Node, src: Any) -> Any:
        lay = self.lay(src)
        if not isinstance(lay, np.ndarray):
            return None
        fn = node.target
        if fn in _PERMUTE:
            dims = node.args[1:] if len(node.args) > 2 else _arg(node, 1, "dims")
            return np.ascontiguousarray(lay.transpose([d % lay.ndim for d in dims]))
        if fn in ("movedim", torch.movedim):
            return np.moveaxis(lay, _arg(node, 1, "source"), _arg(node, 2, "destination"))
        if fn == "t":
            return lay.T
        return np.swapaxes(lay, _arg(node, 1, "dim0"), _arg(node, 2, "dim1"))

    # -- result ----------------------------------------------------------------------------------
    def finish(self) -> ChannelGraph:
        root = self.uf.roots()
        # a parameter is sliced along one dim: if its classes vary along more, it stays whole
        for dotted, ids in self.params.items():
            if len(_varying(_canon(root[ids]))) > 1 and len(np.unique(root[ids])) < ids.size:
                self.fixed_ids.append(ids.reshape(-1))
        fixed_roots = np.zeros(len(root), bool)
        for ids in self.fixed_ids:
            fixed_roots[root[ids]] = True
        fixed = fixed_roots[root]
        modules = dict(self.model.named_modules())
        frozen = []
        for f in self.frozen:
            classes = set(root[f.pop("ids")].tolist())
            f["layers"] = sorted(p for p, ids in self.producers.items() if classes & set(root[ids].tolist()))
            frozen.append(f)
        gates = {}
        for bn, prod in self.owner_bn.items():
            scale, shift = self.bn_tensors[bn]
            gates[bn] = Gate(bn, "bn", self.bn_layouts[bn], scale, shift, prod)
        gated = set(self.owner_bn.values())
        for path, ids in {**self.producers, **{p: o for p, (_, o) in self.grouped.items()}}.items():
            if path not in gated:
                mod = modules[path]
                gates[path] = Gate(path, "weight", ids, f"{path}.weight",
                                   f"{path}.bias" if getattr(mod, "bias", None) is not None else None, path)
        graph = ChannelGraph(modules=modules, origin=self.origin, root=root, fixed=fixed, producers=self.producers,
                             owner_bn=self.owner_bn, bn_layouts=self.bn_layouts, consumers=self.consumers,
                             depthwise=self.depthwise, grouped=self.grouped, out_shapes=self.out_shapes,
                             params=self.params, gates=gates,
                             junctions=[], frozen=frozen)
        graph.junctions = _junctions(graph, self.add_layouts)
        return graph


def _common_prefix(paths: list[str]) -> str:
    parts = [p.split(".") for p in paths]
    out: list[str] = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        out.append(level[0])
    return ".".join(out) or "model"


def _junctions(graph: ChannelGraph, adds: list[tuple[str, np.ndarray]]) -> list[Junction]:
    groups: list[tuple[set[int], Junction]] = []
    for name, lay in adds:
        classes = graph.root[lay]
        cset = set(classes.tolist())
        hit = [g for g in groups if g[0] & cset]
        if hit:
            hit[0][0].update(cset)
            hit[0][1].add_nodes.append(name)
            for other in hit[1:]:
                hit[0][0].update(other[0])
                hit[0][1].add_nodes.extend(other[1].add_nodes)
                groups.remove(other)
        else:
            groups.append((cset, Junction(id="", classes=classes, add_nodes=[name])))
    out, seen = [], {}
    for cset, j in groups:
        j.producers = sorted(p for p, ids in graph.producers.items() if cset & set(graph.root[ids].tolist()))
        j.consumers = sorted(p for p, ids in {**graph.consumers, **graph.depthwise}.items()
                             if cset & set(graph.root[ids].tolist()))
        base = _common_prefix(j.producers)
        seen[base] = seen.get(base, 0) + 1
        j.id = base if seen[base] == 1 else f"{base}#{seen[base]}"
        out.append(j)
    return out



def partial_producers(graph: ChannelGraph, j: Junction) -> list[str]:
    """Producers of `j` only some of whose output channels are the junction's (a C2f's cv1, whose second
    chunk half alone feeds the residual adds; an attention's qkv conv): they are not 1:1 with its channels."""
    own = set(j.classes.tolist())
    return [p for p in j.producers if not set(graph.root[graph.producers[p]].tolist()) <= own]


_MISSING = object()


class _Proxy(fx.Proxy):
    """A proxy that can get the op's concrete value on the example input (computed on demand, see
    _Tracer.value), so that the tensor rank (`x.ndim`, `x.dim()`, which pruning never changes) is a
    plain int in forward(), and that lets `list(t.chunk(2, 1))` / `a, *b = t.split([..])` trace."""

    def __getattr__(self, k: str) -> Any:
        if k in ("ndim", "dim"):
            value = self.tracer.value(self.node)
            if isinstance(value, torch.Tensor):
                return value.dim() if k == "ndim" else value.dim
        return super().__getattr__(k)

    def _pieces(self) -> int | None:
        n = self.node
        if n.target in ("chunk", torch.chunk) and isinstance(_arg(n, 1, "chunks"), int):
            return _arg(n, 1, "chunks")
        if n.target in ("split", torch.split) and isinstance(_arg(n, 1, "split_size_or_sections"), (list, tuple)):
            return len(_arg(n, 1, "split_size_or_sections"))
        value = self.tracer.value(n)
        return len(value) if isinstance(value, (tuple, list)) else None

    def __len__(self) -> int:
        count = self._pieces()
        return super().__len__() if count is None else count

    def __iter__(self):
        # fx's own rule first (it reads the caller's bytecode): `a, b = proxy` unpacks
        caller = inspect.currentframe().f_back
        insts = list(dis.get_instructions(caller.f_code))
        inst = next((i for i in insts if i.offset == caller.f_lasti), None) if sys.version_info >= (3, 11) \
            else insts[caller.f_lasti // 2]
        count = inst.argval if inst is not None and inst.opname == "UNPACK_SEQUENCE" else self._pieces()
        if count is None:
            return self.tracer.iter(self)
        return iter([self[i] for i in range(count)])


class _Tracer(fx.Tracer):
    """fx tracer that can run the recorded ops on the example input when forward() asks for a rank or
    a piece count (models that never ask pay nothing)."""

    def __init__(self, example: torch.Tensor | None) -> None:
        super().__init__()
        self.example = example
        self.values: dict[fx.Node, Any] = {}

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _Proxy(node, self)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        # every BatchNorm is a leaf, also a subclass defined outside torch.nn (train/global_bn.py swaps the class
        # of a model's BatchNorms for DDP on CPU; the sparsity hook traces that model)
        return isinstance(m, nn.modules.batchnorm._NormBase) or super().is_leaf_module(m, qualname)

    def value(self, node: fx.Node) -> Any:
        """The concrete value of `node`: every node recorded so far is run once, in order."""
        if self.example is None:
            return _MISSING
        for n in self.graph.nodes:
            if n not in self.values:
                self.values[n] = self.evaluate(n)
            if n is node:
                break
        return self.values.get(node, _MISSING)

    def evaluate(self, n: fx.Node) -> Any:
        if n.op == "placeholder":
            return self.example if n is next(iter(self.graph.nodes)) else _MISSING
        missing = []

        def value(a: Any) -> Any:
            v = self.values.get(a, _MISSING)
            if v is _MISSING:
                missing.append(a)
            return v

        a = fx.node.map_arg(n.args, value)
        k = fx.node.map_arg(n.kwargs, value)
        if missing:
            return _MISSING
        try:
            # fx patches Module.__call__/__getattr__ while tracing; the concrete run must not be recorded
            with _maybe_revert_all_patches(), torch.no_grad():
                if n.op == "call_function":
                    return n.target(*a, **k)
                if n.op == "call_method":
                    return getattr(a[0], n.target)(*a[1:], **k)
                if n.op == "call_module":
                    return self.root.get_submodule(n.target)(*a, **k)
                if n.op == "get_attr":
                    v = self.root
                    for part in n.target.split("."):
                        v = getattr(v, part)
                    return v
        except Exception:  # the value only helps tracing; the op itself is judged later
            return _MISSING
        return _MISSING


class _ConcreteShapeProp(ShapeProp):
    """ShapeProp that also keeps the concrete value of small non-tensor results (shape arithmetic
    used as slice bounds)."""

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        if isinstance(result, (int, torch.SymInt)):
            n.meta["concrete"] = int(result)
        return result


def trace(model: nn.Module, example_input: torch.Tensor | None = None) -> fx.GraphModule:
    """Symbolic trace of `model` in its current train/eval mode (our Detector's train forward is plain
    conv/bn/act/cat/add/upsample/pool; its eval forward adds the decoding). With `example_input` the
    ops also run on it while tracing (this runs the model: pass a copy)."""
    tracer = _Tracer(example_input)
    try:
        graph = tracer.trace(model)
        return fx.GraphModule(tracer.root, graph, type(model).__name__)
    except Exception as exc:  # fx raises many types (TraceError, TypeError on data-dependent control flow)
        stack = list(getattr(tracer, "module_stack", {}).values())
        where = f"module {stack[-1][0]} ({getattr(stack[-1][1], '__name__', stack[-1][1])})" \
            if stack and stack[-1][0] else f"the forward() of {type(model).__name__}"
        raise PruneError(f"torch.fx cannot trace {where}: {type(exc).__name__}: {str(exc).splitlines()[0]}. "
                         "The pruner needs a forward() without data-dependent Python control flow "
                         "(branching on tensor values or on shapes other than the rank)") from None


def build_graph(model: nn.Module, example_input: torch.Tensor, skip_unsupported: bool = False) -> ChannelGraph:
    """Trace `model` and build its channel dependency graph; `model` itself is never run or changed.

    The trace (in the model's train mode) and the shape pass run on a deep copy: a module whose forward
    fixes a training flag at trace time (a fused BN+act calling F.batch_norm) would otherwise update its
    running statistics. The shape pass runs in eval mode with the RNG state restored. The copy shares the
    parameters (no forward writes them; copying them was a quarter of the build's CPU time on the s detector)."""
    try:
        twin = copy.deepcopy(model, {id(p): p for p in model.parameters()})
    except Exception as exc:
        raise PruneError(f"the pruner traces a copy of the model, but {type(model).__name__} cannot be "
                         f"deep-copied: {type(exc).__name__}: {exc}") from None
    rng = torch.random.get_rng_state()
    try:
        gm = trace(twin, example_input)
    finally:
        torch.random.set_rng_state(rng)
    twin.eval()
    rng = torch.random.get_rng_state()
    try:
        with torch.no_grad():
            _ConcreteShapeProp(gm).propagate(example_input)
    except Exception as exc:
        raise PruneError(f"the traced {type(model).__name__} does not run on an input of shape "
                         f"{tuple(example_input.shape)}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    finally:
        torch.random.set_rng_state(rng)
    builder = _Builder(model, gm, skip_unsupported)
    builder.run()
    return builder.finish()
