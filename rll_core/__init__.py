"""rll: measuring the claims of "A Closer Look at Accuracy vs. Robustness" (Yang et al., NeurIPS 2020).

The names a user needs, importable from ``rll_core`` itself (loaded on first use, so ``import rll_core``
is cheap)::

    from rll_core import load_train_test, build_model, make_method, train, evaluate, local_lipschitz

    train_set, test_set = load_train_test("mnist", n_train=2000)      # or an .npz of your own
    model = build_model("cnn001", in_channels=1, num_classes=10, image_size=28)
    train(model, train_set, make_method("trades", eps=0.1, beta=6), epochs=2, optimizer="adam", lr=1e-3)
    result = evaluate(model, test_set.images[:500], test_set.labels[:500], eps=0.1)   # PGD, multi-targeted
    lip = local_lipschitz(model, test_set.images[:500], eps=0.1)

Which module for what:

* :mod:`rll_core.data` - loaders for the standard on-disk formats and your own ``.npz`` (no downloads).
* :mod:`rll_core.separation` - exact nearest-other-class L-inf distances, r-separation (Section 3, Table 1).
* :mod:`rll_core.theory` - the 1/r-Lipschitz classifier and its astuteness (Section 4).
* :mod:`rll_core.models` - the paper's architectures by name.
* :mod:`rll_core.methods` - the training methods as losses (natural, GR, LLR, AT, TRADES, RST).
* :mod:`rll_core.training` - one generic, seeded, resumable loop for any such loss.
* :mod:`rll_core.attacks` - PGD and the multi-targeted attack as plain functions.
* :mod:`rll_core.evaluation` - the paper's evaluation attacks by name; accuracy over a dataset.
* :mod:`rll_core.lipschitz` - empirical local Lipschitzness (rll's ascent, and the paper's procedure).
* :mod:`rll_core.measure` - the one measurement (verdicts, intervals, Lipschitz values, radius sweeps);
  :mod:`rll_core.stats` - Wilson, Newcombe, standard errors, the findings' intervals, distance bins.
* :mod:`rll_core.runs` - runs by name (train / evaluate / load a run folder), robustness curves;
  :mod:`rll_core.section4` - the Section 4 classifier's table row (stored) and certified curve;
  :mod:`rll_core.grids` - grids of runs (Tables 2-4), presets; :mod:`rll_core.findings` - the Section 5
  claims decided from the stored verdicts; :mod:`rll_core.pool` - runs side by side in worker processes.
* :mod:`rll_core.notebook` - the notebooks' parameter checks and set-up.
* :mod:`rll_core.tables` - Section 5 tables with n, 95 % Wilson intervals and standard errors;
  :mod:`rll_core.latex` - their LaTeX, laid out to fit a page.
* :mod:`rll_core.paper` - every setting of the reference code, commented with its source.
* :mod:`rll_core.plotting`, :mod:`rll_core.widgets` - figures, and the notebooks' explorers.
* :mod:`rll_core.card` - a robustness card for any trained classifier (``robustness_card``, ``load_model``).
* :mod:`rll_core.storage` - atomic result files, digests, locks, csv/md/LaTeX files; :mod:`rll_core.checks` - shared
  argument checks and device resolution; :mod:`rll_core.cli` - the ``rll`` command.
"""

from __future__ import annotations

import importlib
import os

# OpenMP threads that wait for work sleep instead of spinning (measured by `make bench-threads` on 2 cores: 0.97x
# torch's default on a quiet machine, 1.55x on a busy one); set before torch is first imported, and a value of
# your own is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from typing import Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_PUBLIC = {
    "load_train_test": "data", "load_dataset": "data", "ImageDataset": "data",
    "measure_separation": "separation", "nearest_other_class": "separation",
    "LipschitzClassifier": "theory", "astuteness": "theory",
    "build_model": "models", "make_method": "methods", "train": "training",
    "pgd": "attacks", "multi_targeted": "attacks", "evaluate": "evaluation", "local_lipschitz": "lipschitz",
    "lipschitz_curve": "measure",
    "train_run": "runs", "evaluate_run": "runs", "load_run": "runs", "run_grid": "grids", "robustness_curve": "runs",
    "export_table": "tables", "wilson_interval": "stats",
    "export_separation": "plotting", "save_figure": "plotting", "paper": "",
    "robustness_card": "card", "load_model": "card",
}

__all__ = ["__version__", *sorted(_PUBLIC)]


def __getattr__(name: str) -> Any:
    """Import the defining module on first use of a public name."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'rll_core' has no attribute {name!r}")
    module = importlib.import_module(f"rll_core.{_PUBLIC[name] or name}")
    return module if not _PUBLIC[name] else getattr(module, name)


def __dir__() -> list[str]:
    return sorted(__all__)
