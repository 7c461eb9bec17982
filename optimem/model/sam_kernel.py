"""Triton kernels for SAM's blocks (forward only, inference): attention with the decomposed
relative-position bias added inside the loop at the real head dim (64), and the MLP's first matmul
with its exact GELU.

SAM's scores are scale·q·k + rel_h[q, kv_row] + rel_w[q, kv_col] for a key at (kv_row, kv_col),
where rel_h[q, r] = q·table_h[q_row - r + size - 1] (and the same for columns). The fused SDPA trick
(`sam_attention.FusedRelPosSamAttention`) widens the heads to carry those terms (head dim 192 in a
1024-px global block, 3x the FLOPs) and needs the two factors built by einsums over a copy of q.
Here both kernels read q, k and v straight from the qkv projection's [b, n, 3C] output and write
[b, n, C] for the output projection, so no head split, permute or partition copies remain, and
compute the factors themselves (`_rel_factors`: one small dot of q against every relative distance,
then a gather per query).

- `sam_global_attention` (the 4 global blocks): the key loop walks the grid one row at a time. The
  column term is the same [BLOCK_M, W] tile for every row, held in registers; the row term is one
  value per query and row, read from a scratch tile each step. Online softmax in fp32 (exp2).
- `sam_window_attention` (the 8 windowed blocks, 14x14): over the unpadded grid. The reference pads
  64 -> 70 per side at 1024 px, projects the padding (qkv of zeros = the bias), partitions, attends
  and crops; here padded queries are skipped and padded keys/values are the qkv bias, so the result
  is the reference's with a fifth less projection work and no copies. Both bias terms are selected
  by small one-hot dots (K = 16) on tensor cores.
- `linear_gelu`: gelu(x @ Wᵀ + b), the exact erf GELU applied to the fp32 accumulator before the one
  store (persistent, TMA tiles on Hopper; a pointer-based kernel elsewhere).

`triton` is needed (it ships with CUDA builds of torch). Tests run the kernels on CUDA
(tests/test_sam_attention.py); off-GPU they were checked by hand under TRITON_INTERPRET=1 in a venv
with triton installed (the TMA path needs a GPU), which CI's CPU build of torch does not have.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU builds of torch ship no triton: the kernel is simply unavailable there
    triton = None


def available() -> bool:
    return triton is not None


if triton is not None:

    @triton.jit
    def _rel_factors(q, TABLE, pos, size, HEAD_DIM: tl.constexpr, REL: tl.constexpr, WIDTH: tl.constexpr,
                     PRECISION: tl.constexpr):
        """One factor of the decomposed bias for a block of queries: [BLOCK_M, WIDTH] with
        out[i, r] = q_i·table[pos_i - r + size - 1] (the reference's get_rel_pos + einsum), in q's
        dtype as the reference's einsum rounds it. TABLE: [REL, HEAD_DIM], one row per relative
        distance (zero rows past 2·size - 1). One small dot gives q_i·table[d] for every d, a gather
        picks each query's distances; columns r >= size are garbage the callers mask."""
        offs_rel = tl.arange(0, REL)
        offs_d = tl.arange(0, HEAD_DIM)
        per_distance = tl.dot(q, tl.load(TABLE + offs_rel[None, :] * HEAD_DIM + offs_d[:, None]),
                              input_precision=PRECISION)
        dist = pos[:, None] - tl.arange(0, WIDTH)[None, :] + size - 1
        return tl.gather(per_distance.to(q.dtype), tl.minimum(tl.maximum(dist, 0), REL - 1), 1)

    @triton.jit
    def _sam_global_attention_fwd(
        QKV, TH, TW, ROWS, O,
        s_qb, s_qn,  # qkv [b, H*W, 3C], channels contiguous
        s_ob, s_on,  # out [b, H*W, C], channels contiguous
        heads, n_ctx, n_pad, grid_h, grid_w, channels, scale_log2,
        HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_W: tl.constexpr, REL: tl.constexpr,
        EVEN: tl.constexpr, PRECISION: tl.constexpr,
    ):
        pid_m = tl.program_id(0)
        bh = tl.program_id(1)
        b = bh // heads
        h = bh % heads
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_w = tl.arange(0, BLOCK_W)
        offs_d = tl.arange(0, HEAD_DIM)
        m_ok = offs_m < n_ctx
        w_ok = offs_w < grid_w
        q_ptrs = QKV + b * s_qb + offs_m[:, None] * s_qn + h * HEAD_DIM + offs_d[None, :]
        if EVEN:  # grid width a power of two and whole query blocks: no masks in the loop
            q = tl.load(q_ptrs)
        else:
            q = tl.load(q_ptrs, mask=m_ok[:, None], other=0.0)

        # the column term is the same [BLOCK_M, W] tile for every key row: kept in registers, -inf on
        # the padded key columns (no weight there)
        col = _rel_factors(q, TW, offs_m % grid_w, grid_w, HEAD_DIM, REL, BLOCK_W, PRECISION)
        col = tl.where(w_ok[None, :], col.to(tl.float32) * 1.4426950408889634, float("-inf"))
        # the row term is one value per query and key row; the loop reads column `row` of it, which a
        # register tile cannot give, so it goes through a per-program scratch tile (L2-resident)
        rows = _rel_factors(q, TH, offs_m // grid_w, grid_h, HEAD_DIM, REL, BLOCK_W, PRECISION)
        row_base = ROWS + (bh * n_pad + offs_m) * BLOCK_W
        tl.store(row_base[:, None] + offs_w[None, :], rows)
        tl.debug_barrier()

        k_base = QKV + b * s_qb + channels + h * HEAD_DIM + offs_d[:, None]
        v_base = QKV + b * s_qb + 2 * channels + h * HEAD_DIM + offs_d[None, :]
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        for row in range(0, grid_h):
            keys = row * grid_w + offs_w
            if EVEN:
                k = tl.load(k_base + keys[None, :] * s_qn)
                v = tl.load(v_base + keys[:, None] * s_qn)
            else:
                k = tl.load(k_base + keys[None, :] * s_qn, mask=w_ok[None, :], other=0.0)
                v = tl.load(v_base + keys[:, None] * s_qn, mask=w_ok[:, None], other=0.0)
            rh = tl.load(row_base + row).to(tl.float32) * 1.4426950408889634
            s = tl.dot(q, k, input_precision=PRECISION) * scale_log2 + col + rh[:, None]
            m_new = tl.maximum(m_i, tl.max(s, 1))
            p = tl.math.exp2(s - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
            m_i = m_new
        acc = acc / l_i[:, None]
        o_ptrs = O + b * s_ob + offs_m[:, None] * s_on + h * HEAD_DIM + offs_d[None, :]
        if EVEN:
            tl.store(o_ptrs, acc.to(O.dtype.element_ty))
        else:
            tl.store(o_ptrs, acc.to(O.dtype.element_ty), mask=m_ok[:, None])

    @triton.jit
    def _sam_window_attention_fwd(
        QKV, BIAS, TH, TW, O,
        s_qb, s_qn,  # qkv [b, H*W, 3C], channels contiguous
        s_ob, s_on,  # out [b, H*W, C], channels contiguous
        heads, grid_h, grid_w, n_wy, n_wx, channels, scale_log2,
        WS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, KEY_ROWS: tl.constexpr,
        BLOCK_N: tl.constexpr, REL: tl.constexpr, RW: tl.constexpr, PRECISION: tl.constexpr,
    ):
        pid = tl.program_id(0)  # ((b * n_wy + wy) * n_wx + wx) * heads + head
        pid_m = tl.program_id(1)  # query block within the window
        h = pid % heads
        win = pid // heads
        wx = win % n_wx
        wy = (win // n_wx) % n_wy
        b = win // (n_wx * n_wy)
        if wy * WS + (pid_m * BLOCK_M) // WS >= grid_h:
            return  # every query of this block lies in the padding below the image: nothing to write
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, HEAD_DIM)
        ly = offs_m // WS  # the query's row and column within its window
        lx = offs_m % WS
        qy = wy * WS + ly
        qx = wx * WS + lx
        m_ok = (offs_m < WS * WS) & (qy < grid_h) & (qx < grid_w)
        qn = qy * grid_w + qx
        q = tl.load(QKV + b * s_qb + qn[:, None] * s_qn + h * HEAD_DIM + offs_d[None, :], mask=m_ok[:, None], other=0.0)

        # the two bias factors against the window's key rows / columns, computed here from q
        rel_h = _rel_factors(q, TH, ly, WS, HEAD_DIM, REL, RW, PRECISION)  # [BLOCK_M, RW]
        rel_w = _rel_factors(q, TW, lx, WS, HEAD_DIM, REL, RW, PRECISION)
        offs_r = tl.arange(0, RW)

        # key slots: KEY_ROWS window rows of WS keys per step, padded to BLOCK_N
        offs_n = tl.arange(0, BLOCK_N)
        rr = offs_n // WS
        cc = offs_n % WS
        slot_ok = offs_n < KEY_ROWS * WS
        kx = wx * WS + cc
        # the column term depends on the key's column only: the same tile for every step, selected
        # from rel_w by a one-hot product (exact: one nonzero term per sum)
        pick_col = ((offs_r[:, None] == cc[None, :]) & slot_ok[None, :]).to(q.dtype)
        col_term = tl.dot(rel_w, pick_col, input_precision=PRECISION) * 1.4426950408889634
        # keys and values in the padding are the qkv projection of zeros: its bias
        bias_k = tl.load(BIAS + channels + h * HEAD_DIM + offs_d)
        bias_v = tl.load(BIAS + 2 * channels + h * HEAD_DIM + offs_d)
        k_base = QKV + b * s_qb + channels + h * HEAD_DIM
        v_base = QKV + b * s_qb + 2 * channels + h * HEAD_DIM

        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        for r0 in range(0, WS, KEY_ROWS):
            kr = r0 + rr
            ky = wy * WS + kr
            key_ok = slot_ok & (kr < WS)
            in_img = key_ok & (ky < grid_h) & (kx < grid_w)
            kn = ky * grid_w + kx
            k = tl.load(k_base + kn[None, :] * s_qn + offs_d[:, None], mask=in_img[None, :], other=0.0)
            k = tl.where(in_img[None, :], k, bias_k[:, None])
            v = tl.load(v_base + kn[:, None] * s_qn + offs_d[None, :], mask=in_img[:, None], other=0.0)
            v = tl.where(in_img[:, None], v, bias_v[None, :])
            pick_row = ((offs_r[:, None] == kr[None, :]) & key_ok[None, :]).to(q.dtype)
            row_term = tl.dot(rel_h, pick_row, input_precision=PRECISION) * 1.4426950408889634
            s = tl.dot(q, k, input_precision=PRECISION) * scale_log2 + col_term + row_term
            s = tl.where(key_ok[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            p = tl.math.exp2(s - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
            m_i = m_new
        acc = acc / l_i[:, None]
        tl.store(O + b * s_ob + qn[:, None] * s_on + h * HEAD_DIM + offs_d[None, :], acc.to(O.dtype.element_ty),
                 mask=m_ok[:, None])

    @triton.jit
    def _linear_gelu_fwd(
        X, W, BIAS, Y, M, N, K,
        sxm, swn, sym,  # x [M, K], weight [N, K] (nn.Linear's), y [M, N]: rows strided, columns contiguous
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
        HAS_BIAS: tl.constexpr,
    ):
        pid = tl.program_id(0)
        n_m = tl.cdiv(M, BLOCK_M)
        n_n = tl.cdiv(N, BLOCK_N)
        group = GROUP_M * n_n  # row blocks walked in groups so a group's weight tiles stay in L2
        first_m = (pid // group) * GROUP_M
        group_m = min(n_m - first_m, GROUP_M)
        pid_m = first_m + (pid % group) % group_m
        pid_n = (pid % group) // group_m
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = tl.arange(0, BLOCK_K)
        m_ok = offs_m < M
        n_ok = offs_n < N
        x_ptrs = X + offs_m[:, None] * sxm + offs_k[None, :]
        w_ptrs = W + offs_n[None, :] * swn + offs_k[:, None]
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k_ok = offs_k + k0 < K
            x = tl.load(x_ptrs, mask=m_ok[:, None] & k_ok[None, :], other=0.0)
            w = tl.load(w_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            acc = tl.dot(x, w, acc)
            x_ptrs += BLOCK_K
            w_ptrs += BLOCK_K
        if HAS_BIAS:
            acc += tl.load(BIAS + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        # exact (erf) GELU on the fp32 accumulator: what nn.GELU() computes, without the round trip
        # of the pre-activation through memory in the model dtype
        y = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))
        tl.store(Y + offs_m[:, None] * sym + offs_n[None, :], y.to(Y.dtype.element_ty),
                 mask=m_ok[:, None] & n_ok[None, :])

    @triton.jit
    def _linear_gelu_tma(
        x_desc, w_desc, y_desc, BIAS, M, N, K,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
        NUM_SMS: tl.constexpr, HAS_BIAS: tl.constexpr, SUBTILE: tl.constexpr, WARP_SPECIALIZE: tl.constexpr,
    ):
        # persistent: one program per SM walks the output tiles; tiles move through TMA (Hopper's bulk
        # copies), which the pointer-based kernel above does not use
        n_m = tl.cdiv(M, BLOCK_M)
        n_n = tl.cdiv(N, BLOCK_N)
        k_tiles = tl.cdiv(K, BLOCK_K)
        group = GROUP_M * n_n
        for tile in tl.range(tl.program_id(0), n_m * n_n, NUM_SMS, flatten=True, warp_specialize=WARP_SPECIALIZE):
            first_m = (tile // group) * GROUP_M
            group_m = min(n_m - first_m, GROUP_M)
            off_m = (first_m + (tile % group) % group_m) * BLOCK_M
            off_n = ((tile % group) // group_m) * BLOCK_N
            acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
            for ki in range(k_tiles):
                x = x_desc.load([off_m, ki * BLOCK_K])
                w = w_desc.load([off_n, ki * BLOCK_K])
                acc = tl.dot(x, w.T, acc)
            if SUBTILE:  # the epilogue in two column halves: half the registers live at the store
                halves = tl.split(tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1)))
                _bias_gelu_store(halves[0], y_desc, BIAS, off_m, off_n, N, BLOCK_N // 2, HAS_BIAS)
                _bias_gelu_store(halves[1], y_desc, BIAS, off_m, off_n + BLOCK_N // 2, N, BLOCK_N // 2, HAS_BIAS)
            else:
                _bias_gelu_store(acc, y_desc, BIAS, off_m, off_n, N, BLOCK_N, HAS_BIAS)

    @triton.jit
    def _bias_gelu_store(acc, y_desc, BIAS, off_m, off_n, N, WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr):
        if HAS_BIAS:
            offs_n = off_n + tl.arange(0, WIDTH)
            acc += tl.load(BIAS + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
        # exact (erf) GELU on the fp32 accumulator, as nn.GELU() computes it
        y = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))
        y_desc.store([off_m, off_n], y.to(y_desc.dtype))

# Global-block launch settings per key-row block width, from a sweep on an H100 (batch 32, 12 heads,
# bf16; BLOCK_M 64/128 x warps 4/8 x stages 2-4): a 64x64 grid (1024 px) 5.03 ms per block (328 TFLOP/s
# of attention, the bias factors included), 80x80 (1280 px, rows padded to 128) 19.7 ms (204 TFLOP/s).
# torch's SDPA without any bias runs the 64x64 case in 3.54 ms; the widened-head SDPA path took 5.55 ms
# plus its einsums and copies. Tried for the 80x80 grid and not kept (same H100, same shapes; the row
# walk at 128 keys took 19.8 ms there): a row as a 64-key tile plus a 16-key tail tile, 29.0 ms even with
# one softmax update per row (at 40x40, 32 + 16 keys, it did gain: 1.31 against 1.47 ms); keys walked
# in flat blocks of 64 across row boundaries with both bias terms read per key from scratch, 38.5 ms.
CONFIGS: dict[int, dict] = {
    64: {"BLOCK_M": 64, "num_warps": 4, "num_stages": 3},
    128: {"BLOCK_M": 64, "num_warps": 4, "num_stages": 3},
}


def default_config(block_w: int) -> dict:
    return CONFIGS.get(block_w, {"BLOCK_M": 64, "num_warps": 4, "num_stages": 3})


def _tables(rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, sizes: tuple[int, int], hd: int,
            dtype: torch.dtype) -> tuple[int, list[torch.Tensor]]:
    """The two position tables, checked ([2·size - 1, hd]) and zero-padded to one power-of-two row
    count for the kernels' per-distance dot."""
    want = [(2 * size - 1, hd) for size in sizes]
    if [tuple(rel_pos_h.shape), tuple(rel_pos_w.shape)] != want:
        raise ValueError(f"rel_pos tables must be {want[0]} and {want[1]}, not "
                         f"{tuple(rel_pos_h.shape)} and {tuple(rel_pos_w.shape)}")
    rel = max(16, triton.next_power_of_2(2 * max(sizes) - 1))
    return rel, [F.pad(t.to(dtype), (0, 0, 0, rel - t.shape[0])).contiguous() for t in (rel_pos_h, rel_pos_w)]


def _check_qkv(qkv: torch.Tensor, grid: tuple[int, int], heads: int) -> tuple[int, int, int, int]:
    b, n, c3 = qkv.shape
    channels = c3 // 3
    hd = channels // heads
    if grid[0] * grid[1] != n or c3 != 3 * heads * hd or hd not in (16, 32, 64, 128) or qkv.stride(-1) != 1:
        raise ValueError(f"bad SAM attention shapes: qkv {tuple(qkv.shape)}, grid {grid}, heads {heads}")
    return b, n, channels, hd


def _precision(dtype: torch.dtype) -> str:
    # fp32 stays fp32 in the dots (tf32 would round the bias terms); bf16 / fp16 ignore it
    return "ieee" if dtype == torch.float32 else "tf32"


def sam_global_attention(qkv: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, scale: float,
                         grid: tuple[int, int], heads: int, out: torch.Tensor | None = None,
                         config: dict | None = None) -> torch.Tensor:
    """SAM's global attention over an H x W grid: softmax(scale·q·kᵀ + rel_h[q, kv // W] +
    rel_w[q, kv % W]) · v per head, with both bias factors computed in the kernel.

    qkv: [b, H*W, 3C] (the projection's output, channels contiguous; no head split or copy),
    rel_pos_h / rel_pos_w: [2H - 1, hd] / [2W - 1, hd] (already interpolated to the grid).
    Returns [b, H*W, C], the layout the output projection reads."""
    if triton is None:
        raise RuntimeError("the SAM attention kernel needs triton (it ships with CUDA builds of torch)")
    b, n, channels, hd = _check_qkv(qkv, grid, heads)
    gh, gw = grid
    rel, tables = _tables(rel_pos_h, rel_pos_w, grid, hd, qkv.dtype)
    if out is None:
        out = qkv.new_empty(b, n, channels)
    block_w = max(16, triton.next_power_of_2(max(gh, gw)))
    cfg = {**default_config(block_w), **(config or {})}
    block_m = cfg["BLOCK_M"]
    n_pad = triton.cdiv(n, block_m) * block_m
    rows = qkv.new_empty(b * heads, n_pad, block_w)  # the row-term scratch tiles
    _sam_global_attention_fwd[(n_pad // block_m, b * heads)](
        qkv, *tables, rows, out,
        qkv.stride(0), qkv.stride(1), out.stride(0), out.stride(1),
        heads, n, n_pad, gh, gw, channels, scale * 1.4426950408889634,
        HEAD_DIM=hd, BLOCK_M=block_m, BLOCK_W=block_w, REL=rel, EVEN=block_w == gw and n == n_pad,
        PRECISION=_precision(qkv.dtype), num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return out


# Launch settings for the 14x14 windows, from a sweep on an H100 (batch 32, 1024 px, bf16; BLOCK_M
# 64/128 x KEY_ROWS 1/2/4 x warps 4/8 x stages 1-3): 0.92 ms per block. One windowed SAM block (norms,
# projections, MLP included) went from 9.6 ms eager through the widened SDPA path to 5.5 ms.
WINDOW_CONFIG: dict = {"BLOCK_M": 128, "KEY_ROWS": 2, "num_warps": 4, "num_stages": 3}


def sam_window_attention(qkv: torch.Tensor, qkv_bias: torch.Tensor | None, rel_pos_h: torch.Tensor,
                         rel_pos_w: torch.Tensor, scale: float, grid: tuple[int, int], heads: int, window: int,
                         out: torch.Tensor | None = None, config: dict | None = None) -> torch.Tensor:
    """SAM's windowed attention over the unpadded token grid, in one kernel.

    The reference pads the grid to a multiple of the window with zeros, projects the padding too
    (qkv of zeros = the qkv bias), partitions into windows, builds the two relative-position tables
    with einsums, attends within each window and crops. Here nothing is padded, partitioned or
    copied: queries in the padding are skipped (they are cropped anyway), keys and values there are
    the bias, and each query's bias factors are computed in the kernel from q and the two
    [2·window - 1, hd] position tables.

    qkv: [b, H*W, 3C] (the projection's output, channels contiguous), qkv_bias: [3C] or None,
    rel_pos_h / rel_pos_w: [2·window - 1, hd] (already interpolated to the window). Returns [b, H*W, C]."""
    if triton is None:
        raise RuntimeError("the SAM attention kernel needs triton (it ships with CUDA builds of torch)")
    b, n, channels, hd = _check_qkv(qkv, grid, heads)
    gh, gw = grid
    rel, tables = _tables(rel_pos_h, rel_pos_w, (window, window), hd, qkv.dtype)
    c3 = 3 * channels
    bias = qkv.new_zeros(c3) if qkv_bias is None else qkv_bias.to(qkv.dtype).contiguous()
    if out is None:
        out = qkv.new_empty(b, n, channels)
    cfg = {**WINDOW_CONFIG, **(config or {})}
    n_wy, n_wx = -(-gh // window), -(-gw // window)
    block_n = max(16, triton.next_power_of_2(cfg["KEY_ROWS"] * window))
    launch = (b * n_wy * n_wx * heads, triton.cdiv(window * window, cfg["BLOCK_M"]))
    _sam_window_attention_fwd[launch](
        qkv, bias, *tables, out,
        qkv.stride(0), qkv.stride(1), out.stride(0), out.stride(1),
        heads, gh, gw, n_wy, n_wx, channels, scale * 1.4426950408889634,
        WS=window, HEAD_DIM=hd, BLOCK_M=cfg["BLOCK_M"], KEY_ROWS=cfg["KEY_ROWS"], BLOCK_N=block_n,
        REL=rel, RW=max(16, triton.next_power_of_2(window)),
        PRECISION=_precision(qkv.dtype),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return out


# Launch settings for the SAM MLP's first matmul (K = 768, N = 3072), from a sweep on an H100 (M = 32 x
# 4096 tokens, bf16; BLOCK_N 128/256 x warps 4/8 x stages 3/4 x subtiled epilogue x warp specialization):
# 1.36 ms with the GELU, against 1.47 ms for cuBLAS's matmul (0.90 ms alone) plus torch's GELU.
LINEAR_GELU_CONFIG: dict = {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8,
                            "num_stages": 3, "TMA": True, "SUBTILE": True, "WARP_SPECIALIZE": False}


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                config: dict | None = None) -> torch.Tensor:
    """gelu(x @ weight.T + bias) with the exact (erf) GELU, in one kernel: the activation is applied
    to the matmul's fp32 accumulator before the one store. x [..., K], weight [N, K] -> [..., N]."""
    if triton is None:
        raise RuntimeError("the linear-GELU kernel needs triton (it ships with CUDA builds of torch)")
    k = x.shape[-1]
    n = weight.shape[0]
    if weight.shape[1] != k:
        raise ValueError(f"x [..., {k}] does not match weight {tuple(weight.shape)}")
    x2 = x.reshape(-1, k)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    weight = weight if weight.stride(-1) == 1 else weight.contiguous()
    m = x2.shape[0]
    y = x2.new_empty(m, n)
    cfg = {**LINEAR_GELU_CONFIG, **(config or {})}
    if cfg["TMA"] and x2.is_cuda and all(_tma_ok(t) for t in (x2, weight, y)):
        from triton.tools.tensor_descriptor import TensorDescriptor

        bm, bn, bk = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]
        sms = torch.cuda.get_device_properties(x2.device).multi_processor_count
        _linear_gelu_tma[(min(sms, triton.cdiv(m, bm) * triton.cdiv(n, bn)),)](
            TensorDescriptor.from_tensor(x2, [bm, bk]), TensorDescriptor.from_tensor(weight, [bn, bk]),
            TensorDescriptor.from_tensor(y, [bm, bn // 2 if cfg["SUBTILE"] else bn]),
            bias if bias is not None else weight, m, n, k,
            BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=cfg["GROUP_M"], NUM_SMS=sms, HAS_BIAS=bias is not None,
            SUBTILE=cfg["SUBTILE"], WARP_SPECIALIZE=cfg["WARP_SPECIALIZE"],
            num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
        )
        return y.reshape(*x.shape[:-1], n)
    launch = (triton.cdiv(m, cfg["BLOCK_M"]) * triton.cdiv(n, cfg["BLOCK_N"]),)
    _linear_gelu_fwd[launch](
        x2, weight, bias if bias is not None else weight, y, m, n, k,
        x2.stride(0), weight.stride(0), y.stride(0),
        BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"], GROUP_M=cfg["GROUP_M"],
        HAS_BIAS=bias is not None, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return y.reshape(*x.shape[:-1], n)


def _tma_ok(t: torch.Tensor) -> bool:
    """TMA wants 16-byte aligned base and row strides, and a contiguous last dim."""
    return t.stride(-1) == 1 and t.data_ptr() % 16 == 0 and (t.stride(0) * t.element_size()) % 16 == 0
