"""One generic training loop for every method of the paper: seeded, checkpointed, resumable, distributed.

:func:`train` runs ``method(model, x, y)`` (see :mod:`rll_core.methods`) under any optimizer and LR
schedule.  Each epoch it writes ``last.pt`` atomically under ``out_dir`` (model, optimizer, scheduler, RNG
state, history); ``best.pt`` keeps the epoch with the highest PGD accuracy on a fixed validation subset.
A run whose folder already holds epochs resumes after the last one; on CPU it ends bit-identical to an
uninterrupted run.  A folder that holds a run with other settings is refused.

Under ``torchrun --nproc_per_node N`` (one or several nodes) the same call trains with
DistributedDataParallel: every rank draws the same epoch permutation and takes every N-th index of it
(what ``DistributedSampler`` does), each rank's batch is ``batch_size / N``, gradients are averaged, and
only rank 0 writes files.

Losses are means over the batch.  The paper's reference code sums the cross-entropy over the batch, so
its SGD learning rates are per example: :func:`rll_core.paper.lr` multiplies them by the batch size,
which gives the same updates (see :mod:`rll_core.paper` for every reference setting).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from .checks import (
    as_float_images,
    check_eps,
    check_images,
    check_int,
    check_labels,
    check_real,
    join_process_group,
    leave_process_group,
    model_device,
    resolve_device,
    rng_state,
    set_rng_state,
)
from .data import ImageDataset
from .evaluation import evaluate, paper_attack
from .methods import AUGMENTATIONS, augment_batch
from .precision import nhwc, precision_record, resolve_precision
from .progress import progress_bar
from .storage import array_digest, atomic_write_bytes, folder_lock, load_json, save_json, user_path

__all__ = ["Loss", "RunMismatchError", "TrainResult", "load_checkpoint", "train"]

_FORMAT = 1

class RunMismatchError(ValueError):
    """``out_dir`` holds a run with other settings, or a checkpoint that cannot be read."""


@dataclass
class TrainResult:
    """What :func:`train` did: per-epoch history, the best epoch (by validation PGD accuracy), the folder."""

    history: list[dict[str, Any]]
    best_epoch: int | None
    out_dir: Path | None
    settings: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# data and settings


def _as_tensors(data: ImageDataset | tuple[Any, Any], what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 or [0, 1] float images and integer labels as CPU tensors (uint8 kept compact)."""
    if isinstance(data, ImageDataset):
        x, y = torch.from_numpy(data.images), torch.from_numpy(data.labels)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x = torch.from_numpy(np.ascontiguousarray(data[0])) if isinstance(data[0], np.ndarray) else data[0]
        y = torch.from_numpy(np.ascontiguousarray(data[1])) if isinstance(data[1], np.ndarray) else data[1]
    else:
        raise ValueError(f"{what} must be an ImageDataset or an (images, labels) pair")
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError(f"{what}: images and labels must be numpy arrays or torch tensors")
    if x.ndim != 4:
        raise ValueError(f"{what}: images must have shape (N, C, H, W), got {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        check_images(x)
    check_labels(y, len(x))
    return x, y.long()


_Pair = tuple[torch.Tensor, torch.Tensor]


def _inputs(train_data: ImageDataset | tuple[Any, Any], val_data: ImageDataset | tuple[Any, Any] | None,
            extra_data: ImageDataset | tuple[Any, Any] | None) -> tuple[_Pair, _Pair | None, _Pair | None]:
    """The training, validation and extra data as tensors, checked to hold images of one shape."""
    x, y = _as_tensors(train_data, "train_data")
    val = _as_tensors(val_data, "val_data") if val_data is not None else None
    extra = _as_tensors(extra_data, "extra_data") if extra_data is not None else None
    for what, other in (("val_data", val), ("extra_data", extra)):
        if other is not None and other[0].shape[1:] != x.shape[1:]:
            raise ValueError(f"{what} images are {tuple(other[0].shape[1:])}, train_data images "
                             f"{tuple(x.shape[1:])}: they must have one shape")
    return (x, y), val, extra


def _to_float(x: torch.Tensor) -> torch.Tensor:
    return as_float_images(x) if x.dtype == torch.uint8 else x


def _optimizer(name: str, params: Any, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; valid: sgd, adam")


def _check_settings(epochs: int, batch_size: int, lr: float, milestones: Sequence[int], world: int) -> None:
    check_int("epochs", epochs)
    check_int("batch_size", batch_size)
    check_real("lr", lr, lo=0, lo_open=True)
    for m in milestones:
        check_int("milestones", m)
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} is not divisible by the {world} distributed processes")


def _augmentation(augment: bool | str | None) -> dict[str, Any] | None:
    """``None``/``False``: none; ``True``: ``crop-flip``; a name of :data:`AUGMENTATIONS`."""
    if augment is None or augment is False:
        return None
    name = "crop-flip" if augment is True else augment
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augment!r}; valid: {', '.join(AUGMENTATIONS)}")
    return AUGMENTATIONS[name]


def _validation_eps(method: Loss, val_eps: float | None, has_val: bool) -> float | None:
    """The radius validation attacks at: ``val_eps``, else the method's own (one eps per run)."""
    eps = val_eps if val_eps is not None else getattr(method, "eps", None)
    if eps is None and has_val:
        raise ValueError(f"val_eps is needed to validate a {_loss_settings(method)['method']} run "
                         "(the method has no eps of its own)")
    if eps is not None:
        check_eps(eps)
        return float(eps)
    return None


def _check_run_dir(out_dir: Path, settings: dict[str, Any]) -> None:
    """Refuse a folder holding a run with other settings (``epochs`` may grow: that extends the run; where
    the data was read from may change, its digest is compared).  Settings without a finished epoch
    (``last.pt``) hold no result: a run that failed in its first epoch does not block the corrected one."""
    path = out_dir / "settings.json"
    if not path.exists() or not (out_dir / "last.pt").exists():
        return
    stored = load_json(path)
    free = ("epochs", "data_dir")
    diff = [k for k in sorted(set(stored) | set(settings)) if k not in free and stored.get(k) != settings.get(k)]
    if diff:
        k = diff[0]
        raise RunMismatchError(f"{out_dir} holds a run with other settings ({k}: stored {stored.get(k)!r}, asked "
                          f"{settings.get(k)!r}); choose another out_dir")


# ----------------------------------------------------------------------------------------------
# checkpoints


def _rng_state(device: torch.device) -> dict[str, Any]:
    """The global random state as stored in a checkpoint (``torch``, and ``cuda`` on a GPU)."""
    cpu, cuda = rng_state(device)
    return {"torch": cpu, **({"cuda": cuda} if cuda is not None else {})}


def _save_checkpoint(path: Path, payload: Mapping[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(dict(payload), buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`train` (tensors and plain values only; no code is unpickled)."""
    try:
        ck: dict[str, Any] = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # truncated zip, bad pickle, ...
        raise RunMismatchError(f"checkpoint {path} is corrupt or not an rll checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ck, dict) or ck.get("format") != _FORMAT or "model" not in ck:
        raise RunMismatchError(f"checkpoint {path} is not an rll checkpoint of format {_FORMAT}")
    return ck


# ----------------------------------------------------------------------------------------------
# distributed


# ----------------------------------------------------------------------------------------------
# the loop


@dataclass
class _Loop:
    """Everything one training run carries from epoch to epoch."""

    model: nn.Module
    net: nn.Module  # the model, or its DistributedDataParallel wrapper
    method: Loss
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    dev: torch.device
    settings: dict[str, Any]
    out: Path | None
    rank: int
    world: int
    history: list[dict[str, Any]] = field(default_factory=list)
    best: tuple[float, int] | None = None


def _resume(loop: _Loop, epochs: int) -> int:
    """Load ``last.pt`` of the run folder, if any; return the first epoch still to train."""
    if loop.out is None or not (loop.out / "last.pt").exists():
        return 1
    ck = load_checkpoint(loop.out / "last.pt", loop.dev)
    if int(ck["epoch"]) > epochs:
        raise RunMismatchError(f"{loop.out} already holds {ck['epoch']} trained epochs, more than the {epochs} asked; "
                          f"ask for epochs >= {ck['epoch']} or choose another out_dir")
    loop.model.load_state_dict(ck["model"])
    loop.opt.load_state_dict(ck["optimizer"])
    loop.sched.load_state_dict(ck["scheduler"])
    cuda = ck["rng"]["cuda"].cpu() if loop.dev.type == "cuda" and "cuda" in ck["rng"] else None
    set_rng_state((ck["rng"]["torch"].cpu(), cuda), loop.dev)
    loop.history = list(ck["history"])
    loop.best = (ck["best"][0], int(ck["best"][1])) if ck.get("best") else None
    return int(ck["epoch"]) + 1


def _run_epoch(loop: _Loop, x: torch.Tensor, y: torch.Tensor, extra: tuple[torch.Tensor, torch.Tensor] | None,
               epoch: int, epochs: int, batch_size: int, aug: dict[str, Any] | None, amp: bool, channels_last: bool,
               progress: bool) -> dict[str, Any]:
    """One pass over the (seeded, rank-sharded) epoch order; the epoch's mean loss and LR."""
    t0 = time.perf_counter()
    seed, rank, world, dev = loop.settings["seed"], loop.rank, loop.world, loop.dev
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(x), generator=g)
    order = order[: len(order) - len(order) % world][rank::world]
    aug_gen = torch.Generator(device=dev).manual_seed(seed * 1_000_003 + epoch + 7919 * (rank + 1))
    loop.model.train()
    losses = []
    per_rank = batch_size // world
    for s in progress_bar(range(0, len(order), per_rank), desc=f"epoch {epoch}/{epochs}", disable=not progress or rank != 0,
                  leave=False, unit="batch"):
        idx = order[s:s + per_rank]
        xb, yb = _to_float(x[idx].to(dev)), y[idx].to(dev)
        if extra is not None:
            j = torch.randint(0, len(extra[0]), (len(idx),), generator=g)
            xb = torch.cat([xb, _to_float(extra[0][j].to(dev))])
            yb = torch.cat([yb, extra[1][j].to(dev)])
        if aug is not None:
            xb = augment_batch(xb, generator=aug_gen, **aug)
        if channels_last:  # NHWC strides, a one-channel image's too (precision.nhwc says why)
            xb = nhwc(xb)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = loop.method(loop.net, xb, yb)
        loop.opt.zero_grad(set_to_none=True)
        loss.backward()
        loop.opt.step()
        losses.append(loss.detach())
    loop.sched.step()
    return {"epoch": epoch, "loss": float(torch.stack(losses).mean()) if losses else math.nan,
            "lr": loop.opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0,
            "threads": torch.get_num_threads()}  # the same seed gives the same bits at one thread count


def _validate_and_save(loop: _Loop, row: dict[str, Any], val: tuple[torch.Tensor, torch.Tensor] | None,
                       n_val: int, eps: float | None) -> None:
    """Validation accuracy (clean, PGD at the run's eps) on rank 0; ``best.pt``, ``last.pt``, history."""
    if loop.rank != 0:
        return
    s, out = loop.settings, loop.out
    if val is not None and n_val > 0 and eps is not None:
        r = evaluate(loop.model, val[0][:n_val], val[1][:n_val], eps=eps, attacks=[paper_attack("pgd", eps)],
                     seed=s["seed"], progress=False, precision=s.get("precision", "fp32"))
        row |= {"val_accuracy": r.clean_accuracy, "val_pgd_accuracy": r.adversarial_accuracy["pgd"]}
        if loop.best is None or row["val_pgd_accuracy"] > loop.best[0]:
            loop.best = (row["val_pgd_accuracy"], row["epoch"])
            if out is not None:
                _save_checkpoint(out / "best.pt", {"format": _FORMAT, "epoch": row["epoch"],
                                                   "model": loop.model.state_dict(), "settings": s, "metrics": row})
    loop.history.append(row)
    if out is not None:
        _save_checkpoint(out / "last.pt", {
            "format": _FORMAT, "epoch": row["epoch"], "model": loop.model.state_dict(),
            "optimizer": loop.opt.state_dict(), "scheduler": loop.sched.state_dict(), "rng": _rng_state(loop.dev),
            "history": loop.history, "best": list(loop.best) if loop.best else None, "settings": s})
        save_json(out / "history.json", {"settings": s, "history": loop.history})


class Loss(Protocol):
    """What :func:`train` trains with: ``loss(model, x, y) -> scalar tensor`` (a method of
    :mod:`rll_core.methods`, or any callable of that shape), optionally with ``settings() -> dict`` (stored
    with the run) and an ``eps`` (the radius validation attacks at)."""

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...


def _loss_settings(loss: Loss) -> dict[str, Any]:
    """The loss's own ``settings()``, else its name (a plain function's ``__name__``)."""
    if not callable(loss):
        raise ValueError(f"method must be a loss callable as method(model, x, y) (see make_method), got "
                         f"{type(loss).__name__}")
    settings = getattr(loss, "settings", None)
    if callable(settings):
        return dict(settings())
    return {"method": getattr(loss, "__name__", type(loss).__name__)}


def _float_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating parameter (float32 for a model without one)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def _settings_record(method: Loss, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kw: Any) -> dict[str, Any]:
    """Everything that produced a run (the loss's settings, the loop's, the data's digest, the model's size)."""
    meta = kw.pop("meta")
    return {**_loss_settings(method), **kw, "data_digest": array_digest(x.numpy(), y.numpy()),
            "model_class": type(model).__name__, "parameters": sum(p.numel() for p in model.parameters()),
            **dict(meta or {})}


def train(model: nn.Module, train_data: ImageDataset | tuple[Any, Any], method: Loss, *, epochs: int,
          batch_size: int = 64, optimizer: str = "sgd", lr: float = 0.01, momentum: float = 0.9,
          weight_decay: float = 0.0, milestones: Sequence[int] = (), gamma: float = 0.1,
          augment: bool | str | None = None,
          seed: int = 0, out_dir: str | os.PathLike[str] | None = None,
          val_data: ImageDataset | tuple[Any, Any] | None = None, n_val: int = 500, val_eps: float | None = None,
          val_every: int = 1, extra_data: ImageDataset | tuple[Any, Any] | None = None,
          device: str | torch.device | None = "auto",
          channels_last: bool | None = None, compile_model: bool = False, precision: str = "auto",
          meta: Mapping[str, Any] | None = None, progress: bool = True) -> TrainResult:
    """Train ``model`` in place with ``method`` for ``epochs`` epochs, resuming from ``out_dir``.

    Each epoch writes ``last.pt`` atomically (model, optimizer, scheduler, random state, history) and ``best.pt``
    (best validation PGD accuracy); a rerun resumes after the last finished epoch and ends bit-identical on one
    machine and build.  All random draws come from ``seed``; the caller's global random state is left as it was.
    Under ``torchrun`` the same call trains with DistributedDataParallel.

    Args:
        model: the ``nn.Module`` to train (moved to ``device``).
        train_data: an :class:`~rll_core.data.ImageDataset` or ``(images, labels)``: uint8 pixels or [0, 1]
            floats, ``(N, C, H, W)``.
        method: any loss ``method(model, x, y) -> scalar`` (:func:`rll_core.methods.make_method`, or a function).

        epochs: epochs to reach, >= 1 (a folder holding more is refused).
        batch_size: images per step (default 64).
        optimizer: ``"sgd"`` or ``"adam"`` (default ``"sgd"``).
        lr: the learning rate of the mean loss over the batch, > 0 (default 0.01).
        momentum: SGD's momentum (default 0.9).
        weight_decay: (default 0).
        milestones: epochs after which the rate is multiplied by ``gamma`` (default none).
        gamma: the factor (default 0.1).
        augment: ``"crop-flip"`` (or True: random crop after 4 px padding + flip), ``"crop8"``, or None.
        seed: the seed of the epoch order, augmentation and every draw (default 0).

        val_data: validated after every epoch (clean and PGD accuracy at ``val_eps``), picks ``best.pt``.
        n_val: its first points used (default 500).
        val_eps: the validation radius (default the method's ``eps``; needed for a loss without one).
        val_every: validate after every ``val_every``-th epoch and after the last (default 1: every epoch;
            ``best.pt`` is picked among the validated epochs).  Validation draws from streams of its own, so the
            weights do not depend on it; recorded with the run where it is not 1.
        extra_data: pseudo-labelled images added to every batch, as many as the batch (RST's).

        out_dir: the run folder (locked while training), or None for no files.
        device: ``"auto"``, a device, or None (where the model is).
        channels_last: NHWC memory format (default None: under bf16 yes, else no).
        compile_model: ``torch.compile`` (recorded in the settings; default False).
        meta: extra settings stored with the run.
        progress: show progress and one line per epoch (default True).
        precision: ``"auto"`` (default: bf16 autocast for every training step, inner searches included, where the
            hardware computes bf16 natively: :mod:`rll_core.precision`), ``"fp32"`` or ``"bf16"``; validation's
            verdicts stay fp32.  Recorded with the run (``precision``, only when bf16; ``amp``).

    Returns:
        A :class:`TrainResult`: per-epoch ``history``, ``best_epoch``, ``out_dir``, ``settings``.

    Raises:
        ValueError: any bad setting or data (before any work); RunMismatchError: the folder holds another run, more
            epochs or a corrupt checkpoint; FolderBusyError: another process trains there; WriteError: a checkpoint
            could not be written (the finished epochs are kept).

    Example:
        >>> train(model, (x, y), make_method("trades", eps=0.1, beta=6), epochs=2, optimizer="adam", lr=1e-3,
        ...       out_dir="runs/trades6")  # doctest: +SKIP
    """
    _loss_settings(method)  # refuses a non-callable before any work
    rank, world, ddp_device, opened = join_process_group()
    finished = False
    try:
        _check_settings(epochs, batch_size, lr, milestones, world)
        check_int("val_every", val_every)
        aug = _augmentation(augment)
        eps = _validation_eps(method, val_eps, val_data is not None and n_val > 0)
        (x, y), val, extra = _inputs(train_data, val_data, extra_data)
        dev = ddp_device or (resolve_device(device) if device is not None else model_device(model))
        prec = resolve_precision(precision, dev, _float_dtype(model))
        channels_last = prec == "bf16" if channels_last is None else channels_last
        settings = _settings_record(
            method, model, x, y, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, momentum=momentum,
            weight_decay=weight_decay, milestones=list(milestones), gamma=gamma,
            augment=augment if isinstance(augment, str) else ("crop-flip" if augment else None), seed=seed,
            n_train=len(x), n_extra=len(extra[0]) if extra else 0, n_val=min(n_val, len(val[0])) if val else 0,
            val_eps=eps, amp=prec == "bf16", world_size=world, meta=meta,
            **({"val_every": val_every} if val_every != 1 else {}),  # older runs keep their settings
            **({"compile_model": True} if compile_model else {}), **precision_record(prec))
        out = user_path(out_dir) if out_dir is not None else None
        with folder_lock(out) if out is not None and rank == 0 else contextlib.nullcontext(), \
                torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            loop = _start(model, method, settings, out, dev, rank, world, channels_last)
            start = _resume(loop, epochs)
            if out is not None and rank == 0:
                save_json(out / "settings.json", settings)
            for epoch in range(start, epochs + 1):
                row = _run_epoch(loop, x, y, extra, epoch, epochs, batch_size, aug, prec == "bf16", channels_last, progress)
                checked = epoch == epochs or epoch % val_every == 0
                _validate_and_save(loop, row, val if checked else None, n_val, eps)
                _report(row, epochs, progress and rank == 0)
        finished = True
    finally:
        leave_process_group(opened, finished)
    return TrainResult(loop.history, loop.best[1] if loop.best else None, out, settings)


def _start(model: nn.Module, method: Loss, settings: dict[str, Any], out: Path | None, dev: torch.device,
           rank: int, world: int, channels_last: bool) -> _Loop:
    """Check the folder, place the model, make the optimizer and schedule, seed the random stream."""
    if out is not None:
        _check_run_dir(out, settings)
    model.to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt = _optimizer(settings["optimizer"], model.parameters(), settings["lr"], settings["momentum"],
                     settings["weight_decay"])
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    if settings.get("compile_model"):
        net = torch.compile(net)  # type: ignore[assignment]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, settings["milestones"], settings["gamma"])
    torch.manual_seed(settings["seed"])
    return _Loop(model, net, method, opt, sched, dev, settings, out, rank, world)


def _report(row: Mapping[str, Any], epochs: int, show: bool) -> None:
    if show:
        extra_txt = "".join(f", {k} {row[k]:.3f}" for k in ("val_accuracy", "val_pgd_accuracy") if k in row)
        print(f"epoch {row['epoch']}/{epochs}: loss {row['loss']:.4f}{extra_txt} ({row['seconds']:.1f} s)", flush=True)
