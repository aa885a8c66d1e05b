"""Building models from a spec, loading their weights, checking they fit the data (needs torch)."""

from __future__ import annotations

import importlib
import inspect
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edgeprune.errors import ShapeError, UnknownNameError, WeightsError
from edgeprune.models import zoo as _zoo  # noqa: F401  (fills the registry)
from edgeprune.models.registry import MODELS
from edgeprune.models.zoo import count_macs, count_params

__all__ = ["MODELS", "build_model", "load_state_dict", "load_weights", "count_params", "count_macs", "check_fits"]


def _user_factory(spec: str):
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise UnknownNameError(f"model spec {spec!r} must be a zoo name or 'pkg.module:factory'")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise UnknownNameError(f"cannot import module {mod_name!r} for model {spec!r}: {e}") from None
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise UnknownNameError(f"module {mod_name!r} has no attribute {attr!r}") from None


def build_model(spec: str, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The model named by ``spec``: ``factory(in_shape=..., num_classes=...)`` with the keywords its signature
    takes. A spec that names something other than a model factory (``os:system``, a class that is not an
    ``nn.Module``, a constant) is refused in one line before or after the call, never with a traceback."""
    factory = MODELS.get(spec) if ":" not in spec else _user_factory(spec)
    what = f"model spec {spec!r}"
    if not callable(factory):
        raise UnknownNameError(f"{what} names a {type(factory).__name__}, not a model factory (a function or an "
                               "nn.Module class that builds the model)")
    if inspect.isclass(factory) and not issubclass(factory, nn.Module):
        raise UnknownNameError(f"{what} names the class {factory.__name__}, which is not a torch.nn.Module")
    kwargs = {}
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        sig = None
    params = sig.parameters if sig is not None else {}
    if "in_shape" in params:
        kwargs["in_shape"] = tuple(in_shape)
    if "num_classes" in params:
        kwargs["num_classes"] = int(num_classes)
    if sig is not None:
        try:
            sig.bind(**kwargs)
        except TypeError as e:
            raise UnknownNameError(f"{what} is not a model factory: it cannot be called with "
                                   f"{', '.join(kwargs) or 'no arguments'} ({e}); a factory takes optional "
                                   "in_shape / num_classes and returns an nn.Module") from None
        model = factory(**kwargs)
    else:  # no signature to check (a builtin): a call that does not fit says so in one line
        try:
            model = factory(**kwargs)
        except TypeError as e:
            raise UnknownNameError(f"{what} is not a model factory: calling it failed ({e})") from None
    if not isinstance(model, nn.Module):
        raise UnknownNameError(f"model factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


@dataclass(frozen=True)
class Builder:
    """A picklable ``make_model()``: what a worker process or a Ray task needs to build fresh models."""

    spec: str
    in_shape: tuple
    num_classes: int

    def __call__(self) -> nn.Module:
        return build_model(self.spec, self.in_shape, self.num_classes)


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read weights from .safetensors, or a torch state_dict with ``weights_only=True`` (never a pickle)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise WeightsError(f"cannot read weights file {path}: not a torch state_dict ({str(e).splitlines()[0][:80]})") from None
        raise WeightsError(
            f"weights file {path} holds a pickle (Python objects, not just tensors) that edgeprune will not load: "
            "it could run code. Where you trust the file, convert it with: python -c \"import torch; "
            "from safetensors.torch import save_file; m = torch.load('IN.pt', weights_only=False); "
            "sd = m.state_dict() if hasattr(m, 'state_dict') else m; "
            "save_file({k: v.contiguous() for k, v in sd.items()}, 'OUT.safetensors')\""
        ) from None
    except Exception as e:  # corrupt files raise many different exception types
        raise WeightsError(f"cannot read weights file {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights file {path} does not hold a state_dict of tensors")
    return state


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    state = load_state_dict(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise WeightsError(
            f"weights file {path} does not fit the model: {len(missing)} missing keys (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:2]})"
        )
    bad = [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
    if bad:
        k = bad[0]
        raise WeightsError(
            f"weights file {path} does not fit the model: {k} has shape {tuple(state[k].shape)}, "
            f"model expects {tuple(own[k].shape)}"
        )
    model.load_state_dict(state)
    return model


@torch.no_grad()
def check_fits(model: nn.Module, in_shape: tuple[int, ...], num_classes: int, name: str = "model") -> None:
    """Raise ShapeError unless ``model`` maps a (2, *in_shape) batch to (2, num_classes) logits."""
    was_training = model.training
    model.eval()
    try:
        out = model(torch.zeros(2, *in_shape))
    except RuntimeError as e:
        msg = str(e).splitlines()[0]
        raise ShapeError(f"{name} does not accept inputs of shape {tuple(in_shape)}: {msg}") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.shape != (2, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ShapeError(f"{name} outputs {shape} for a batch of 2; the data set has {num_classes} classes")
