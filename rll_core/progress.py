"""Progress bars for every long loop of the package, in one switchable style.

``set_progress("text")`` gives plain text bars on stdout (headless runs: papermill, CI, logs, and saved
notebooks, which show the final line instead of a frozen widget); ``"widget"`` gives ipywidgets bars in
a live notebook; ``"auto"`` (the default, or ``$RLL_PROGRESS``) lets tqdm choose.
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["progress_bar", "set_progress"]

_MODES = ("auto", "text", "widget")
_mode = os.environ.get("RLL_PROGRESS", "auto")


def set_progress(mode: str) -> None:
    """Choose the progress-bar style: ``auto``, ``text`` or ``widget``."""
    global _mode
    if mode not in _MODES:
        raise ValueError(f"progress mode must be one of {', '.join(_MODES)}, got {mode!r}")
    _mode = mode


def progress_bar(*args: Any, **kwargs: Any) -> Any:
    """A tqdm bar in the current style (same arguments as ``tqdm``)."""
    if _mode == "text":
        from tqdm.std import tqdm

        kwargs.setdefault("file", sys.stdout)
        kwargs.setdefault("mininterval", 2.0)
        kwargs.setdefault("ascii", True)
        return tqdm(*args, **kwargs)
    if _mode == "widget":
        from tqdm.notebook import tqdm as ntqdm

        return ntqdm(*args, **kwargs)
    from tqdm.auto import tqdm as atqdm

    return atqdm(*args, **kwargs)
