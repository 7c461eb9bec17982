"""The routed experts of one decode token as two Triton GEMV kernels that read the chosen experts'
rows in place.

The plain-torch form (`index_select` of the k chosen experts' weights, then `bmm`) copies those
weights once more before reading them, and torch's index_select over slices this large runs well
under copy bandwidth: it was the largest kernel family of a batch-1 decode step. Here each program
takes one chosen expert and a block of output rows and streams that expert's rows once, fp32
accumulation. Used by `optimem.model.engine` on CUDA; CPUs keep the torch form (tests compare the two
on CUDA, tests/test_decoding.py).
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU builds of torch ship no triton
    triton = None


def available() -> bool:
    return triton is not None


if triton is not None:

    @triton.jit
    def _expert_gemv(W, X, IDX, OUT, N, K, stride_we, stride_wn, stride_xe, BLOCK_N: tl.constexpr,
                     BLOCK_K: tl.constexpr):
        """OUT[j, n] = sum_k W[IDX[j], n, k] * X[j * stride_xe + k] for the j-th chosen expert."""
        j = tl.program_id(0)
        pid_n = tl.program_id(1)
        e = tl.load(IDX + j).to(tl.int64)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        acc = tl.zeros([BLOCK_N], dtype=tl.float32)
        base = W + e * stride_we
        for k0 in range(0, K, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            km = offs_k < K
            w = tl.load(base + offs_n[:, None] * stride_wn + offs_k[None, :], mask=(offs_n[:, None] < N) & km[None, :],
                        other=0.0)
            x = tl.load(X + j * stride_xe + offs_k, mask=km, other=0.0)
            acc += tl.sum(w.to(tl.float32) * x.to(tl.float32)[None, :], axis=1)
        tl.store(OUT + j * N + offs_n, acc.to(OUT.dtype.element_ty), mask=offs_n < N)


def expert_gemv(weight: torch.Tensor, x: torch.Tensor, idx: torch.Tensor, *, shared_input: bool) -> torch.Tensor:
    """weight [E, N, K], idx [k] (device), x [K] (shared_input) or [k, K] -> [k, N] in weight's dtype."""
    E, N, K = weight.shape
    k = idx.shape[0]
    out = torch.empty(k, N, device=weight.device, dtype=weight.dtype)
    block_n, block_k = 16, 256
    _expert_gemv[(k, triton.cdiv(N, block_n))](
        weight, x, idx, out, N, K, weight.stride(0), weight.stride(1), 0 if shared_input else x.stride(0),
        BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4)
    return out
