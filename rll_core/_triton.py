"""Triton kernel for the exact nearest-other-class L-inf search on uint8 data (CUDA).

Each program owns ``BQ`` queries and one contiguous slice of the references (the slices split the
reference set so that small query sets still fill the GPU).  It walks its slice in ``BR`` tiles,
accumulating ``max_k |q_k - r_k|`` one coordinate at a time from the transposed data (coalesced
loads, a (BQ, BR) int32 tile in registers), masks same-class pairs, and keeps the running
(distance, smallest index) minimum.  The host merges the
slices lexicographically on (distance, index), so ties resolve to the smallest index exactly as the
CPU kernels do.

With ``TRITON_INTERPRET=1`` set before import, the same kernel runs on CPU tensors (slowly): the
test-suite uses that to check it against the numpy reference on machines without a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_BIG = 1 << 30


@triton.jit
def _linf_nearest_kernel(qt_ptr, qy_ptr, rt_ptr, ry_ptr, out_d_ptr, out_i_ptr,
                         nq, nr, dim, refs_per_split,
                         BQ: tl.constexpr, BR: tl.constexpr):  # pragma: no cover
    """``qt`` (dim, nq) and ``rt`` (dim, nr) are the transposed uint8 data, so every coordinate step
    loads two short contiguous vectors and updates a (BQ, BR) int32 tile: a (max, |a-b|) "matmul"."""
    pid_q = tl.program_id(0)
    pid_s = tl.program_id(1)
    offs_q = pid_q * BQ + tl.arange(0, BQ)
    qmask = offs_q < nq
    qy = tl.load(qy_ptr + offs_q, mask=qmask, other=-1)
    best_d = tl.full((BQ,), 1 << 30, tl.int32)
    best_i = tl.full((BQ,), -1, tl.int32)
    r_start = pid_s * refs_per_split
    r_end = tl.minimum(r_start + refs_per_split, nr)
    for r0 in range(r_start, r_end, BR):
        offs_r = r0 + tl.arange(0, BR)
        rmask = offs_r < r_end
        ry = tl.load(ry_ptr + offs_r, mask=rmask, other=-2)
        acc = tl.zeros((BQ, BR), dtype=tl.int32)
        for k in range(0, dim):
            qk = tl.load(qt_ptr + k * nq + offs_q, mask=qmask, other=0).to(tl.int32)
            rk = tl.load(rt_ptr + k * nr + offs_r, mask=rmask, other=0).to(tl.int32)
            acc = tl.maximum(acc, tl.abs(qk[:, None] - rk[None, :]))
        invalid = (qy[:, None] == ry[None, :]) | (rmask[None, :] == 0)
        acc = tl.where(invalid, 1 << 30, acc)
        tile_min = tl.min(acc, axis=1)
        cand = tl.where(acc == tile_min[:, None], offs_r[None, :], 2147483647)
        tile_arg = tl.min(cand, axis=1)
        upd = tile_min < best_d
        best_d = tl.where(upd, tile_min, best_d)
        best_i = tl.where(upd, tile_arg, best_i)
    tl.store(out_d_ptr + pid_s * nq + offs_q, best_d, mask=qmask)
    tl.store(out_i_ptr + pid_s * nq + offs_q, best_i, mask=qmask)


#: The block sizes and warps the host code launches the kernel with (``triton_nearest``'s defaults): what
#: :func:`compile_report` compiles ahead of time.
BQ, BR, NUM_WARPS = 64, 64, 4

_SIGNATURE = {"qt_ptr": "*u8", "qy_ptr": "*i32", "rt_ptr": "*u8", "ry_ptr": "*i32", "out_d_ptr": "*i32",
              "out_i_ptr": "*i32", "nq": "i32", "nr": "i32", "dim": "i32", "refs_per_split": "i32",
              "BQ": "constexpr", "BR": "constexpr"}


def compile_report(capability: int, bq: int = BQ, br: int = BR, num_warps: int = NUM_WARPS) -> dict[str, int]:
    """Compile the kernel ahead of time for CUDA compute ``capability`` (80: A100, 90: H100/H200) on any
    machine, no GPU needed, and read the cubin's resource use with the ``cuobjdump`` Triton ships:
    ``registers``, ``stack`` and ``local`` bytes (a register spill shows as local memory), ``cubin_bytes``.

    This proves the kernel compiles for the target and fits its registers; not that it runs or is right
    there (the GPU tests check that, on a GPU)."""
    import re
    import subprocess
    import tempfile
    from pathlib import Path

    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    src = ASTSource(fn=_linf_nearest_kernel, signature=_SIGNATURE, constexprs={"BQ": bq, "BR": br})
    compiled = triton.compile(src, target=GPUTarget("cuda", capability, 32), options={"num_warps": num_warps})
    cubin = compiled.asm["cubin"]
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "kernel.cubin"
        path.write_bytes(cubin)
        out = subprocess.run([str(tool), "-res-usage", str(path)], capture_output=True, text=True, check=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", out)
    if m is None:
        raise RuntimeError(f"no resource usage in cuobjdump's output: {out!r}")
    regs, stack, shared, local = map(int, m.groups())
    return {"capability": capability, "registers": regs, "stack": stack, "shared": shared, "local": local,
            "cubin_bytes": len(cubin)}


def triton_nearest(q: torch.Tensor, qy: torch.Tensor, r: torch.Tensor, ry: torch.Tensor,
                   best_d: torch.Tensor, best_i: torch.Tensor, bq: int = BQ, br: int = BR,
                   splits: int | None = None, num_warps: int = NUM_WARPS) -> None:
    """Update ``best_d`` (int32) / ``best_i`` (int64) for uint8 ``q`` (nq, D) against ``r`` (nr, D)."""
    if q.dtype != torch.uint8 or r.dtype != torch.uint8:
        raise TypeError("the Triton kernel takes uint8 data; use backend='torch' for floats")
    if r.shape[0] >= 2**31 - 1:
        raise ValueError("the Triton kernel indexes references with int32")
    qt, rt = q.t().contiguous(), r.t().contiguous()
    qy, ry = qy.to(torch.int32).contiguous(), ry.to(torch.int32).contiguous()
    nq, dim = q.shape
    nr = r.shape[0]
    n_qblocks = triton.cdiv(nq, bq)
    if splits is None:
        sms = torch.cuda.get_device_properties(q.device).multi_processor_count if q.is_cuda else 1
        splits = max(1, min(triton.cdiv(nr, br), triton.cdiv(4 * sms, n_qblocks)))
    refs_per_split = triton.cdiv(triton.cdiv(nr, splits), br) * br
    splits = triton.cdiv(nr, refs_per_split)
    out_d = torch.empty((splits, nq), dtype=torch.int32, device=q.device)
    out_i = torch.empty((splits, nq), dtype=torch.int32, device=q.device)
    _linf_nearest_kernel[(n_qblocks, splits)](qt, qy, rt, ry, out_d, out_i, nq, nr, dim, refs_per_split,
                                              BQ=bq, BR=br, num_warps=num_warps)
    # lexicographic min over (distance, index) across the reference slices and the running best
    key = out_d.to(torch.int64) * (nr + 1) + out_i.to(torch.int64).clamp_min(0)
    key = torch.where(out_i < 0, torch.iinfo(torch.int64).max, key)
    kmin = key.min(dim=0).values
    found = kmin != torch.iinfo(torch.int64).max
    d_new = torch.where(found, kmin // (nr + 1), torch.full_like(kmin, _BIG))
    i_new = kmin % (nr + 1)
    better = found & (d_new < best_d.to(torch.int64))
    best_d[better] = d_new[better].to(best_d.dtype)
    best_i[better] = i_new[better].to(best_i.dtype)
