"""The paper's settings in one place, each value taken from the reference code and pinned by a test.

Reference: the authors' repository ``yangarbiter/robust-local-lipschitz`` at commit 656616a.  Where a value
comes from is written beside it:

* ``params.py``: which (dataset, architecture, method) rows Tables 2-4 train, and the eps per dataset;
* ``lolip/models/__init__.py`` (``get_hyper``): epochs, learning rate, batch size, momentum per dataset,
  and the name suffixes (``-lrem2`` = lr 1e-2, ``-adambs128`` = Adam with batch 128);
* ``lolip/models/torch_model.py``: the method weights (``advbeta2`` = RST lambda 2, ``strades6`` = TRADES
  beta 6, ``sllr36`` = LLR lambda 3 mu 6, ``tulip`` = GR lambda 1 with step 1.0), the inner attacks
  (PGD 10 steps of eps / 5; TRADES 10 steps of 2 eps / 10; LLR 2 steps of eps / 2), momentum 0 unless set;
* ``lolip/models/torch_utils/__init__.py`` (``get_scheduler``): the LR milestones, derived from the epoch
  count, x0.1 at each;
* ``lolip/models/torch_utils/data_augs.py`` and ``lolip/variables.py``: augmentation (``aug01`` = random
  crop 32 after 4 px padding + horizontal flip; Restricted ImageNet: random crop 64 after 8 px padding).

**Learning rates.**  The reference sums its losses over the batch; rll averages them.  For SGD the same
update needs the reference's rate times the batch size (:func:`lr` does that); Adam's update does not
depend on the loss scale, so its rate is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["DISPLAY_NAMES", "EPS", "METHODS", "SETTINGS", "TABLE4", "DatasetSettings", "METHOD_DEFAULTS", "dataset_key", "display_name", "eps_for", "like", "lr", "method_hyper",
           "milestones", "step_size", "table4"]

#: Perturbation radius per dataset on the [0, 1] pixel scale (``params.py``: ``'eps': [...]``).
EPS: dict[str, float] = {
    "mnist": 0.1,
    "fashion_mnist": 0.1,
    "cifar10": 0.031,
    "svhn": 0.031,
    "restricted_imagenet": 0.005,
}

#: The rows of Tables 2 and 3 (``params.py``; ``tulip`` = GR, ``sllr`` = LLR, ``adv`` = AT,
#: ``stradesK`` = TRADES(beta=K), ``advbetaK`` = RST(lambda=K)), in the paper's order.
METHODS: tuple[tuple[str, dict[str, float]], ...] = (
    ("natural", {}), ("gr", {}), ("llr", {}), ("at", {}),
    ("trades", {"beta": 1.0}), ("trades", {"beta": 3.0}), ("trades", {"beta": 6.0}),
    ("rst", {"lam": 0.5}), ("rst", {"lam": 1.0}), ("rst", {"lam": 2.0}),
)


def step_size(eps: float, steps: int) -> float:
    """The inner step of every PGD-style search of the paper: ``2 eps / steps`` (``torch_model.py``:
    ``eps_iter=eps/5`` with 10 steps; TRADES ``eps*2/steps``); 1e-3 for ``eps = 0``."""
    return 2 * eps / steps if eps > 0 else 1e-3


def milestones(epochs: int) -> tuple[int, ...]:
    """The reference's LR milestones for a run of ``epochs`` epochs (``get_scheduler``, gamma 0.1)."""
    table = ((20, (10, 15)), (30, (15, 25)), (40, (20, 30)), (50, (25, 40)), (60, (30, 50)), (70, (40, 60)),
             (80, (30, 50, 70)), (120, (40, 80, 100)), (160, (40, 80, 120, 140)))
    for most, ms in table:
        if epochs <= most:
            return ms
    return (60, 100, 140, 180)


@dataclass(frozen=True)
class DatasetSettings:
    """One dataset's reference training settings (learning rates as the reference writes them)."""

    model: str
    optimizer: str
    lr: float
    batch_size: int
    epochs: int
    momentum: float
    augment: str | None = None
    dropout: float | None = None
    #: methods whose reference rate differs from ``lr`` (``get_hyper``: 'adv' or 'llr' in the loss name
    #: gives 1e-3 on the ResNets; ``-lrem2`` sets 1e-2 back)
    method_lr: dict[str, float] = field(default_factory=dict)
    #: method weights that differ from :data:`METHOD_DEFAULTS` on this dataset
    method_hyper: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


_MNIST = DatasetSettings(model="cnn001", optimizer="sgd", lr=1e-4, batch_size=64, epochs=160, momentum=0.9)

#: Per-dataset reference settings (``get_hyper``, ``params.py``, ``restrictedImgnet`` rows).
SETTINGS: dict[str, DatasetSettings] = {
    # get_hyper: 'CNN' in arch and mnist/fashion -> 160 epochs, lr 1e-4, momentum 0.9, batch 64
    "mnist": _MNIST,
    "fashion_mnist": _MNIST,
    # get_hyper: WRN on cifar -> 120 epochs, lr 1e-2 ('adv'/'llr' in the loss: 1e-3), batch 64, momentum 0
    # (TorchModel's default); params.py cifarLip: advce and sllrce carry -lrem2 (1e-2), advbeta (RST) not
    "cifar10": DatasetSettings(model="wrn-40-10", optimizer="sgd", lr=1e-2, batch_size=64, epochs=120, momentum=0.0,
                               method_lr={"rst": 1e-3}),
    # svhn: 60 epochs; svhnLip rows have no -lrem2, so AT, LLR and RST run at 1e-3
    "svhn": DatasetSettings(model="wrn-40-10", optimizer="sgd", lr=1e-2, batch_size=64, epochs=60, momentum=0.0,
                            method_lr={"at": 1e-3, "llr": 1e-3, "rst": 1e-3}),
    # resImgnet112v3: 70 epochs, lr 1e-2; every row is -adambs128 (Adam, batch 128); LLR is sllr36;
    # training images: Resize(72) + RandomCrop(64, padding=8), no flip
    "restricted_imagenet": DatasetSettings(model="resnet50", optimizer="adam", lr=1e-2, batch_size=128, epochs=70,
                                           momentum=0.0, augment="crop8",
                                           method_hyper={"llr": {"lam": 3.0, "mu": 6.0}}),
}

#: Method weights and inner searches of the reference (``torch_model.py``), before per-dataset overrides.
METHOD_DEFAULTS: dict[str, dict[str, float]] = {
    "natural": {},
    "gr": {"lam": 1.0, "h": 1.0},                    # tulip: lambd 1, step_size 1e-0
    "llr": {"lam": 4.0, "mu": 3.0, "steps": 2},       # llr: 4.0, 3.0; perturb_steps=2, step_size=eps/2
    "at": {"steps": 10},                              # adv: nb_iter=10, eps_iter=eps/5
    "trades": {"beta": 6.0, "steps": 10},             # trades6 (beta 1 / 3 / 6 by name), perturb_steps 10
    "rst": {"lam": 1.0, "steps": 10},                 # advbeta: beta 1 (0.5 / 2 by name), nb_iter 10
}

#: Table 4 (``scripts/Table4.sh``): the rows trained without and with dropout, the dropout rate, and
#: whether both sides are augmented.  MNIST is not in the paper's Table 4 (cnn001 always has its own
#: dropout); rll compares it against dropout 0 as an extension.
TABLE4: dict[str, dict[str, Any]] = {
    "svhn": {"dropout": 0.5, "augment": None,
             "methods": (("natural", {}), ("rst", {"lam": 2.0}), ("at", {}), ("trades", {"beta": 3.0}),
                         ("trades", {"beta": 6.0}))},
    "cifar10": {"dropout": 0.2, "augment": "crop-flip",
                "methods": (("natural", {}), ("rst", {"lam": 2.0}), ("trades", {"beta": 3.0}),
                            ("trades", {"beta": 6.0}), ("at", {}))},
    "restricted_imagenet": {"dropout": 0.5, "augment": "crop8",  # params.py resImgLips, ResNet50_drop50
                            "methods": (("natural", {}), ("rst", {"lam": 2.0}), ("trades", {"beta": 6.0}),
                                        ("trades", {"beta": 3.0}), ("at", {}))},
}


def dataset_key(name: str) -> str:
    """``"Fashion-MNIST"``, ``"fmnist"``, ``"cifar-10"`` -> the registry key; ValueError for unknown names."""
    key = name.lower().replace("-", "_")
    key = {"fmnist": "fashion_mnist", "cifar": "cifar10", "cifar_10": "cifar10"}.get(key, key)
    if key not in SETTINGS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(SETTINGS)}, or the path of an .npz of your own")
    return key


#: Dataset names as people write them (titles, captions).
DISPLAY_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "svhn": "SVHN",
                 "restricted_imagenet": "Restricted ImageNet"}


def display_name(name: str) -> str:
    """``"fashion_mnist"`` -> ``"Fashion-MNIST"``; a name that is no paper dataset (a file of your own) as given."""
    try:
        return DISPLAY_NAMES.get(dataset_key(name), name)
    except ValueError:
        return name


def table4(dataset: str) -> dict[str, Any]:
    """Table 4's dropout rate and augmentation for ``dataset`` (both None where the paper has no Table 4
    row: the architecture's own dropout, the dataset's own augmentation)."""
    t4 = TABLE4.get(dataset_key(dataset), {})
    return {"dropout": t4.get("dropout"), "augment": t4.get("augment")}


def like(shape: tuple[int, int, int]) -> str:
    """The paper dataset whose reference settings fit images of ``shape`` (C, H, W): data of your own
    trains with those (1x28x28: MNIST; 3x32x32: CIFAR-10; 3x64x64: Restricted ImageNet)."""
    table = {(1, 28, 28): "mnist", (3, 32, 32): "cifar10", (3, 64, 64): "restricted_imagenet"}
    key = table.get(tuple(shape))  # type: ignore[arg-type]
    if key is None:
        raise ValueError(f"no paper dataset has images of shape {'x'.join(map(str, shape))}, so there are no reference "
                         f"settings for them (the paper's shapes: {', '.join('x'.join(map(str, k)) for k in table)})")
    return key


def eps_for(dataset: Any) -> float:
    """The paper's eps on the [0, 1] pixel scale for ``dataset``, the one rule every caller uses: a registry name
    (any spelling :func:`dataset_key` takes), an image shape ``(C, H, W)`` (data of your own gets the eps of the
    paper dataset of that shape, :func:`like`), or a loaded dataset (its registry ``kind``, else its ``shape``).

    >>> eps_for("Fashion-MNIST"), eps_for((3, 32, 32))
    (0.1, 0.031)

    Raises ValueError in one line for a name or shape the paper has no eps for."""
    if isinstance(dataset, str):
        return EPS[dataset_key(dataset)]
    if isinstance(dataset, tuple):
        return EPS[like(dataset)]
    kind, shape = getattr(dataset, "kind", None), getattr(dataset, "shape", None)
    if isinstance(kind, str) and kind.lower().replace("-", "_") in EPS:
        return EPS[kind.lower().replace("-", "_")]
    if shape is None:
        raise ValueError(f"no paper eps for {dataset!r}: give a dataset name, an image shape or a loaded dataset")
    return EPS[like(tuple(shape))]


def lr(dataset: str, method: str, optimizer: str | None = None, batch_size: int | None = None) -> float:
    """The reference learning rate of ``method`` on ``dataset``, converted to rll's mean-over-batch loss
    (x batch size for SGD; unchanged for Adam, whose step ignores the loss scale)."""
    s = SETTINGS[dataset_key(dataset)]
    rate = s.method_lr.get(method, s.lr)
    if (optimizer or s.optimizer) == "sgd":
        rate *= batch_size or s.batch_size
    return rate


def method_hyper(dataset: str, method: str, eps: float | None = None) -> dict[str, float]:
    """The reference's weights and inner-search settings of ``method`` on ``dataset`` at radius ``eps``
    (default the dataset's): ``eps`` for the methods that have one, ``step_size`` where the reference does
    not use ``2 eps / steps`` (LLR: eps / 2)."""
    key = dataset_key(dataset)
    r = eps_for(key) if eps is None else eps
    out = {**METHOD_DEFAULTS.get(method, {}), **SETTINGS[key].method_hyper.get(method, {})}
    if method in ("llr", "at", "trades", "rst"):
        out["eps"] = r
    if method == "llr":
        out["step_size"] = r / 2 if r > 0 else step_size(0.0, 1)
    return out

