"""Jupyter server settings for `make lab` (`jupyter lab --config=tools/jupyter_server_config.py`).

After a notebook under ``notebooks/`` is saved, git's index entry for it is refreshed when git sees no change in
it: the clean filter (``tools/strip_notebook.py``) drops outputs, so a notebook whose only change is its saved
outputs has nothing for ``git diff`` to show, yet ``git status`` would list it as modified (git notices the new
file size and does not run the filter to compare).  ``git add`` of a file whose cleaned content equals the index
changes only the index's size and time record, never what is staged.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any


def refresh_git_index(model: Any = None, os_path: str = "", contents_manager: Any = None, **kwargs: Any) -> None:
    """Post-save hook: ``git add`` a saved ``notebooks/*.ipynb`` whose cleaned content git already has."""
    p = Path(os_path)
    if p.suffix != ".ipynb" or p.parent.name != "notebooks":
        return
    try:
        # exit 0: the cleaned file equals the index (its only change is what the filter drops)
        same = subprocess.run(["git", "diff", "--quiet", "--", p.name], cwd=p.parent, capture_output=True, timeout=30)
        if same.returncode == 0:
            subprocess.run(["git", "add", "--", p.name], cwd=p.parent, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):  # no git, or not a checkout: nothing to refresh
        return


if "get_config" in globals():  # loaded by Jupyter as a config file
    c = get_config()  # type: ignore[name-defined]  # noqa: F821
    c.FileContentsManager.post_save_hook = refresh_git_index
