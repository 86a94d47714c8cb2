"""rll: measuring the claims of "A Closer Look at Accuracy vs. Robustness" (Yang et al., NeurIPS 2020).

Submodules:

* :mod:`rll_core.data` - dataset loaders for the standard on-disk formats (no download at run time).
* :mod:`rll_core.separation` - exact nearest-other-class L-inf distances, r-separation (Table 1).
* :mod:`rll_core.plotting` - Figure 2 histograms and figure export (PNG/PDF/SVG).
* :mod:`rll_core.io` - atomic result files, digests and tables.
"""

__version__ = "0.1.0"
