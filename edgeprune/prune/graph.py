"""Channel dependency graph of any nn.Module, built from a torch.fx trace (train mode).

Every output channel of a conv/linear gets a global id. Each traced tensor carries a *layout*: the
array of channel ids along its dim 1 (concat concatenates layouts, flatten repeats them, chunk slices
them). Ops that force two channels to be kept or removed together (residual add, a depthwise conv's
in/out pairs, the pieces of a chunk, a module called twice) merge ids in a union-find; the merged
sets are the *channel classes*. A class is removed as a whole, so slicing every producer (its output
rows) and consumer (its input columns) by the kept classes leaves a consistent, smaller network.
Classes that reach a graph output, the graph input, a split with literal sizes or an op the graph
cannot handle (with skip_unsupported) are *fixed*: never pruned.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import PruneError

# Ops that keep dim 1 as it is (checked against the traced shapes, so a wrong entry cannot pass silently).
_PASS_MODULES = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.LeakyReLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh,
                 nn.GELU, nn.Mish, nn.ELU, nn.Identity, nn.Dropout, nn.Dropout2d, nn.MaxPool1d, nn.MaxPool2d,
                 nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
                 nn.Upsample)
_PASS_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.silu, F.hardswish, F.hardsigmoid, F.leaky_relu, F.gelu,
                   torch.sigmoid, F.sigmoid, torch.tanh, F.mish, F.elu, F.dropout, F.dropout2d, F.interpolate,
                   F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d,
                   F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch.clone}
_PASS_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone", "float", "to"}
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_", "__add__", "__iadd__"}
_CAT_FUNCTIONS = {torch.cat, torch.concat, torch.concatenate}
_META_METHODS = {"size", "dim"}  # return plain values, not channels


@dataclass
class Junction:
    """Channel classes tied by residual adds (adds that share classes are one junction)."""
    id: str
    classes: np.ndarray                  # root class id per junction channel, in the first add's order
    add_nodes: list[str]
    producers: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)


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
    junctions: list[Junction]
    frozen: list[dict[str, Any]]             # ops whose neighbourhood was frozen, with the reason

    def producer_bn(self) -> dict[str, str]:
        return {p: b for b, p in self.owner_bn.items()}


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
        for x, y in zip(a.tolist(), b.tolist()):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[max(rx, ry)] = min(rx, ry)

    def roots(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


def _shape(node: fx.Node) -> tuple[int, ...] | None:
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
        self.consumers: dict[str, np.ndarray] = {}
        self.depthwise: dict[str, np.ndarray] = {}
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

    def fail(self, node: fx.Node, why: str) -> Any:
        target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
        if not self.skip:
            raise PruneError(f"fx node {node.name!r} (op={node.op}, target={target}): {why}. Rewrite that part of "
                             "forward() with supported ops, or pass skip_unsupported=True (CLI --skip-unsupported) "
                             "to freeze the layers around it")
        self.freeze(node, f"unsupported: {why}", target)
        shape = _shape(node)
        if shape is not None and len(shape) >= 2:
            ids = self.new_ids(f"unsupported:{node.name}", shape[1])
            self.fixed_ids.append(ids)
            return ids
        return None

    def freeze(self, node: fx.Node, reason: str, target: Any = None) -> None:
        ids = [np.asarray(x) for x in self._flat_layouts([self.lay(n) for n in _flat_nodes((node.args, node.kwargs))])]
        if ids:
            self.fixed_ids.append(np.concatenate(ids))
        self.frozen.append({"node": node.name, "op": node.op, "target": str(target if target is not None else node.target),
                            "reason": reason, "ids": np.concatenate(ids) if ids else np.zeros(0, np.int64)})

    def _flat_layouts(self, layouts: Any) -> list[np.ndarray]:
        if isinstance(layouts, np.ndarray):
            return [layouts]
        if isinstance(layouts, (list, tuple)):
            return [x for l in layouts for x in self._flat_layouts(l)]
        return []

    def passthrough(self, node: fx.Node, src: Any) -> Any:
        lay = self.lay(src)
        if lay is None:
            return None
        shape = _shape(node)
        if shape is None or len(shape) < 2 or shape[1] != len(lay):
            return self.fail(node, f"expected the channel dim (1) to stay {len(lay)}, got shape {shape}")
        return lay

    def merge_repeat(self, table: dict[str, np.ndarray], path: str, ids: np.ndarray) -> np.ndarray:
        """A module called more than once shares its weights: its channels must agree across calls."""
        if path in table:
            if len(table[path]) != len(ids):
                raise PruneError(f"module {path!r} is called with {len(table[path])} and {len(ids)} channels")
            self.uf.union(table[path], ids)
            return table[path]
        table[path] = ids
        return ids

    # -- ops -------------------------------------------------------------------------------------
    def run(self) -> None:
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                shape = _shape(node)
                if shape is not None and len(shape) >= 2:
                    ids = self.new_ids(f"input:{node.name}", shape[1])
                    self.fixed_ids.append(ids)
                    self.layout[node.name] = ids
            elif node.op == "get_attr":
                self.layout[node.name] = None
            elif node.op == "output":
                outs = self._flat_layouts([self.lay(n) for n in _flat_nodes(node.args)])
                if outs:
                    self.fixed_ids.append(np.concatenate(outs))
            elif node.op == "call_module":
                self.layout[node.name] = self.module(node)
            elif node.op == "call_function":
                self.layout[node.name] = self.function(node, node.target)
            elif node.op == "call_method":
                self.layout[node.name] = self.method(node, node.target)

    def module(self, node: fx.Node) -> Any:
        path = node.target
        mod = self.gm.get_submodule(path)
        src = node.args[0] if node.args else None
        lay = self.lay(src)
        if isinstance(mod, nn.modules.conv._ConvNd) and not mod.transposed:
            return self.conv(node, path, mod, lay)
        if isinstance(mod, nn.Linear):
            if lay is None or len(lay) != mod.in_features:
                return self.fail(node, f"linear input has {None if lay is None else len(lay)} traced features, "
                                       f"expected {mod.in_features}")
            self.merge_repeat(self.consumers, path, lay)
            return self.produce(path, mod.out_features)
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            out = self.passthrough(node, src)
            if out is None:
                return None
            self.merge_repeat(self.bn_layouts, path, out)
            owner = self.single_user_producer(src)
            if owner is not None and len(src.users) == 1 and path not in self.owner_bn:
                self.owner_bn[path] = owner
            elif path in self.owner_bn and self.owner_bn[path] != owner:
                del self.owner_bn[path]  # shared BN behind different convs: cannot mask one conv's channels
            return out
        if isinstance(mod, nn.PReLU) and mod.num_parameters == 1 or isinstance(mod, _PASS_MODULES):
            return self.passthrough(node, src)
        if isinstance(mod, nn.Flatten):
            return self.flatten(node, src, mod.start_dim, mod.end_dim)
        if lay is None and not any(self.lay(n) is not None for n in _flat_nodes(node.args)):
            return None
        return self.fail(node, f"module type {type(mod).__name__} is not supported by the channel graph")

    def single_user_producer(self, src: Any) -> str | None:
        if isinstance(src, fx.Node) and src.op == "call_module" and src.target in self.producers:
            return src.target
        return None

    def produce(self, path: str, n: int) -> np.ndarray:
        if path not in self.producers:
            self.producers[path] = self.new_ids(path, n)
        return self.producers[path]

    def conv(self, node: fx.Node, path: str, mod: nn.Module, lay: Any) -> Any:
        if lay is None or len(lay) != mod.in_channels:
            return self.fail(node, f"conv input has {None if lay is None else len(lay)} traced channels, "
                                   f"expected {mod.in_channels}")
        if mod.groups == 1:
            self.merge_repeat(self.consumers, path, lay)
            return self.produce(path, mod.out_channels)
        if mod.groups == mod.in_channels == mod.out_channels:
            # depthwise: output channel i reads only input channel i, so they live and die together
            return self.merge_repeat(self.depthwise, path, lay)
        # general grouped conv: pruning would need equal counts per group; keep it whole
        self.freeze(node, f"grouped conv (groups={mod.groups}) is kept whole")
        out = self.produce(path, mod.out_channels)
        self.fixed_ids.append(out)
        self.producers.pop(path)
        return out

    def flatten(self, node: fx.Node, src: Any, start: int, end: int) -> Any:
        lay = self.lay(src)
        if lay is None:
            return None
        in_shape, shape = _shape(src), _shape(node)
        if in_shape is None or shape is None:
            return self.fail(node, "flatten of a tensor without a traced shape")
        if start != 1 or end not in (-1, len(in_shape) - 1) or len(shape) != 2:
            return self.fail(node, f"flatten(start_dim={start}, end_dim={end}) mixes the channel dim with others")
        spatial = int(np.prod(in_shape[2:])) if len(in_shape) > 2 else 1
        return np.repeat(lay, spatial)

    def add(self, node: fx.Node, a: Any, b: Any) -> Any:
        la, lb = self.lay(a), self.lay(b)
        if la is None and lb is None:
            return None
        for other, lo in ((b, lb), (a, la)):
            if lo is None and isinstance(other, fx.Node) and _shape(other) is not None \
                    and int(np.prod(_shape(other))) > 1:
                return self.fail(node, "add of a channel tensor and a tensor the graph does not track")
        if la is None or lb is None:
            return self.passthrough(node, a if la is not None else b)
        if len(la) != len(lb):
            return self.fail(node, f"add of {len(la)} and {len(lb)} channels (broadcast over channels)")
        self.uf.union(la, lb)
        self.add_layouts.append((node.name, la))
        return la

    def cat(self, node: fx.Node, tensors: Any, dim: int) -> Any:
        lays = [self.lay(t) for t in tensors]
        if all(l is None for l in lays):
            return None
        shape = _shape(node)
        if any(l is None for l in lays) or shape is None:
            return self.fail(node, "concat of a tensor the graph does not track")
        dim = dim % len(shape)
        if dim == 1:
            return np.concatenate(lays)  # cat([x, x]) simply repeats x's ids: both copies are consumed
        for l in lays[1:]:
            if len(l) != len(lays[0]):
                return self.fail(node, f"concat along dim {dim} of tensors with different channel counts")
            self.uf.union(lays[0], l)
        return lays[0]

    def chunk(self, node: fx.Node, src: Any, chunks: int, dim: int) -> Any:
        lay, shape = self.lay(src), _shape(src)
        if lay is None:
            return None
        if dim % len(shape) != 1:
            return [lay] * len(node.meta.get("tensor_meta", ()))
        n = len(lay)
        if n % chunks:
            self.freeze(node, f"chunk({chunks}) of {n} channels is uneven; its input channels are kept whole")
            sizes = [m.shape[1] for m in node.meta.get("tensor_meta", ())]
            return list(np.split(lay, np.cumsum(sizes)[:-1]))
        pieces = np.split(lay, chunks)
        for p in pieces[1:]:
            # after pruning, chunk() splits the kept channels evenly again: piece i's kept positions
            # must match piece 0's, so the pieces' channels are coupled position by position
            self.uf.union(pieces[0], p)
        return pieces

    def split(self, node: fx.Node, src: Any, dim: int) -> Any:
        lay, shape = self.lay(src), _shape(src)
        if lay is None:
            return None
        metas = node.meta.get("tensor_meta", ())
        if dim % len(shape) != 1:
            return [lay] * len(metas)
        # split sizes are literals in the code: they would not follow a pruned width
        self.freeze(node, "split() with literal sizes; its input channels are kept whole")
        sizes = [m.shape[1] for m in metas]
        return list(np.split(lay, np.cumsum(sizes)[:-1]))

    def getitem(self, node: fx.Node) -> Any:
        src, idx = node.args
        lay = self.lay(src)
        if isinstance(lay, list) and isinstance(idx, int):
            return lay[idx]
        if lay is None:
            return None
        return self.fail(node, "indexing/slicing a channel tensor (use chunk or separate convs)")

    def function(self, node: fx.Node, fn: Any) -> Any:
        if fn in _ADD_FUNCTIONS:
            return self.add(node, node.args[0], _arg(node, 1, "other"))
        if fn in _CAT_FUNCTIONS:
            return self.cat(node, _arg(node, 0, "tensors"), _arg(node, 1, "dim", 0))
        if fn is torch.flatten:
            return self.flatten(node, node.args[0], _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1))
        if fn is torch.chunk:
            return self.chunk(node, node.args[0], _arg(node, 1, "chunks"), _arg(node, 2, "dim", 0))
        if fn is torch.split:
            return self.split(node, node.args[0], _arg(node, 2, "dim", 0))
        if fn is operator.getitem:
            return self.getitem(node)
        if fn in _PASS_FUNCTIONS:
            return self.passthrough(node, node.args[0])
        return self.generic(node)

    def method(self, node: fx.Node, name: str) -> Any:
        if name in _ADD_METHODS:
            return self.add(node, node.args[0], _arg(node, 1, "other"))
        if name == "flatten":
            return self.flatten(node, node.args[0], _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1))
        if name == "chunk":
            return self.chunk(node, node.args[0], _arg(node, 1, "chunks"), _arg(node, 2, "dim", 0))
        if name == "split":
            return self.split(node, node.args[0], _arg(node, 2, "dim", 0))
        if name in ("view", "reshape"):
            src = node.args[0]
            in_shape, shape = _shape(src), _shape(node)
            if self.lay(src) is not None and in_shape and shape and len(shape) == 2 and shape[0] == in_shape[0]:
                return self.flatten(node, src, 1, -1)
            return self.generic(node)
        if name in _META_METHODS:
            return None
        if name in _PASS_METHODS:
            return self.passthrough(node, node.args[0])
        if name == "mean":
            dims = _arg(node, 1, "dim")
            dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
            shape = _shape(node.args[0])
            if dims and shape and all(d % len(shape) >= 2 for d in dims):
                lay = self.lay(node.args[0])
                return lay
        return self.generic(node)

    def generic(self, node: fx.Node) -> Any:
        if not any(self.lay(n) is not None for n in _flat_nodes((node.args, node.kwargs))):
            return None  # shape arithmetic and other values that carry no channels
        return self.fail(node, "op not supported by the channel graph")

    # -- result ----------------------------------------------------------------------------------
    def finish(self) -> ChannelGraph:
        root = self.uf.roots()
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
        graph = ChannelGraph(modules=modules, origin=self.origin, root=root, fixed=fixed, producers=self.producers,
                             owner_bn=self.owner_bn, bn_layouts=self.bn_layouts, consumers=self.consumers,
                             depthwise=self.depthwise, junctions=[], frozen=frozen)
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


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolic trace in train mode (our Detector's train forward is plain conv/bn/act/cat/add/upsample/pool)."""
    was_training = model.training
    model.train()
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types (TraceError, TypeError on data-dependent control flow)
        raise PruneError(f"torch.fx cannot trace {type(model).__name__}: {type(exc).__name__}: {exc}. "
                         "The pruner needs a forward() without data-dependent Python control flow") from None
    finally:
        model.train(was_training)


def build_graph(model: nn.Module, example_input: torch.Tensor, skip_unsupported: bool = False) -> ChannelGraph:
    """Trace `model` and build its channel dependency graph. Shapes come from one eval-mode run of the
    traced graph on `example_input` (eval so BN running stats stay untouched)."""
    gm = trace(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(example_input)
    finally:
        model.train(was_training)
    builder = _Builder(model, gm, skip_unsupported)
    builder.run()
    return builder.finish()
