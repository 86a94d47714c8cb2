"""Progress bars for every long loop of the package, in one switchable style.

The style is ``$RLL_PROGRESS``: ``text`` gives plain text bars on stdout (headless runs: papermill, CI, logs,
and saved notebooks, which show the final line instead of a frozen widget); ``widget`` gives ipywidgets bars
in a live notebook; ``auto`` (the default) lets tqdm choose.  :func:`set_progress` sets it for this process
and the processes it starts (distributed workers, notebook kernels' children) - the one setting, visible in
the environment, not a hidden module variable.
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["MODES", "progress_bar", "set_progress"]

#: The progress-bar styles.
MODES = ("auto", "text", "widget")


def set_progress(mode: str) -> None:
    """Choose the progress-bar style for this process and its children (``$RLL_PROGRESS``).

    Args:
        mode: ``"auto"``, ``"text"`` or ``"widget"``.

    Raises:
        ValueError: any other mode.

    Example:
        >>> set_progress("text")
    """
    if mode not in MODES:
        raise ValueError(f"progress mode must be one of {', '.join(MODES)}, got {mode!r}")
    os.environ["RLL_PROGRESS"] = mode


def progress_bar(*args: Any, **kwargs: Any) -> Any:
    """A tqdm bar in the current style (same arguments as ``tqdm``; an unknown ``$RLL_PROGRESS`` means ``auto``)."""
    mode = os.environ.get("RLL_PROGRESS", "auto")
    if mode == "text":
        from tqdm.std import tqdm

        kwargs.setdefault("file", sys.stdout)
        kwargs.setdefault("mininterval", 2.0)
        kwargs.setdefault("ascii", True)
        return tqdm(*args, **kwargs)
    if mode == "widget":
        from tqdm.notebook import tqdm as ntqdm

        return ntqdm(*args, **kwargs)
    from tqdm.auto import tqdm as atqdm

    return atqdm(*args, **kwargs)
