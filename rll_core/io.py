"""Result I/O: atomic writes, content digests, npz + JSON result files."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["array_digest", "atomic_write_bytes", "load_json", "load_npz", "save_json", "save_npz",
           "save_table"]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file a normal file's mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def save_npz(path: str | os.PathLike[str], **arrays: Any) -> Path:
    """Atomically save arrays (or numpy scalars) as an uncompressed ``.npz``."""
    import io

    buf = io.BytesIO()
    # numpy's stub matches **kwds against allow_pickle: bool
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]
    return atomic_write_bytes(path, buf.getvalue())


def load_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_json(path: str | os.PathLike[str], obj: Mapping[str, Any]) -> Path:
    """Atomically save ``obj`` as indented JSON (numpy scalars/arrays and paths converted)."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n"
    return atomic_write_bytes(path, text.encode())


def load_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        out: dict[str, Any] = json.load(f)
    return out


def array_digest(*arrays: np.ndarray, extra: str = "") -> str:
    """A BLAKE2b digest of the arrays' dtypes, shapes and bytes (and ``extra``)."""
    h = hashlib.blake2b(digest_size=20)
    h.update(extra.encode())
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.reshape(-1).view(np.uint8).data)
    return h.hexdigest()


def save_table(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]], floatfmt: str = ".4f") -> Path:
    """Save rows (dicts with the same keys) as CSV, or as a Markdown (``.md``) or LaTeX booktabs (``.tex``)
    table, by the file's suffix."""
    path = Path(path)
    if not rows:
        raise ValueError("no rows to save")
    cols = list(rows[0])

    def fmt(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return format(float(v), floatfmt)
        return str(v)

    if path.suffix == ".tex":
        def tex(v: Any) -> str:
            return fmt(v).replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("&", "\\&").replace("%", "\\%")

        lines = ["\\begin{tabular}{" + "l" * len(cols) + "}", "\\toprule", " & ".join(tex(c) for c in cols) + " \\\\",
                 "\\midrule"]
        lines += [" & ".join(tex(r[c]) for c in cols) + " \\\\" for r in rows]
        lines += ["\\bottomrule", "\\end{tabular}"]
    elif path.suffix == ".md":
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    else:
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        w.writerows([[fmt(r[c]) for c in cols] for r in rows])
        lines = buf.getvalue().splitlines()
    return atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
