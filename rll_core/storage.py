"""Result I/O: atomic writes, content digests, npz + JSON result files, folder locks, path checks, the
project's own folders, and the settings record that keeps one output from replacing another's."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rll_core.latex import latex_table

__all__ = ["CorruptFileError", "FolderBusyError", "OutputConflictError", "WriteError", "array_digest", "atomic_write_bytes",
           "check_outputs", "check_writable", "folder_lock", "load_json", "load_npz", "lock_file", "output_tag",
           "project_dir", "record_outputs", "save_json", "save_npz", "save_table", "set_aside", "settings_digest",
           "user_path"]


class FolderBusyError(ValueError):
    """Another process holds the lock of a run folder or cache entry."""


class CorruptFileError(ValueError):
    """A result file that cannot be read (truncated, not JSON, not an npz)."""


class OutputConflictError(ValueError):
    """Outputs of that name already hold the result of other settings (other data, sizes, eps ...)."""


class WriteError(OSError):
    """A result file could not be written (disk full, file too large, no permission): the message names it."""

    def __str__(self) -> str:
        return str(self.strerror)


def project_dir() -> Path:
    """The checkout this package runs from (the folder holding ``pyproject.toml`` and ``rll_core/``), where the
    default ``results/``, ``figures/`` and ``data/`` folders live; the working directory for an installed copy."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "rll_core").is_dir() else Path.cwd()


def user_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a :class:`Path` with ``~`` expanded (every path argument goes through this)."""
    return Path(path).expanduser()


def output_tag(**parts: Any) -> str:
    """``_k1v1-k2v2`` from the parts that are set (None left out), for output names that say what made them:
    ``output_tag(n="800-200", eps=None)`` -> ``_n800-200``; ``""`` when nothing is set."""
    items = [f"{k}{format(v, 'g') if isinstance(v, float) else v}" for k, v in parts.items() if v is not None]
    return "_" + "-".join(items) if items else ""


def check_writable(folder: str | os.PathLike[str], what: str = "output folder") -> Path:
    """Create ``folder`` if needed and prove a file can be written there; ValueError in one line if not."""
    d = user_path(folder)
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".rll-write-check.")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise ValueError(f"cannot write to the {what} {d}: {e.strerror or e}") from None
    return d


@contextlib.contextmanager
def lock_file(lock: str | os.PathLike[str], what: str | os.PathLike[str] | None = None) -> Iterator[Path]:
    """Hold the lock file ``lock`` (guarding ``what``, named in the error) for the block.

    A second holder, in this process or another, gets :class:`FolderBusyError` naming the first one's PID at
    once (no waiting).  The lock is the kernel's (``flock``): it goes away with its process, even one
    killed with SIGKILL, so a crash never leaves anything locked.
    """
    lk = user_path(lock)
    lk.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lk, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise FolderBusyError(f"{what or lk} is in use by process {holder} (lock {lk}); wait for it to finish or "
                             "use another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield lk
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def folder_lock(folder: str | os.PathLike[str]) -> contextlib.AbstractContextManager[Path]:
    """:func:`lock_file` on ``<folder>/.lock``: one process at a time in a run folder."""
    return lock_file(user_path(folder) / ".lock", user_path(folder))


def set_aside(path: str | os.PathLike[str], reason: str) -> Path:
    """Rename a corrupt file to ``<name>.corrupt-<time>`` and say so in one line on stderr."""
    p = Path(path)
    dest = p.with_name(f"{p.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(p, dest)
    print(f"rll: {p} is corrupt ({reason}); set aside as {dest.name}, recomputing", file=sys.stderr, flush=True)
    return dest


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _same_bytes(path: Path, data: bytes) -> bool:
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one.

    A file that already holds exactly ``data`` is left untouched (its time stamp too, so git and make see no
    change).  A failed write (disk full, ``ulimit -f``, no permission) raises :class:`WriteError` naming the
    file, and leaves the old file as it was."""
    path = Path(path)
    if _same_bytes(path, data):
        return path
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file a normal file's mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise WriteError(e.errno, f"cannot write {path}: {e.strerror or e}") from None
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
    """Every array of an ``.npz`` (no pickles); :class:`CorruptFileError` naming the file if it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise CorruptFileError(f"{path} is not a readable .npz file ({type(e).__name__}: {e})") from None


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
    """A JSON object from ``path``; :class:`CorruptFileError` naming the file if it is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            out = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"{path} is not valid JSON ({e}); delete or repair it") from None
    if not isinstance(out, dict):
        raise CorruptFileError(f"{path} holds JSON but not an object; delete or repair it")
    return out


def _settings_path(folder: str | os.PathLike[str], name: str) -> Path:
    return user_path(folder) / f"{name}.settings.json"


def _normal(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` as they read back from JSON (tuples as lists, numpy scalars as numbers)."""
    return dict(json.loads(json.dumps(settings, sort_keys=True, default=_jsonable)))


def check_outputs(folder: str | os.PathLike[str], name: str, settings: Mapping[str, Any]) -> None:
    """Refuse, before any work, to write the outputs of the set ``name`` into ``folder`` when they hold the
    result of other settings: ``<folder>/<name>.settings.json`` (written by :func:`record_outputs` after the
    last job) says what made them and which files they are.

    Raises :class:`OutputConflictError` naming the first setting that differs; the same settings (a rerun) pass."""
    path = _settings_path(folder, name)
    if not path.exists():
        return
    record = load_json(path)
    stored, asked = record.get("settings", {}), _normal(settings)
    diff = [k for k in sorted(set(stored) | set(asked)) if stored.get(k) != asked.get(k)]
    if diff:
        k = diff[0]
        files = ", ".join(record.get("files", [])[:4]) or "its files"
        raise OutputConflictError(f"{path} says {files} in {user_path(folder)} were made with other settings ({k}: "
                             f"stored {stored.get(k)!r}, now {asked.get(k)!r}); choose another output folder or "
                             "delete those files and that record")


def record_outputs(folder: str | os.PathLike[str], name: str, settings: Mapping[str, Any],
                   files: Sequence[str | os.PathLike[str]] = ()) -> Path:
    """Write ``<folder>/<name>.settings.json``: the settings that produced the output set ``name`` and its
    ``files`` (checked by :func:`check_outputs` before the next job writes there)."""
    names = sorted({Path(f).name for f in files})
    return save_json(_settings_path(folder, name), {"settings": _normal(settings), "files": names})


def settings_digest(settings: Mapping[str, Any], length: int = 10) -> str:
    """``length`` hex digits of the SHA-256 of ``settings`` as sorted-key JSON: a file or folder name per setting."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:length]


def array_digest(*arrays: np.ndarray, extra: str = "") -> str:
    """A BLAKE2b digest of the arrays' dtypes, shapes and bytes (and ``extra``)."""
    h = hashlib.blake2b(digest_size=20)
    h.update(extra.encode())
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.reshape(-1).view(np.uint8).data)
    return h.hexdigest()


def save_table(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]], floatfmt: str = ".4f",
               caption: str = "", groups: Sequence[Sequence[str]] | None = None) -> Path:
    """Save rows (dicts with the same keys) as CSV, or as a Markdown (``.md``) or LaTeX booktabs (``.tex``)
    table, by the file's suffix.  ``caption``: a line above the Markdown table; the LaTeX one becomes a
    ``table`` float with ``\\caption`` (first column left-aligned, the rest right-aligned), laid out by
    :func:`rll_core.latex.latex_table` to fit a page (``groups``: columns its blocks keep together)."""
    path = Path(path)
    if not rows:
        raise ValueError("no rows to save")
    cols = list(rows[0])

    def fmt(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return format(float(v), floatfmt)
        return str(v)

    if path.suffix == ".tex":
        lines = [latex_table(cols, [{c: fmt(r[c]) for c in cols} for r in rows], caption, groups=groups)]
    elif path.suffix == ".md":
        lines = [caption, ""] if caption else []
        lines += ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
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
