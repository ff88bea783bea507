"""Pruned models of any nn.Module, saved without pickle: `model.json` (the factory that builds the dense
model, `package.module:function`, and every conv/linear/norm module's widths) + `weights.pt` (the
state_dict, loaded with weights_only=True). Loading builds the dense model with the factory, shrinks
each module to the recorded widths and every tensor to its saved shape, then loads the state_dict.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import PruneError
from ..fsio import AtomicFile, atomic_write_json, read_json

_WIDTHS = ("in_channels", "out_channels", "groups", "in_features", "out_features", "num_features",
           "normalized_shape", "num_parameters", "num_channels", "num_groups")


def load_factory(spec: str) -> Callable[[], nn.Module]:
    """`package.module:function` -> the callable (the module must be importable: on sys.path/PYTHONPATH)."""
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise PruneError(f"--model {spec!r}: expected package.module:factory (a callable that builds the model)")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise PruneError(f"--model {spec!r}: cannot import {mod_name!r} ({exc}); is its folder on PYTHONPATH?") \
            from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise PruneError(f"--model {spec!r}: {mod_name} has no callable {attr!r}")
    return factory


def build(spec: str) -> nn.Module:
    model = load_factory(spec)()
    if not isinstance(model, nn.Module):
        raise PruneError(f"--model {spec!r}: the factory returned a {type(model).__name__}, not an nn.Module")
    return model


def build_with_weights(spec: str, weights: str | Path | None) -> nn.Module:
    """The dense model of `spec` with the state_dict in `weights` (loaded weights_only) when given."""
    model = build(spec)
    if weights is not None:
        try:
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        except FileNotFoundError:
            raise PruneError(f"{weights}: not found") from None
        except Exception as exc:  # a bad archive, a pickle the safe loader refuses, or keys of another model
            raise PruneError(f"{weights}: not a state_dict of {spec} ({str(exc).splitlines()[0][:200]})") from None
    return model


def module_widths(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Every module's width attributes (the ones pruning changes), by module path."""
    out = {}
    for path, mod in model.named_modules():
        attrs = {a: list(getattr(mod, a)) if isinstance(getattr(mod, a), tuple) else getattr(mod, a)
                 for a in _WIDTHS if isinstance(getattr(mod, a, None), (int, tuple))}
        if attrs:
            out[path] = attrs
    return out


def apply_widths(model: nn.Module, widths: dict[str, dict[str, Any]], state: dict[str, torch.Tensor],
                 source: str = "model.json") -> nn.Module:
    """Shrink a freshly built dense `model` to `widths` and the shapes of `state`, then load `state`."""
    mods = dict(model.named_modules())
    unknown = sorted(set(widths) - set(mods))
    if unknown:
        raise PruneError(f"{source}: modules {unknown[:5]} are not in the model the factory builds")
    for path, attrs in widths.items():
        for a, v in attrs.items():
            setattr(mods[path], a, tuple(v) if isinstance(v, list) else v)
    for key, value in state.items():
        path, _, name = key.rpartition(".")
        mod = mods.get(path)
        if mod is None or not hasattr(mod, name):
            raise PruneError(f"{source}: weights key {key!r} is not in the model the factory builds")
        old = getattr(mod, name)
        if isinstance(old, torch.Tensor) and old.shape != value.shape:
            fresh = torch.empty(value.shape, dtype=old.dtype)
            if isinstance(old, nn.Parameter):
                setattr(mod, name, nn.Parameter(fresh, requires_grad=old.requires_grad))
            else:
                setattr(mod, name, fresh)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise PruneError(f"{source}: the weights do not fit the rebuilt model: {str(exc).splitlines()[0]}") from None
    return model


def save(out_dir: str | Path, model: nn.Module, factory: str, extra: dict[str, Any] | None = None) -> Path:
    """Write `model.json` + `weights.pt` for a pruned model built by `factory`."""
    out = Path(out_dir)
    atomic_write_json(out / "model.json", {"version": 1, "factory": factory, "modules": module_widths(model),
                                           **(extra or {})})
    with AtomicFile(out / "weights.pt", suffix=".pt") as tmp:
        torch.save(model.state_dict(), tmp)
    return out


def load(path: str | Path, factory: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """A pruned folder written by `save` -> (model, model.json document). `factory` replaces the one
    model.json names (the same model, importable under another name)."""
    path = Path(path)
    doc_path = path / "model.json"
    doc = read_json(doc_path, PruneError, "not found (a folder from `save` holds model.json and weights.pt)")
    if not isinstance(doc, dict) or doc.get("version") != 1 or not isinstance(doc.get("modules"), dict) \
            or not isinstance(doc.get("factory"), str):
        raise PruneError(f"{doc_path}: expected {{'version': 1, 'factory': 'pkg.mod:fn', 'modules': {{...}}}}")
    try:
        state = torch.load(path / "weights.pt", map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PruneError(f"{path / 'weights.pt'}: not found") from None
    except Exception as exc:  # torch raises many types for a bad archive; the safe loader refuses pickles
        raise PruneError(f"{path / 'weights.pt'}: not a plain state_dict ({str(exc).splitlines()[0][:160]})") from None
    if factory is not None:
        doc = {**doc, "factory": factory}
    return apply_widths(build(doc["factory"]), doc["modules"], state, str(doc_path)), doc
