"""r-separation of labelled data (paper Section 3, Table 1, Figure 2).

For every query point ``q`` with label ``y``, :func:`nearest_other_class` finds the L-inf distance to
the nearest reference point whose label differs from ``y`` (and that point's index).  Train-train is
the training set against itself (a point's own class is excluded, so the point itself is too);
test-train is the test set against the training set.  The search is exact.

uint8 data is compared on the integer pixel scale (distances 0..255, reported divided by 255), float
data in float64 (so float32 differences are exact).  Both are exact in any order of evaluation, and ties
are resolved to the smallest reference index, so every backend (numba on CPU, Triton or torch on GPU,
torch on CPU) returns the same arrays bit for bit.

Memory: the kernels hold the references once plus O(query_chunk) state; the numba kernel allocates
nothing per pair, the torch kernel a tile bounded by ``tile_bytes``.  Results can be cached on disk
(``cache_dir``): a finished run is reloaded instantly and an interrupted one resumes from its last
finished query chunk.

Per class (:mod:`rll_core.separation.classes`): the distance to the nearest point of every class, and the
nearest two classes, with the same kernels (the Section 4 classifier's search).
"""

from .classes import PerClassNearest, Top2, nearest_two_classes, per_class_nearest
from .report import (
    DistanceSummary,
    SeparationReport,
    SeparationResult,
    measure_separation,
    separation_settings,
    summarize,
)
from .search import Backend, NearestOther, ScaledDistances, nearest_other_class

__all__ = [
    "Backend",
    "DistanceSummary",
    "NearestOther",
    "PerClassNearest",
    "ScaledDistances",
    "SeparationReport",
    "SeparationResult",
    "Top2",
    "measure_separation",
    "nearest_other_class",
    "nearest_two_classes",
    "per_class_nearest",
    "separation_settings",
    "summarize",
]
