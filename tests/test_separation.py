from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import rll_core._kernels as K
from rll_core.checks import resolve_device
from rll_core.data import ImageDataset
from rll_core.separation import measure_separation, nearest_other_class, summarize

from .conftest import brute_nearest_other, has_cuda, requires_cuda


def _random_case(seed: int, nq: int, nr: int, dim: int, n_classes: int, vmax: int, dtype: str):
    rng = np.random.default_rng(seed)
    q = rng.integers(0, vmax + 1, size=(nq, dim), dtype=np.uint8)
    r = rng.integers(0, vmax + 1, size=(nr, dim), dtype=np.uint8)
    qy = rng.integers(0, n_classes, size=nq)
    ry = rng.integers(0, n_classes, size=nr)
    ry[:n_classes] = np.arange(n_classes)  # every class present in the references
    if dtype != "uint8":
        q = (q / np.float64(vmax)).astype(dtype)
        r = (r / np.float64(vmax)).astype(dtype)
    return q, qy, r, ry


CASES = [  # (nq, nr, dim, classes, vmax): small vmax forces many ties
    (1, 2, 1, 2, 255),
    (17, 40, 3, 2, 3),
    (64, 97, 33, 3, 255),
    (50, 200, 784, 10, 255),
    (33, 61, 20, 4, 2),
]


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("dtype", ["uint8", "float32", "float64"])
@pytest.mark.parametrize("case", CASES)
def test_test_train_matches_bruteforce(case, dtype, backend):
    q, qy, r, ry = _random_case(hash(case) % 1000, *case, dtype=dtype)
    res = nearest_other_class(q, qy, r, ry, backend=backend)
    d_ref, i_ref = brute_nearest_other(q, qy, r, ry)
    scale = 255.0 if dtype == "uint8" else 1.0
    np.testing.assert_array_equal(res.raw_distance.astype(np.float64), d_ref)
    np.testing.assert_array_equal(res.index, i_ref)
    np.testing.assert_array_equal(res.dist, d_ref / scale)


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("case", CASES[1:])
def test_train_train_matches_bruteforce(case, backend):
    x, y, _, _ = _random_case(7, case[0] + case[1], case[3], case[2], case[3], case[4], "uint8")
    y[: case[3]] = np.arange(case[3])
    res = nearest_other_class(x, y, backend=backend)
    d_ref, i_ref = brute_nearest_other(x, y, x, y)
    np.testing.assert_array_equal(res.raw_distance, d_ref)
    np.testing.assert_array_equal(res.index, i_ref)
    assert (y[res.index] != y).all()


def test_image_shaped_input_and_torch_tensors():
    q, qy, r, ry = _random_case(3, 20, 50, 2 * 4 * 4, 3, 255, "uint8")
    a = nearest_other_class(torch.from_numpy(q.reshape(20, 2, 4, 4)), torch.from_numpy(qy),
                            r.reshape(50, 2, 4, 4), ry)
    d_ref, i_ref = brute_nearest_other(q, qy, r, ry)
    np.testing.assert_array_equal(a.raw_distance, d_ref)
    np.testing.assert_array_equal(a.index, i_ref)


def test_class_with_one_point_and_duplicates():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(30, 10), dtype=np.uint8)
    y = np.array([0] * 14 + [1] * 15 + [2])  # class 2 has a single point
    x[5] = x[20]  # the same image in classes 0 and 1: distance 0 both ways
    x[6] = x[7]  # the same image twice in class 0: must not count
    res = nearest_other_class(x, y)
    d_ref, i_ref = brute_nearest_other(x, y, x, y)
    np.testing.assert_array_equal(res.raw_distance, d_ref)
    np.testing.assert_array_equal(res.index, i_ref)
    assert res.raw_distance[5] == 0 and res.index[5] == 20 and res.raw_distance[20] == 0
    assert res.raw_distance[6] > 0


def test_query_equal_to_reference_point():
    rng = np.random.default_rng(1)
    r = rng.integers(0, 256, size=(40, 12), dtype=np.uint8)
    ry = np.arange(40) % 4
    q = r[[3, 10]].copy()
    qy = np.array([ry[3], (ry[10] + 1) % 4])  # first: same class as its copy, second: another class
    res = nearest_other_class(q, qy, r, ry)
    assert res.raw_distance[0] > 0 and ry[res.index[0]] != qy[0]
    assert res.raw_distance[1] == 0 and res.index[1] == 10


def test_ties_resolve_to_smallest_index():
    r = np.array([[0], [5], [10], [5], [10]], dtype=np.uint8)
    ry = np.array([0, 1, 1, 1, 1])
    q = np.array([[0], [0]], dtype=np.uint8)
    res = nearest_other_class(q, np.array([0, 0]), r, ry)
    np.testing.assert_array_equal(res.raw_distance, [5, 5])
    np.testing.assert_array_equal(res.index, [1, 1])
    torch_res = nearest_other_class(q, np.array([0, 0]), r, ry, backend="torch")
    np.testing.assert_array_equal(torch_res.index, [1, 1])


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_chunk_size_does_not_change_results(chunk):
    q, qy, r, ry = _random_case(11, 130, 150, 40, 5, 6, "uint8")
    d_ref, i_ref = brute_nearest_other(q, qy, r, ry)
    d_self, i_self = brute_nearest_other(r, ry, r, ry)
    for backend in ("numba", "torch"):
        res = nearest_other_class(q, qy, r, ry, backend=backend, query_chunk=chunk)
        np.testing.assert_array_equal(res.raw_distance, d_ref)
        np.testing.assert_array_equal(res.index, i_ref)
        self_res = nearest_other_class(r, ry, backend=backend, query_chunk=chunk)  # train-train
        np.testing.assert_array_equal(self_res.raw_distance, d_self)
        np.testing.assert_array_equal(self_res.index, i_self)


def test_torch_kernel_tile_size_does_not_change_results():
    q, qy, r, ry = _random_case(12, 40, 90, 70, 3, 4, "uint8")
    out = []
    for tile in (1, 5000, 1 << 26):
        bd = torch.full((40,), K.UINT8_SENTINEL, dtype=torch.int32)
        bi = torch.full((40,), -1, dtype=torch.int64)
        K.torch_nearest(torch.from_numpy(q), torch.from_numpy(qy), torch.from_numpy(r), torch.from_numpy(ry),
                        bd, bi, tile_bytes=tile)
        out.append((bd.numpy().copy(), bi.numpy().copy()))
    d_ref, i_ref = brute_nearest_other(q, qy, r, ry)
    for d, i in out:
        np.testing.assert_array_equal(d, d_ref)
        np.testing.assert_array_equal(i, i_ref)


@pytest.mark.parametrize("qblock,kblock", [(1, 1), (3, 5), (16, 16), (64, 1000)])
def test_numba_block_sizes_do_not_change_results(qblock, kblock):
    q, qy, r, ry = _random_case(13, 45, 70, 29, 3, 5, "uint8")
    bd = np.full(45, K.UINT8_SENTINEL, np.int32)
    bi = np.full(45, -1, np.int64)
    K.numba_nearest(q, qy, r, ry, bd, bi, qblock=qblock, kblock=kblock)
    d_ref, i_ref = brute_nearest_other(q, qy, r, ry)
    np.testing.assert_array_equal(bd, d_ref)
    np.testing.assert_array_equal(bi, i_ref)


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_inputs_give_clear_errors():
    x = np.zeros((5, 4), np.uint8)
    y = np.array([0, 1, 0, 1, 0])
    with pytest.raises(ValueError, match=r"labels must have shape \(5,\)"):
        nearest_other_class(x, y[:4])
    with pytest.raises(ValueError, match="uint8 .* or float32/float64, got int32"):
        nearest_other_class(x.astype(np.int32), y)
    with pytest.raises(ValueError, match="labels must be integers"):
        nearest_other_class(x, y.astype(np.float32))
    with pytest.raises(ValueError, match="single class"):
        nearest_other_class(x, np.zeros(5, np.int64))
    with pytest.raises(ValueError, match="features per point"):
        nearest_other_class(x, y, np.zeros((3, 5), np.uint8), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="same dtype"):
        nearest_other_class(x, y, np.zeros((3, 4), np.float32), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="shape \\(N, D\\)"):
        nearest_other_class(np.zeros(5, np.uint8), y)
    with pytest.raises(ValueError, match="NaN"):
        nearest_other_class(np.full((5, 4), np.nan, np.float32), y)
    with pytest.raises(ValueError, match="unknown backend"):
        nearest_other_class(x, y, backend="faiss")
    with pytest.raises(ValueError, match="refs given without ref_labels"):
        nearest_other_class(x, y, x)
    with pytest.raises(ValueError, match="query_chunk"):
        nearest_other_class(x, y, query_chunk=0)


def test_single_class_refs_allowed_for_other_class_queries():
    r = np.arange(12, dtype=np.uint8).reshape(4, 3)
    q = np.array([[0, 0, 0]], np.uint8)
    res = nearest_other_class(q, np.array([1]), r, np.zeros(4, np.int64))
    assert res.raw_distance[0] == 2 and res.index[0] == 0


@pytest.mark.skipif(has_cuda, reason="checks the error raised without a GPU")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


# ---------------------------------------------------------------------------------------------- GPU / Triton


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_gpu_matches_cpu_bit_for_bit(backend, fmnist):
    if backend == "triton":
        pytest.importorskip("triton")
    train, test = fmnist
    tr, te = train.subset(4000, seed=0), test.subset(1000, seed=0)
    for q, qy, r, ry in ((te.flat(), te.labels, tr.flat(), tr.labels), (tr.flat(), tr.labels, None, None)):
        cpu = nearest_other_class(q, qy, r, ry, device="cpu")
        gpu = nearest_other_class(q, qy, r, ry, device="cuda", backend=backend)
        np.testing.assert_array_equal(cpu.raw_distance, gpu.raw_distance)
        np.testing.assert_array_equal(cpu.index, gpu.index)


def test_triton_kernel_in_interpreter_matches_bruteforce(tmp_path):
    """The CUDA kernel's logic, run by Triton's CPU interpreter (needs TRITON_INTERPRET before import)."""
    pytest.importorskip("triton")
    script = textwrap.dedent(
        """
        import numpy as np, torch
        from rll_core.separation import nearest_other_class
        from rll_core._triton import triton_nearest
        from tests.conftest import brute_nearest_other
        rng = np.random.default_rng(0)
        # the last case sorts the reference labels, so whole reference slices hold one class only and
        # some queries find no candidate in some slices (the merge must skip those)
        for nq, nr, dim, ncls, vmax, bq, br, splits in [(37, 91, 20, 3, 7, 16, 16, 3),
                                                          (5, 300, 7, 2, 3, 16, 32, None),
                                                          (64, 64, 33, 4, 255, 16, 16, 1),
                                                          (20, 96, 6, 2, 9, 16, 16, 4)]:
            q = rng.integers(0, vmax + 1, (nq, dim), dtype=np.uint8)
            r = rng.integers(0, vmax + 1, (nr, dim), dtype=np.uint8)
            qy, ry = rng.integers(0, ncls, nq), rng.integers(0, ncls, nr)
            ry[:ncls] = np.arange(ncls)
            if splits == 4:
                ry = np.sort(ry)
            d_ref, i_ref = brute_nearest_other(q, qy, r, ry)
            bd = torch.full((nq,), 256, dtype=torch.int32)
            bi = torch.full((nq,), -1, dtype=torch.int64)
            triton_nearest(torch.from_numpy(q), torch.from_numpy(qy), torch.from_numpy(r), torch.from_numpy(ry),
                           bd, bi, bq=bq, br=br, splits=splits)
            assert (bd.numpy() == d_ref).all() and (bi.numpy() == i_ref).all(), (nq, nr, dim)
        # through the public API, train-train with several query chunks
        x = rng.integers(0, 4, (70, 9), dtype=np.uint8); y = rng.integers(0, 3, 70)
        res = nearest_other_class(x, y, backend="triton", query_chunk=30)
        d_ref, i_ref = brute_nearest_other(x, y, x, y)
        assert (res.raw_distance == d_ref).all() and (res.index == i_ref).all()
        print("TRITON-INTERPRETER-OK")
        """
    )
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "TRITON-INTERPRETER-OK" in proc.stdout


def test_triton_on_cpu_without_interpreter_is_refused(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        nearest_other_class(np.zeros((2, 2), np.uint8), np.array([0, 1]), backend="triton", device="cpu")
    with pytest.raises(ValueError, match="uint8"):
        nearest_other_class(np.zeros((2, 2), np.float32), np.array([0, 1]), backend="triton", device="cpu")


# ---------------------------------------------------------------------------------------------- cache / resume


class Interrupted(Exception):
    pass


def test_cache_makes_rerun_instant_and_resume_continues(tmp_path, monkeypatch):
    q, qy, r, ry = _random_case(21, 100, 120, 16, 4, 255, "uint8")
    d_ref, i_ref = brute_nearest_other(q, qy, r, ry)
    calls = []
    real = K.numba_nearest_prefix  # the uint8 CPU kernel
    interrupt_at = [3]

    def flaky(qc, *args, **kw):
        calls.append(len(qc))
        if len(calls) == interrupt_at[0]:
            raise Interrupted("simulated interruption")
        return real(qc, *args, **kw)

    import rll_core.separation.search as S

    monkeypatch.setattr(S, "numba_nearest_prefix", flaky)
    with pytest.raises(Interrupted):
        nearest_other_class(q, qy, r, ry, cache_dir=tmp_path, query_chunk=30)
    assert len(list(tmp_path.glob("*.partial.npz"))) == 1
    assert calls == [30, 30, 30]
    calls.clear()
    interrupt_at[0] = -1
    res = nearest_other_class(q, qy, r, ry, cache_dir=tmp_path, query_chunk=30)
    assert calls == [30, 10], "the resumed run must start at the first unfinished chunk"
    np.testing.assert_array_equal(res.raw_distance, d_ref)
    np.testing.assert_array_equal(res.index, i_ref)
    assert not list(tmp_path.glob("*.partial.npz"))
    assert len(list(tmp_path.glob("nearest-*.json"))) == 1

    calls.clear()
    again = nearest_other_class(q, qy, r, ry, cache_dir=tmp_path, query_chunk=30)
    assert calls == []
    assert again.cached and not res.cached
    np.testing.assert_array_equal(again.index, i_ref)

    # different data -> different cache entry, computed afresh
    q2 = q.copy()
    q2[0, 0] ^= 1
    nearest_other_class(q2, qy, r, ry, cache_dir=tmp_path, query_chunk=30)
    assert len(calls) == 4
    assert len(list(tmp_path.glob("nearest-*.npz"))) == 2


# ---------------------------------------------------------------------------------------------- summaries


def test_summarize_matches_numpy():
    d = np.random.default_rng(0).random(1001)
    s = summarize(d, percentiles=(5, 50, 95))
    assert s.min == d.min() and s.max == d.max() and s.n == 1001
    assert s.mean == pytest.approx(d.mean()) and s.median == pytest.approx(np.median(d))
    assert s.percentiles[95.0] == pytest.approx(np.percentile(d, 95))
    with pytest.raises(ValueError):
        summarize(np.array([]))


def _blobs(n_per_class: int, gap: int, seed: int) -> ImageDataset:
    """Two classes of 1x2x2 images with pixels in [0, 50] and [50 + gap, 100 + gap]: the train-train
    distance is known to be at least `gap`, and exactly `gap` when both extremes are present."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 51, size=(n_per_class, 1, 2, 2))
    b = rng.integers(50 + gap, 101 + gap, size=(n_per_class, 1, 2, 2))
    a[0] = 50
    b[0] = 50 + gap
    x = np.concatenate([a, b]).astype(np.uint8)
    y = np.repeat([0, 1], n_per_class).astype(np.int64)
    return ImageDataset("blobs", "train", x, y)


def test_measure_separation_on_data_with_known_separation():
    train = _blobs(40, gap=60, seed=0)
    test = _blobs(10, gap=20, seed=1)
    res = measure_separation(train, test, eps=0.1)
    rep = res.report
    assert rep.train_train.min == pytest.approx(60 / 255)
    assert rep.r_separation == pytest.approx(30 / 255)
    assert rep.frac_train_within_2eps == 0.0
    d_ref, _ = brute_nearest_other(test.flat(), test.labels, train.flat(), train.labels)
    assert rep.test_train.min == pytest.approx(d_ref.min() / 255)
    assert rep.frac_test_within_2eps == pytest.approx(float((d_ref / 255 < 0.2).mean()))
    row = rep.table1_row()
    assert row["separated_at_eps"] is True and row["2eps"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="no default eps"):
        measure_separation(train)


@pytest.mark.parametrize("prefix,chunk,qblock,dim", [(1, 1, 1, 29), (3, 7, 5, 29), (40, 64, 16, 70),
                                                     (200, 4096, 1000, 29), (64, 3, 2, 96)])
def test_prefix_kernel_sizes_do_not_change_results(prefix, chunk, qblock, dim):
    """The SIMD-filter kernel against brute force, with few grey levels (many ties across classes, so the
    smallest-original-index rule is exercised across class segments and chunks), every prefix / chunk /
    query-block size, and dimensions below, between and at multiples of the 32-byte SIMD block."""
    q, qy, r, ry = _random_case(14, 45, 170, dim, 4, 4, "uint8")
    order = np.random.default_rng(0).permutation(dim)  # any coordinate order gives the same result
    refs = K.PrefixRefs(r, ry, order, prefix=prefix)
    bd = np.full(45, K.UINT8_SENTINEL, np.int32)
    bi = np.full(45, -1, np.int64)
    K.numba_nearest_prefix(refs.queries(q), qy, refs, bd, bi, chunk=chunk, qblock=qblock)
    d_ref, i_ref = brute_nearest_other(q, qy, r, ry)
    np.testing.assert_array_equal(bd, d_ref)
    np.testing.assert_array_equal(bi, i_ref)


def test_prefix_kernel_ties_go_to_the_smallest_index_across_classes():
    """Every reference at the same distance: the answer is the smallest index of another class, although
    the kernel visits classes in label order (class 0's segment after class 2's smaller indices)."""
    r = np.full((9, 40), 100, np.uint8)
    r[:, 0] = 0  # every query-reference pair differs by exactly 100 on coordinate 0
    ry = np.array([2, 0, 2, 1, 0, 1, 2, 0, 1])
    q = np.full((3, 40), 100, np.uint8)
    qy = np.array([0, 1, 2])
    refs = K.PrefixRefs(r, ry, np.arange(40))
    bd = np.full(3, K.UINT8_SENTINEL, np.int32)
    bi = np.full(3, -1, np.int64)
    K.numba_nearest_prefix(refs.queries(q), qy, refs, bd, bi)
    np.testing.assert_array_equal(bd, [100, 100, 100])
    np.testing.assert_array_equal(bi, [0, 0, 1])


@pytest.mark.parametrize("capability", [80, 90])
def test_triton_kernel_compiles_ahead_of_time_for_real_gpus_without_spills(capability):
    """The CUDA kernel at the host code's block sizes, compiled for sm_80 (A100) and sm_90 (H100/H200) on
    this CPU-only machine: it must compile and fit in registers (no local memory, no stack).  That it is
    right on the device is the GPU tests' job."""
    pytest.importorskip("triton")
    import inspect

    from rll_core._triton import BQ, BR, NUM_WARPS, compile_report, triton_nearest

    rep = compile_report(capability)
    assert rep["capability"] == capability and rep["cubin_bytes"] > 10_000
    assert rep["local"] == 0 and rep["stack"] == 0, rep  # a register spill shows as local memory
    assert 0 < rep["registers"] <= 255, rep
    launch = inspect.signature(triton_nearest).parameters  # the sizes compiled are the ones launched
    assert (launch["bq"].default, launch["br"].default, launch["num_warps"].default) == (BQ, BR, NUM_WARPS)


def _sharded_worker(rank: int, port: int, out: str, cache: str, data: dict) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from rll_core.checks import join_process_group, leave_process_group

    _, world, _, opened = join_process_group()
    assert world == 2 and opened
    try:
        tt = nearest_other_class(data["x"], data["y"], cache_dir=cache)
        te = nearest_other_class(data["q"], data["qy"], data["x"], data["y"], cache_dir=cache)
        fl = nearest_other_class(data["xf"], data["y"], backend="torch", device="cpu")
        again = nearest_other_class(data["x"], data["y"], cache_dir=cache)  # each rank's shard: from its cache
    finally:
        leave_process_group(opened)
    np.savez(f"{out}-{rank}.npz", tt_d=tt.raw_distance, tt_i=tt.index, te_d=te.raw_distance, te_i=te.index,
             fl_d=fl.raw_distance, fl_i=fl.index, again_i=again.index, cached=np.array(again.cached))


def test_the_search_sharded_over_two_gloo_processes_gives_the_same_bits(tmp_path):
    import socket

    g = np.random.default_rng(5)
    x = g.integers(0, 4, (301, 12), dtype=np.uint8) * 60  # few grey levels: many ties for the index rule
    y = g.integers(0, 3, 301)
    y[:150] = 0  # the first rank's shard is nearly one class: many of its queries find nothing there
    data = {"x": x, "y": y, "q": g.integers(0, 4, (57, 12), dtype=np.uint8) * 60, "qy": g.integers(0, 3, 57),
            "xf": (x / 255).astype(np.float32)}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "shard")
    torch.multiprocessing.spawn(_sharded_worker, args=(port, out, str(tmp_path / "cache"), data), nprocs=2, join=True)
    one = {"tt": nearest_other_class(x, y), "te": nearest_other_class(data["q"], data["qy"], x, y),
           "fl": nearest_other_class(data["xf"], y, backend="torch", device="cpu")}
    for rank in (0, 1):
        got = np.load(f"{out}-{rank}.npz")
        for k, ref in one.items():
            np.testing.assert_array_equal(got[f"{k}_d"], ref.raw_distance)
            np.testing.assert_array_equal(got[f"{k}_i"], ref.index)
        np.testing.assert_array_equal(got["again_i"], one["tt"].index)
        assert bool(got["cached"])  # the second search read each rank's shard back
    assert len(list((tmp_path / "cache").glob("nearest-*.json"))) == 4  # one entry per rank and search


def test_measure_separation_without_a_test_set(fmnist):
    train_set = fmnist[0].subset(600, seed=3)
    res = measure_separation(train_set, None, device="cpu")
    assert res.test_train is None and res.report.test_train is None and res.report.n_test == 0
    d, _ = brute_nearest_other(train_set.flat(), train_set.labels, train_set.flat(), train_set.labels)
    assert res.report.train_train.min == pytest.approx(d.min() / 255)
