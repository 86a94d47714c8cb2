"""Your model, your data: a robustness card for any trained classifier (:func:`robustness_card`).

* :mod:`rll_core.card.load` - a model from a run folder, TorchScript, a state dict with an architecture or a
  factory, checkpoint layouts read or refused in one line (:func:`load_model`).
* :mod:`rll_core.card.make` - the card's measurements, stored stage by stage (:func:`robustness_card`).
* :mod:`rll_core.card.report` - its table, figures and ``card.md`` (:func:`write_card`).
* :mod:`rll_core.card.pipeline` - all of it from a model file and a dataset name, as ``rll card`` and notebook 05
  run it (:func:`make_card`).
"""

from .load import ModelLoadError, Normalized, is_factory, load_model, model_digest
from .make import CARD_ATTACKS, card_folder, check_fits, default_model, robustness_card
from .pipeline import make_card
from .report import card_rows, model_name, plot_least_smooth, write_card

__all__ = ["CARD_ATTACKS", "ModelLoadError", "Normalized", "card_folder", "card_rows", "check_fits", "default_model",
           "is_factory", "load_model",
           "make_card", "model_digest", "model_name", "plot_least_smooth", "robustness_card", "write_card"]
