"""Section 4: per-class distances against brute force, the Lipschitz classifier's guarantees, astuteness."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rll_core.attacks import pgd
from rll_core.evaluation import evaluate
from rll_core.lipschitz import local_lipschitz
from rll_core.separation import nearest_two_classes, per_class_nearest
from rll_core.theory import LipschitzClassifier, astuteness, certified_radius, lipschitz_ratio_inf, max_lipschitz_ratio


def brute_per_class(q, r, ry):
    """Full pairwise L-inf matrix in float64, then the min (first index among ties) within each class."""
    d = np.abs(q.reshape(len(q), -1).astype(np.float64)[:, None] - r.reshape(len(r), -1).astype(np.float64)[None]).max(2)
    classes = np.unique(ry)
    dist = np.stack([d[:, ry == c].min(1) for c in classes], 1)
    idx = np.stack([np.flatnonzero(ry == c)[d[:, ry == c].argmin(1)] for c in classes], 1)
    return dist, idx


@pytest.mark.parametrize("n_classes,dtype", [(2, np.uint8), (20, np.uint8), (5, np.float32)])
def test_per_class_nearest_matches_brute_force(n_classes, dtype):
    g = np.random.default_rng(n_classes)
    if dtype == np.uint8:
        r = g.integers(0, 6, (300, 7), dtype=np.uint8)  # few grey levels: many ties
        q = np.concatenate([g.integers(0, 6, (40, 7), dtype=np.uint8), r[:10]])
    else:
        r = g.random((200, 9), dtype=np.float32)
        q = g.random((30, 9), dtype=np.float32)
    ry = g.integers(0, n_classes, len(r))
    ry[:n_classes] = np.arange(n_classes)  # every class present
    qy = g.integers(0, 3, len(q))  # query classes are not consulted: a class absent from queries is fine
    out = per_class_nearest(q, qy, r, ry)
    d, i = brute_per_class(q, r, ry)
    scale = 255.0 if dtype == np.uint8 else 1.0
    np.testing.assert_array_equal(out.dist, d / scale)
    np.testing.assert_array_equal(out.index, i)
    np.testing.assert_array_equal(out.classes, np.arange(n_classes))
    top = out.top2()
    order = np.argsort(d, axis=1, kind="stable")
    np.testing.assert_array_equal(top.label, order[:, :2])
    np.testing.assert_array_equal(top.dist[:, 0], d.min(1) / scale)
    np.testing.assert_array_equal(top.dist[:, 1], np.sort(d, 1)[:, 1] / scale)
    np.testing.assert_array_equal(top.index, np.take_along_axis(i, order[:, :2], 1))
    # the one-pass top-2 kernel agrees with the full table bit for bit (ties included)
    fast = nearest_two_classes(q, r, ry, query_chunk=7)
    for f in ("raw_distance", "index", "label"):
        np.testing.assert_array_equal(getattr(fast, f), getattr(top, f))


@pytest.mark.parametrize("chunk,qblock,n_classes", [(1, 1, 3), (5, 3, 7), (64, 64, 2), (1024, 16, 12)])
def test_top2_filter_kernel_block_sizes_match_brute_force(chunk, qblock, n_classes):
    """The uint8 top-2 filter kernel with every chunk / query-block size, 40 coordinates (a prefix of 32
    and a partial SIMD block after it) and three grey levels, so ties within and across classes abound."""
    from rll_core._kernels import UINT8_SENTINEL, PrefixRefs, numba_top2_prefix

    g = np.random.default_rng(chunk)
    r = g.integers(0, 3, (230, 40), dtype=np.uint8) * 120
    q = np.concatenate([g.integers(0, 3, (50, 40), dtype=np.uint8) * 120, r[:9]])
    ry = g.integers(0, n_classes, len(r))
    ry[:n_classes] = np.arange(n_classes)
    refs = PrefixRefs(r, ry, g.permutation(40), prefix=32)
    best_d = np.full((len(q), 2), UINT8_SENTINEL, np.int32)
    best_i = np.full((len(q), 2), -1, np.int64)
    best_c = np.full((len(q), 2), n_classes, np.int64)
    numba_top2_prefix(refs.queries(q), refs, best_d, best_i, best_c, chunk=chunk, qblock=qblock)
    d, i = brute_per_class(q, r, ry)
    order = np.argsort(d, axis=1, kind="stable")[:, :2]
    np.testing.assert_array_equal(best_c, order)
    np.testing.assert_array_equal(best_d, np.take_along_axis(d, order, 1))
    np.testing.assert_array_equal(best_i, np.take_along_axis(i, order, 1))


def test_per_class_nearest_backends_agree_and_bad_input():
    g = np.random.default_rng(1)
    r, ry, q = g.integers(0, 256, (150, 12), dtype=np.uint8), g.integers(0, 4, 150), g.integers(0, 256, (20, 12), dtype=np.uint8)
    a, b = per_class_nearest(q, None, r, ry, backend="numba"), per_class_nearest(q, None, r, ry, backend="torch")
    assert np.array_equal(a.raw_distance, b.raw_distance) and np.array_equal(a.index, b.index)
    with pytest.raises(ValueError, match="single class"):
        per_class_nearest(q, None, r, np.zeros(150, np.int64))
    with pytest.raises(ValueError, match="features"):
        per_class_nearest(q[:, :5], None, r, ry)
    with pytest.raises(ValueError, match="dtype"):
        per_class_nearest(q.astype(np.float32), None, r, ry)
    with pytest.raises(ValueError, match="single class"):
        nearest_two_classes(q, r, np.zeros(150, np.int64))
    # labels need not be 0..C-1
    t = nearest_two_classes(q, r, ry * 10 + 3)
    assert np.array_equal(t.label, a.top2().label * 10 + 3) and np.array_equal(t.raw_distance, a.top2().raw_distance)


def _separated(seed=0, n=30, r=0.1):
    """Three classes in [0, 1]^2 whose closest cross-class pair is exactly 2r apart (a pair placed at 2r,
    all other points farther)."""
    g = np.random.default_rng(seed)
    centres = np.array([[0.2, 0.2], [0.8, 0.2], [0.5, 0.8]])
    x = np.concatenate([c + g.uniform(-0.1, 0.1, (n, 2)) for c in centres])
    y = np.repeat(np.arange(3), n)
    x[0], x[n] = [0.45, 0.3], [0.45 + 2 * r, 0.3]  # the closest pair: exactly 2r in L-inf
    return x, y


def test_theorem_astuteness_one_below_r_and_less_above():
    x, y = _separated()
    clf = LipschitzClassifier(x, y)
    assert clf.separation == pytest.approx(0.2) and clf.r == pytest.approx(0.1)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for eps in (0.0, 0.05, 0.099):
        a = astuteness(clf, xt, yt, eps)
        assert a.certified == 1.0 and a.attacked == 1.0 and a.accuracy == 1.0
    for eps in (0.11, 0.2, 0.3):
        a = astuteness(clf, xt, yt, eps)
        assert a.certified <= a.attacked < 1.0
        flipped = torch.from_numpy(a.per_point["flipped"])
        assert a.x_adv is not None
        adv = a.x_adv[flipped]
        # every "attacked" perturbation is real: within eps, in [0, 1], and re-classified differently
        assert float((adv - xt[flipped]).abs().max()) <= eps + 1e-12
        assert bool(((adv >= 0) & (adv <= 1)).all())
        assert bool((clf(adv).argmax(1) != yt[flipped]).all())
        # certified points are never flipped (the certificate is sound)
        assert not bool((torch.from_numpy(a.per_point["certified"]) & flipped).any())


def test_each_logit_is_one_over_r_lipschitz():
    x, y = _separated(seed=1)
    clf = LipschitzClassifier(x, y)
    xt = torch.from_numpy(x)
    ratio = max_lipschitz_ratio(clf, xt, 0.15, generator=torch.Generator().manual_seed(0))
    assert 0.5 / clf.r < ratio <= (1 / clf.r) * (1 + 1e-9)
    # the evaluation core runs on it like on any network: PGD, and the L1 Lipschitz estimate (<= C / r)
    x_adv = pgd(clf, xt[:10], torch.from_numpy(y[:10]), eps=0.15, step_size=0.05, steps=5)
    assert float((x_adv - xt[:10]).abs().max()) <= 0.15 + 1e-12
    lip = local_lipschitz(clf, xt[:10], eps=0.15)
    assert float(lip.max()) <= 3 / clf.r * (1 + 1e-9)
    far = torch.rand(40, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert float(lipschitz_ratio_inf(clf, far, far.flip(0)).max()) <= (1 / clf.r) * (1 + 1e-9)


def test_subgradient_matches_finite_differences():
    x, y = _separated(seed=2)
    clf = LipschitzClassifier(x, y)
    z = torch.tensor([[0.31, 0.52], [0.66, 0.47]], dtype=torch.float64, requires_grad=True)
    d = clf.distances(z)
    (g,) = torch.autograd.grad(d.sum(), z)
    t = 1e-7
    for k in range(2):
        e = torch.zeros_like(z)
        e[:, k] = t
        fd = ((clf.distances(z.detach() + e) - clf.distances(z.detach() - e)).sum(1)) / (2 * t)
        assert torch.allclose(g[:, k], fd, atol=1e-6)


def test_real_data_train_astuteness_is_one_at_r(fmnist):
    train, _ = fmnist
    tr = train.subset(600, seed=4)
    clf = LipschitzClassifier(tr.images, tr.labels)
    x, y = torch.from_numpy(tr.float_images()[:60]).double(), torch.from_numpy(tr.labels[:60])
    a = astuteness(clf, x, y, 0.999 * clf.r)
    assert a.certified == 1.0 and a.accuracy == 1.0


def test_bad_input():
    x, y = _separated()
    with pytest.raises(ValueError, match="r must be"):
        LipschitzClassifier(x, y, r=0.0)
    with pytest.raises(ValueError, match="r must be"):
        LipschitzClassifier(x, y, r=-1.0)
    with pytest.raises(ValueError, match="single class"):
        LipschitzClassifier(x, np.zeros(len(x), np.int64))
    with pytest.raises(ValueError, match="labels must have shape"):
        LipschitzClassifier(x, y[:-1])
    clf = LipschitzClassifier(x, y)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    with pytest.raises(ValueError, match="eps"):
        astuteness(clf, xt, yt, -0.1)
    with pytest.raises(ValueError, match="labels must have shape"):
        astuteness(clf, xt, yt[:-1], 0.1)
    with pytest.raises(ValueError, match="classes of the training set"):
        astuteness(clf, xt, yt + 5, 0.1)
    with pytest.raises(ValueError, match="inputs must have shape"):
        clf(torch.rand(3, 5, dtype=torch.float64))


def test_certified_radius_is_half_the_margin_of_correct_points_and_matches_astuteness():
    g = np.random.default_rng(3)
    xtr, ytr = g.random((120, 6)), g.integers(0, 4, 120)
    xq, yq = torch.from_numpy(g.random((50, 6))), torch.from_numpy(g.integers(0, 4, 50))
    clf = LipschitzClassifier(xtr, ytr)
    radius = certified_radius(clf, xq, yq)
    d, _ = brute_per_class(xq.numpy(), xtr, ytr)  # independent: the full distance table
    srt = np.sort(d, 1)
    want = np.where(d.argmin(1) == yq.numpy(), (srt[:, 1] - srt[:, 0]) / 2, 0.0)
    np.testing.assert_allclose(radius, want, rtol=0, atol=1e-12)
    assert (radius > 0).any() and (radius == 0).any()
    for eps in (0.0, 0.01, float(np.median(radius[radius > 0]))):
        assert astuteness(clf, xq, yq, eps).certified == pytest.approx(float((radius > eps).mean()))


def test_theory_classifier_outputs_are_indexed_by_label():
    """Trained on classes {0, 2, 3}: evaluate() and astuteness() agree (1.0 on its own training points)."""
    rng = np.random.default_rng(0)
    x = rng.random((30, 1, 4, 4)).astype(np.float32)
    y = np.repeat(np.array([0, 2, 3]), 10)
    clf = LipschitzClassifier(x, y)
    xt = torch.from_numpy(x).double()
    assert clf(xt).shape == (30, 4)
    res = evaluate(clf, xt, torch.from_numpy(y), eps=clf.r / 2, attacks=["pgd"], progress=False)
    ast = astuteness(clf, xt, torch.from_numpy(y), clf.r / 2)
    assert res.clean_accuracy == ast.accuracy == 1.0
    assert res.adversarial_accuracy["pgd"] == 1.0  # below r nothing can flip it (Theorem 4.2)
    assert int(clf(xt).argmax(1).eq(torch.from_numpy(y)).sum()) == 30


# ----------------------------------------------------------------------------------------------
# the pieces written out


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_nearest_two_classes_is_the_brute_force_top_two(dtype, capsys):
    rng = np.random.default_rng(3)
    scale = 255.0 if dtype == np.uint8 else 1.0
    r = (rng.integers(0, 256, (60, 12)) / (255 / scale)).astype(dtype)
    ry = np.repeat(np.array([2, 5, 7]), 20)
    q = (rng.integers(0, 256, (25, 12)) / (255 / scale)).astype(dtype)
    top = nearest_two_classes(q, r, ry, query_chunk=7)
    d, idx = brute_per_class(q, r, ry)
    order = np.argsort(d, axis=1, kind="stable")[:, :2]
    assert np.array_equal(top.dist, np.take_along_axis(d, order, 1) / scale)
    assert np.array_equal(top.index, np.take_along_axis(idx, order, 1))
    assert np.array_equal(top.label, np.array([2, 5, 7])[order]) and top.scale == scale
    assert capsys.readouterr() == ("", "")
    with pytest.raises(ValueError, match=r"^refs labels must have shape \(60,\)"):
        nearest_two_classes(q, r, ry[:5])
    with pytest.raises(ValueError, match=r"^queries must be uint8"):
        nearest_two_classes(q.astype(np.int16), r, ry)


def _astuteness_written_out(clf, x, y, eps, steps):
    """Section 4's bracket from its definitions: exact distances to each class (brute force); certified when
    right with the runner-up more than 2 eps farther; attacked by (1) a step of eps per coordinate towards the
    nearest point of the nearest wrong class and (2) PGD on the classifier (steps of 2.5 eps / steps, no random
    start), a point counting as flipped when the re-classified attack point has another label."""
    flat = x.flatten(1).numpy().astype(np.float64)
    d, idx = brute_per_class(flat, clf.refs, clf.ref_labels)
    col = np.searchsorted(clf.classes, y.numpy())
    correct = d.argmin(1) == col
    two = np.sort(d, 1)[:, :2]
    certified = correct & ((two[:, 1] - two[:, 0]) / 2 > eps)
    wrong = d.copy()
    wrong[np.arange(len(x)), col] = np.inf
    target = clf.refs[idx[np.arange(len(x)), wrong.argmin(1)]]
    x1 = np.clip(flat + np.clip(target - flat, -eps, eps), np.maximum(flat - eps, 0), np.minimum(flat + eps, 1))
    cands = [torch.from_numpy(x1).view(x.shape)]
    if eps > 0:
        cands.append(pgd(clf, x, y, eps=eps, step_size=2.5 * eps / steps, steps=steps, random_start=False))
    flipped = ~correct
    for c in cands:
        flipped = flipped | (brute_per_class(c.flatten(1).numpy(), clf.refs, clf.ref_labels)[0].argmin(1) != col)
    return correct, certified, flipped


@pytest.mark.parametrize("eps", [0.0, 0.04, 0.12, 0.3])
def test_astuteness_equals_its_definition_written_out(eps):
    rng = np.random.default_rng(5)
    xtr = rng.random((30, 1, 2, 3))
    ytr = np.repeat(np.array([0, 1, 3]), 10)
    clf = LipschitzClassifier(xtr, ytr)
    x = torch.from_numpy(rng.random((40, 1, 2, 3)))
    y = torch.from_numpy(rng.choice([0, 1, 3], 40))
    a = astuteness(clf, x, y, eps, pgd_steps=7)
    correct, certified, flipped = _astuteness_written_out(clf, x, y, eps, 7)
    assert np.array_equal(a.per_point["correct"], correct) and np.array_equal(a.per_point["certified"], certified)
    assert np.array_equal(a.per_point["flipped"], flipped)
    assert (a.eps, a.n, a.accuracy, a.certified, a.attacked) == (eps, 40, correct.mean(), certified.mean(),
                                                                (~flipped).mean())
    moved = torch.from_numpy(a.per_point["flipped"] & a.per_point["correct"])
    assert bool((a.x_adv[~moved] == x[~moved]).all())  # only flipped points moved, and each inside the ball
    assert float((a.x_adv - x).abs().max()) <= eps + 1e-12
    if eps > 0:
        assert int(moved.sum()) > 0
    default = astuteness(clf, x, y, eps)  # 20 PGD steps by default
    assert np.array_equal(default.per_point["flipped"], _astuteness_written_out(clf, x, y, eps, 20)[2])
    pixels = astuteness(clf, (x * 255).round().to(torch.uint8), y, eps, pgd_steps=7)  # uint8 pixels are / 255
    assert pixels.accuracy == float(np.mean(_astuteness_written_out(clf, (x * 255).round() / 255, y, eps, 7)[0]))


def test_lipschitz_ratios_per_pair_and_the_largest_found():
    rng = np.random.default_rng(2)
    clf = LipschitzClassifier(rng.random((20, 1, 1, 4)), np.repeat([0, 1], 10))
    x = torch.from_numpy(rng.random((6, 1, 1, 4)))
    x2 = x.clone()
    x2[0] = (x2[0] + 0.01).clamp(0, 1)
    x2[1] = (x2[1] - 0.2).clamp(0, 1)
    x2[2, 0, 0, 0] = (x2[2, 0, 0, 0] + 0.05).clamp(0, 1)
    with torch.no_grad():
        num = (clf(x) - clf(x2)).abs().amax(1)
    den = (x - x2).flatten(1).abs().amax(1)
    expect = torch.where(den > 0, num / den, torch.zeros_like(num))
    assert torch.allclose(lipschitz_ratio_inf(clf, x, x2), expect, rtol=1e-12)
    assert lipschitz_ratio_inf(clf, x, x2)[3:].tolist() == [0.0, 0.0, 0.0]  # x2 == x: 0, not NaN
    found = max_lipschitz_ratio(clf, x, 0.05, n_random=4, generator=torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)
    best = 0.0
    for i in range(4):  # uniform directions, then corners, alternately; then the attack points
        u = torch.rand(x.shape, generator=g) * 2 - 1
        u = u.sign() if i % 2 else u
        best = max(best, float(lipschitz_ratio_inf(clf, x, (x + 0.05 * u).clamp(0, 1)).max()))
    y = torch.from_numpy(clf.classes)[clf.distances(x).argmin(1)]
    best = max(best, float(lipschitz_ratio_inf(clf, x, astuteness(clf, x, y, 0.05).x_adv).max()))
    assert found == best and 0 < found <= 1 / clf.r + 1e-9


def test_the_classifier_refuses_what_it_cannot_represent():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"^x_train holds a single class; the classifier needs at least two$"):
        LipschitzClassifier(rng.random((4, 3)), np.zeros(4, int))
    with pytest.raises(ValueError, match=r"^x_train must be uint8 pixels or floats in \[0, 1\]$"):
        LipschitzClassifier(rng.random((4, 3)) * 1.5, np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match=r"^x_train must be uint8 pixels or floats in \[0, 1\]$"):
        LipschitzClassifier(rng.random((4, 3)) - 0.5, np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match=r"^x_train labels must have shape \(4,\)"):
        LipschitzClassifier(rng.random((4, 3)), np.array([0, 1]))
    twins = np.array([[0.2, 0.2], [0.2, 0.2], [0.9, 0.9]])
    with pytest.raises(ValueError, match=r"^r must be a finite number > 0, got 0 \(the training set has duplicate points "
                                         r"of different classes\)$"):
        LipschitzClassifier(twins, np.array([0, 1, 1]))
    with pytest.raises(ValueError, match=r"^r must be a finite number in \(0, inf\], got -1"):
        LipschitzClassifier(twins[1:], np.array([0, 1]), r=-1.0)
    with pytest.raises(ValueError, match=r"^r must be a finite number in \(0, inf\], got 0.0"):
        LipschitzClassifier(twins[1:], np.array([0, 1]), r=0.0)
    clf = LipschitzClassifier(rng.random((10, 1, 2, 3)), np.repeat([0, 2], 5))
    assert clf.input_shape == (1, 2, 3) and clf.r == clf.separation / 2
    with pytest.raises(ValueError, match=r"^inputs must have shape \(N, 1, 2, 3\), got \(2, 1, 3, 3\)$"):
        clf(torch.rand(2, 1, 3, 3, dtype=torch.float64))
    flat = clf(torch.rand(3, 6, dtype=torch.float64))  # flattened inputs of the same size are accepted
    assert flat.shape == (3, 3) and bool((flat[:, 1] == -2.0 / clf.r).all())  # the absent label 1 is never predicted
    x32 = torch.rand(3, 1, 2, 3, requires_grad=True)
    out = clf(x32)
    out.sum().backward()
    assert out.dtype == torch.float32 and x32.grad.dtype == torch.float32  # the input's dtype, both ways
    for bad in (torch.tensor([0, 1, 2]), torch.tensor([0, 3, 2])):  # 1: between the classes; 3: above them
        with pytest.raises(ValueError, match="^labels must be classes of the training set$"):
            astuteness(clf, torch.rand(3, 1, 2, 3, dtype=torch.float64), bad, 0.1)
    two = LipschitzClassifier(rng.random((6, 2)), np.array([0, 1, 0, 1, 0, 1]))
    assert certified_radius(two, torch.rand(4, 2, dtype=torch.float64), torch.tensor([0, 1, 0, 1])).shape == (4,)
