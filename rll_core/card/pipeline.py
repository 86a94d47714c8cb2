"""A robustness card end to end, as ``rll card`` and notebook 05 make it: the data read once, every setting
checked before any work, the model loaded (or the default one trained), the card measured and its files written
from the same data."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch import nn

from ..checks import resolve_device
from ..data import load_train_test
from ..plotting import check_formats
from ..storage import check_writable, project_dir
from .load import load_model
from .make import CARD_ATTACKS, card_on, check_n_eval, check_request, default_model
from .report import write_card

__all__ = ["make_card"]


def make_card(model: nn.Module | str | os.PathLike[str] | None, dataset: str, *, architecture: str | None = None,
              weights: str | os.PathLike[str] | None = None, eps: float | None = None, n_eval: int = 500,
              n_autoattack: int = 100, eps_grid: list[float] | None = None,
              data_dir: str | os.PathLike[str] | None = None, n_train: int | None = None,
              out_dir: str | os.PathLike[str] | None = None, cache_dir: str | os.PathLike[str] | None = None,
              runs_dir: str | os.PathLike[str] | None = None, formats: Iterable[str] | str = ("png", "pdf", "svg"),
              device: str = "auto", precision: str = "auto", seed: int = 0,
              progress: bool = True) -> tuple[dict[str, Any], list[Path]]:
    """Load, check, measure and write a robustness card: what ``rll card`` and notebook 05 run.

    Args:
        model: an ``nn.Module``, a run folder, a TorchScript or state-dict file, ``package.module:factory``
            (:func:`~rll_core.card.load_model`), or None: the AT model of the ``quick`` preset on ``dataset``,
            trained into ``runs_dir`` if missing.
        dataset: a registry name or an ``.npz`` of your own.
        architecture: the registry architecture of a state dict (default None).
        weights: a state-dict file for a factory (default None).
        eps: the radius, in (0, 1] (default the paper's for the data's shape).
        n_eval: the first ``n_eval`` test points (default 500).
        n_autoattack: AutoAttack on the first this many of them; 0 for none (default 100).
        eps_grid: the robustness curve's radii (default 7 from 0 to 1.2 r, and eps).
        data_dir: where the dataset's files are (default the project's).
        n_train: a seeded subset of the training split (default all of it).
        out_dir: where the card's folder goes (default the project's ``results/cards``).
        cache_dir: the separation search's cache (default the project's ``results/cache``).
        runs_dir: where the default model is trained (default the project's ``results/runs``).
        formats: figure formats (default PNG, PDF, SVG).
        device: ``"auto"``, ``"cpu"``, ``"cuda[:N]"``.
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"`` (verdicts in fp32 always).
        seed: the attacks' and the ascent's seed (default 0).
        progress: say what each stage does (default True).

    Returns:
        ``(card, files)``: what :func:`~rll_core.card.robustness_card` returns, and the paths
        :func:`~rll_core.card.write_card` wrote.

    Raises:
        ValueError: a bad setting, format, device or folder, more points than the test split, before any work;
            ModelLoadError: a model file that cannot be read or does not fit the data, before any attack.

    Example:
        >>> card, files = make_card("my_net.pt", "fashion_mnist", n_eval=200)  # doctest: +SKIP
    """
    attacks = CARD_ATTACKS if n_autoattack else tuple(a for a in CARD_ATTACKS if a != "autoattack")
    eps, grid = check_request(attacks, n_eval, n_autoattack, precision, eps, eps_grid)
    fmts = check_formats(formats)
    resolve_device(device)
    for folder, what in ((out_dir, "output folder"), (cache_dir, "cache folder"), (runs_dir, "runs folder")):
        if folder is not None:
            check_writable(folder, what)
    train, test = load_train_test(dataset, data_dir, n_train, None)
    check_n_eval(n_eval, test)  # before a default model is trained
    if model is None:
        model = default_model(dataset, project_dir() / "results" / "runs" if runs_dir is None else runs_dir,
                              data_dir=data_dir, device=device)
    net, source = load_model(model, architecture=architecture, weights=weights, input_shape=train.shape,
                             num_classes=train.num_classes)
    card = card_on(net, train, test, eps=eps, n_eval=n_eval, attacks=attacks, n_autoattack=n_autoattack,
                   eps_grid=grid, out_dir=out_dir, cache_dir=cache_dir, source=source, device=device,
                   precision=precision, seed=seed, progress=progress)
    return card, write_card(card, train, test.subset(n_eval, seed=None), fmts)
