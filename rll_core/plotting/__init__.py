"""Figures of every section, saved for a paper or a blog (PNG, PDF with embedded TrueType fonts, SVG).

* :mod:`rll_core.plotting.separation` - Section 3: Figure 2, Table 1's files, the audit's pair gallery and class
  matrix.
* :mod:`rll_core.plotting.theory` - Section 4: the toy's decision regions, astuteness against the radius.
* :mod:`rll_core.plotting.methods` - Section 5: Lipschitz against robustness, gaps, Table 4, robustness curves and
  robustness by distance.
* :mod:`rll_core.plotting.bracket` - certified beside empirical against the radius, for trained networks.
* :mod:`rll_core.plotting.checks` - the attack-failure indicators of a table's rows.

:func:`save_figure` and :func:`check_formats` serve them all; :func:`method_style` gives each method family one
colour and marker.
"""

from ._base import (
    FIGURE_FORMATS,
    METHOD_STYLES,
    caption_of,
    check_formats,
    context_line,
    method_style,
    place_labels,
    save_figure,
    set_caption,
    wrapped,
)
from .bracket import plot_accuracy_brackets, plot_lipschitz_brackets
from .checks import plot_indicators
from .methods import (
    plot_accuracy_by_distance,
    plot_dropout_comparison,
    plot_gaps,
    plot_lipschitz_vs_accuracy,
    plot_robustness_curves,
    plot_train_vs_test,
)
from .separation import (
    TABLE1_HEADERS,
    export_separation,
    histogram_edges,
    plot_class_matrix,
    plot_pair_gallery,
    plot_separation_histograms,
    separation_outputs,
    separation_tag,
    table1_display,
)
from .theory import plot_astuteness_curves, plot_decision_regions

__all__ = ["FIGURE_FORMATS", "METHOD_STYLES", "TABLE1_HEADERS", "caption_of", "check_formats", "context_line", "export_separation",
           "histogram_edges", "method_style", "place_labels", "plot_accuracy_brackets", "plot_accuracy_by_distance", "plot_astuteness_curves", "plot_class_matrix",
           "plot_decision_regions", "plot_dropout_comparison", "plot_gaps", "plot_indicators", "plot_lipschitz_brackets", "plot_lipschitz_vs_accuracy",
           "plot_pair_gallery", "plot_robustness_curves", "plot_separation_histograms", "plot_train_vs_test", "save_figure",
           "separation_outputs", "separation_tag", "set_caption", "table1_display", "wrapped"]
