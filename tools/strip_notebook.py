"""git clean filter for notebooks/*.ipynb: drop outputs, execution counts and run-time metadata, so what
JupyterLab saves (outputs, widget state) never reaches git.  Reads stdin, writes stdout.
Installed by `make setup` (git config filter.rll-notebook.clean); see .gitattributes."""

import json
import sys

nb = json.load(sys.stdin)
for cell in nb.get("cells", []):
    if cell.get("cell_type") == "code":
        cell["outputs"] = []
        cell["execution_count"] = None
    cell["metadata"] = {k: v for k, v in cell.get("metadata", {}).items() if k == "tags"}
nb["metadata"] = {k: v for k, v in nb.get("metadata", {}).items() if k in ("kernelspec", "language_info", "jupytext")}
json.dump(nb, sys.stdout, indent=1, ensure_ascii=False)
sys.stdout.write("\n")
