"""A trained classifier of your own, from the files people keep them in, refused in one line when it cannot be.

Accepted (:func:`load_model`):

* an ``nn.Module`` (used as it is);
* a run folder written by :func:`rll_core.runs.train_run` or ``rll train`` (its ``settings.json`` names the rest);
* a TorchScript file (``torch.jit.save``; no code needed);
* a state dict (``torch.save(model.state_dict())``, or a checkpoint holding it under ``state_dict``,
  ``model_state_dict``, ``model`` or ``net``; ``module.`` prefixes of DDP / DataParallel stripped) with an
  architecture from :data:`rll_core.models.MODELS`, or with a factory ``package.module:function`` that returns
  the network;
* a state dict of a model with a normalisation layer in front (``mean`` / ``std`` or ``mu`` / ``sigma``
  buffers, the network under ``model.``), as RobustBench-style checkpoints store them: rebuilt as
  :class:`Normalized`.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models import MODELS, build_model
from ..runs import load_run
from ..storage import user_path

__all__ = ["ModelLoadError", "Normalized", "is_factory", "load_model", "model_digest"]

_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net")
_NORM_KEYS = (("mean", "std"), ("mu", "sigma"), ("normalize.mean", "normalize.std"))


class ModelLoadError(ValueError):
    """A model file that cannot be read as a classifier, with what was found, in one line."""


class Normalized(nn.Module):
    """``model((x - mean) / std)``: a network trained on normalised inputs, attacked in [0, 1] pixel space."""

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean.reshape(1, -1, 1, 1).float())
        self.register_buffer("std", std.reshape(1, -1, 1, 1).float())

    mean: torch.Tensor
    std: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))

    def bound_layers(self) -> list[nn.Module]:
        """The normalisation as a per-channel affine layer, then the network (for :mod:`rll_core.certify`)."""
        from ..certify import ChannelAffine

        return [ChannelAffine(1 / self.std.flatten(), -self.mean.flatten() / self.std.flatten()), self.model]


def is_factory(spec: str) -> bool:
    """Whether ``spec`` names a ``package.module:function`` rather than a file or folder."""
    return ":" in spec and not Path(spec).expanduser().exists() and not spec.startswith(("/", ".", "~"))


def model_digest(model: nn.Module) -> str:
    """Twelve hex digits naming a model's weights and buffers (and its class): a card's name."""
    h = hashlib.sha256(type(model).__name__.encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:12]


def _state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint: the dict itself or the one under a usual key; DDP's ``module.`` stripped."""
    if isinstance(obj, nn.Module):
        return dict(obj.state_dict())
    if not isinstance(obj, Mapping):
        raise ModelLoadError(f"{path}: holds a {type(obj).__name__}, not a state dict or a module")
    inner = next((obj[k] for k in _STATE_KEYS if isinstance(obj.get(k), Mapping)), obj)
    tensors = {str(k): v for k, v in inner.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelLoadError(f"{path}: no tensors found (keys: {', '.join(map(str, list(obj)[:8]))})")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def _read_torch_file(path: Path) -> Any:
    """What ``torch.save`` wrote into ``path`` (tensors only), or one line saying what the file is not: empty,
    truncated, not written by torch."""
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path}: the file is empty")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same one-line answer
        raise ModelLoadError(f"{path}: neither TorchScript nor a torch.save file, or truncated "
                             f"({type(e).__name__})") from None


def _factory(spec: str) -> nn.Module:
    """The network a ``package.module:function`` returns; the current folder is importable, as it is for
    ``python -c`` (a factory beside the user is found without ``PYTHONPATH=.``)."""
    mod_name, _, fn = spec.partition(":")
    here = os.getcwd()
    added = "" not in sys.path and here not in sys.path
    if added:  # for this import only (the user's sys.path is left as found)
        sys.path.append(here)
    try:
        made = getattr(importlib.import_module(mod_name), fn)()
    except (ImportError, AttributeError) as e:
        raise ModelLoadError(f"factory {spec!r} cannot be imported: {e}") from None
    finally:
        if added:
            sys.path.remove(here)
    if not isinstance(made, nn.Module):
        raise ModelLoadError(f"factory {spec!r} returned a {type(made).__name__}, not an nn.Module")
    return made


def _fill(net: nn.Module, tensors: Mapping[str, torch.Tensor], what: str) -> nn.Module:
    """Load ``tensors`` into ``net`` strictly, or into a :class:`Normalized` around it when the checkpoint has a
    normalisation layer in front; a mismatch in one line naming the first missing and unexpected keys."""
    for mean_key, std_key in _NORM_KEYS:
        if mean_key in tensors and std_key in tensors and any(k.startswith("model.") for k in tensors):
            rest = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
            inner = _fill(net, rest, what)
            return Normalized(inner, tensors[mean_key], tensors[std_key])
    missing, unexpected = [k for k in net.state_dict() if k not in tensors], [k for k in tensors if k not in net.state_dict()]
    if missing or unexpected:
        raise ModelLoadError(f"the checkpoint does not fit {what}: missing {missing[:3]}{'...' if len(missing) > 3 else ''}"
                             f", unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}")
    try:
        net.load_state_dict(tensors)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1].strip()
        raise ModelLoadError(f"the checkpoint does not fit {what}: {first}") from None
    return net


def load_model(model: nn.Module | str | os.PathLike[str], *, architecture: str | None = None,
               weights: str | os.PathLike[str] | None = None, input_shape: tuple[int, int, int] | None = None,
               num_classes: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """A classifier in eval mode on the CPU, and a record of where it came from.

    Args:
        model: an ``nn.Module``; a run folder; a TorchScript or state-dict file (``.pt``/``.pth``); or a factory
            ``"package.module:function"`` returning the network (its weights from ``weights``).
        architecture: a name of :data:`rll_core.models.MODELS` for a state dict (default None).
        weights: a state-dict file for a factory (default None: the factory's own weights).
        input_shape: ``(C, H, W)`` of the data, to build ``architecture`` (default None).
        num_classes: the data's class count, to build ``architecture`` (default None).

    Returns:
        ``(model, source)``: ``source`` says the format, the file and the architecture or factory.

    Raises:
        ModelLoadError: a missing file, a file that is neither TorchScript nor a state dict, a state dict without
            an architecture, keys or shapes that do not fit, an unknown architecture or factory.

    Example:
        >>> net, source = load_model("runs/at")  # doctest: +SKIP
        >>> net, source = load_model("my_net.pt", architecture="cnn001", input_shape=(1, 28, 28), num_classes=10)  # doctest: +SKIP
    """
    if isinstance(model, nn.Module):
        return model.eval(), {"format": "module", "class": type(model).__name__}
    spec = str(model)
    if is_factory(spec):
        net = _factory(spec)
        if weights is not None:
            w = user_path(weights)
            if not w.is_file():
                raise ModelLoadError(f"weights file {w} not found")
            net = _fill(net, _state_dict(_read_torch_file(w), w), spec)
        return net.eval(), {"format": "factory", "factory": spec, "weights": None if weights is None else str(weights)}
    path = user_path(spec)
    if path.is_dir():
        if not (path / "settings.json").exists():
            raise ModelLoadError(f"{path}: a folder without settings.json is not a run folder")
        net, settings, _ = load_run(path, device="cpu")
        return net.eval(), {"format": "run", "path": str(path), "architecture": settings.get("architecture")}
    if not path.is_file():
        raise ModelLoadError(f"model {path} not found")
    try:
        net = torch.jit.load(str(path), map_location="cpu")
        return net.eval(), {"format": "torchscript", "path": str(path)}
    except Exception:  # noqa: BLE001, S110 - not TorchScript: read as a torch.save file below
        pass
    tensors = _state_dict(_read_torch_file(path), path)
    if architecture is None:
        raise ModelLoadError(f"{path}: a state dict ({len(tensors)} tensors) needs an architecture "
                             f"(one of {', '.join(MODELS)}) or a factory 'package.module:function'")
    if architecture not in MODELS:
        raise ModelLoadError(f"unknown architecture {architecture!r}; one of {', '.join(MODELS)}")
    if input_shape is None or num_classes is None:
        raise ModelLoadError("building an architecture needs the data's input shape and class count")
    c, h, _ = input_shape
    net = _fill(build_model(architecture, in_channels=c, num_classes=num_classes, image_size=h), tensors, architecture)
    return net.eval(), {"format": "state_dict", "path": str(path), "architecture": architecture}
