"""Exactness of the SAM attention paths against transformers' own attention (fp32, CPU, small shapes):
the fused widened-head SDPA one (the default), the flex_attention one (score_mod adding
rel_h[q, kv // W] + rel_w[q, kv % W]), the swap helpers and the compiled-encoder entry point's wiring.
On CPU, eager flex_attention is torch's unfused reference maths of the same score_mod, so these tests
check the score_mod's indexing and the class's layout; the Triton global-attention kernel is checked
on CUDA (the CUDA-only tests, and the bench's exactness run)."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from transformers.models.deepseek_ocr2.modeling_deepseek_ocr2 import (  # noqa: E402
    DeepseekOcr2SamVisionAttention,
    DeepseekOcr2SamVisionSdpaAttention,
)

from optimem.model import DeepseekOCR, DeepseekOCRConfig, tiny_config  # noqa: E402
from optimem.model.modeling import _sam_encoder  # noqa: E402
from optimem.model.sam_attention import (  # noqa: E402
    FlexRelPosSamAttention,
    FusedRelPosSamAttention,
    flex_sam_attention,
    fuse_sam_attention,
    restore_sam_attention,
)


def _sam(cfg, seed: int = 0):
    torch.manual_seed(seed)
    sam = _sam_encoder(cfg).eval()
    with torch.no_grad():
        for p in sam.parameters():  # non-zero relative-position tables, or the test proves nothing
            p.copy_(torch.randn_like(p) * 0.05)
    return sam


def _eager_reference(attn):
    """transformers' eager attention (explicit softmax over scores + dense bias) with attn's weights."""
    ref = copy.deepcopy(attn)
    ref.__class__ = DeepseekOcr2SamVisionAttention
    return ref


def _whole_sam(sam, fast, size: int = 512):
    """Both encoders' outputs for the same random pixels: (reference, candidate)."""
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        return sam(x).last_hidden_state, fast(x).last_hidden_state


def _layer_by_layer(sam, fast, width: int, grid: int = 32):
    """Both stacks of SAM blocks run on the same random [1, grid, grid, width] token grid."""
    h = torch.randn(1, grid, grid, width)
    with torch.no_grad():
        a = b = h
        for la, lb in zip(sam.layers, fast.layers):
            a, b = la(a), lb(b)
    return a, b


@pytest.mark.parametrize("size", [512, 640, 1024])
def test_fused_sam_attention_matches_transformers(size: int) -> None:
    sam = _sam(tiny_config())
    fused = copy.deepcopy(sam)
    assert fuse_sam_attention(fused) == 2
    assert fuse_sam_attention(fused) == 0  # idempotent
    want, got = _whole_sam(sam, fused, size)
    assert (want - got).abs().max().item() < 1e-5
    assert want.abs().max().item() > 1e-2


def test_fused_sam_attention_full_width_layer() -> None:
    # the real head dim (64) and a 14x14 window + 32x32 global grid at 512 px
    cfg = DeepseekOCRConfig()
    sam = _sam(cfg)
    sam.layers = sam.layers[:3]  # layers 0-1 windowed, 2 global: enough to cover both paths
    fused = copy.deepcopy(sam)
    fuse_sam_attention(fused)
    a, b = _layer_by_layer(sam, fused, cfg.sam.width)  # the token grid of a 512-px page
    assert isinstance(fused.layers[2].attn, FusedRelPosSamAttention)
    assert (a - b).abs().max().item() < 1e-4


def test_fused_falls_back_past_head_dim_limit(monkeypatch) -> None:
    from optimem.model import sam_attention

    monkeypatch.setattr(sam_attention, "MAX_HEAD_DIM", 64)  # 32 + 32 + 32 > 64: the unfused path
    cfg = tiny_config()
    sam = _sam(cfg)
    attn = copy.deepcopy(sam.layers[1].attn)  # the global block
    ref = copy.deepcopy(attn)
    attn.__class__ = FusedRelPosSamAttention
    x = torch.randn(1, 32, 32, cfg.sam.width)
    with torch.no_grad():
        want = ref(x)[0]
        got = attn(x)[0]
    assert (want - got).abs().max().item() < 1e-5


@pytest.mark.parametrize("grid,heads,hd", [(14, 2, 16), (9, 3, 8), (16, 2, 32)])
def test_flex_attention_matches_transformers_eager_and_sdpa(grid: int, heads: int, hd: int) -> None:
    cfg = tiny_config()
    sam = _sam(cfg)
    attn = copy.deepcopy(sam.layers[0].attn)  # a windowed block's attention; the shapes below drive it
    width = heads * hd
    attn.num_attention_heads, attn.scale = heads, hd ** -0.5
    attn.qkv = torch.nn.Linear(width, 3 * width)
    attn.proj = torch.nn.Linear(width, width)
    attn.rel_pos_h = torch.nn.Parameter(torch.randn(2 * grid - 1, hd) * 0.3)
    attn.rel_pos_w = torch.nn.Parameter(torch.randn(2 * grid - 1, hd) * 0.3)
    assert isinstance(attn, DeepseekOcr2SamVisionSdpaAttention)
    eager = _eager_reference(attn)
    flex = copy.deepcopy(attn)
    flex.__class__ = FlexRelPosSamAttention
    x = torch.randn(3, grid, grid, width)
    with torch.no_grad():
        want_sdpa = attn(x)[0]
        want_eager = eager(x)[0]
        got = flex(x)[0]
    assert (want_eager - want_sdpa).abs().max().item() < 1e-5
    assert (got - want_eager).abs().max().item() < 1e-5
    assert want_eager.abs().max().item() > 1e-2


def test_flex_attention_bias_matters() -> None:
    # the score_mod must not be a no-op: zeroing the tables changes the output
    cfg = tiny_config()
    sam = _sam(cfg)
    flex = copy.deepcopy(sam.layers[1].attn)  # global block, 32x32 grid at 512 px
    flex.__class__ = FlexRelPosSamAttention
    plain = copy.deepcopy(flex)
    with torch.no_grad():
        plain.rel_pos_h.zero_()
        plain.rel_pos_w.zero_()
        flex.rel_pos_h.mul_(20)
        x = torch.randn(1, 32, 32, cfg.sam.width)
        assert (flex(x)[0] - plain(x)[0]).abs().max().item() > 1e-3


@pytest.mark.parametrize("where", ["all", "global", "window"])
def test_flex_whole_sam_matches_transformers(where: str) -> None:
    sam = _sam(tiny_config())
    fast = copy.deepcopy(sam)
    fuse_sam_attention(fast)
    n = flex_sam_attention(fast, where)
    assert n == {"all": 2, "global": 1, "window": 1}[where]
    assert flex_sam_attention(fast, where) == 0  # idempotent
    kinds = [type(layer.attn) for layer in fast.layers]  # tiny config: block 0 windowed, block 1 global
    if where == "global":
        assert kinds == [FusedRelPosSamAttention, FlexRelPosSamAttention]
    elif where == "window":
        assert kinds == [FlexRelPosSamAttention, FusedRelPosSamAttention]
    want, got = _whole_sam(sam, fast)
    assert (want - got).abs().max().item() < 1e-5
    assert want.abs().max().item() > 1e-2


def test_flex_full_width_window_and_global_layers() -> None:
    # the real head dim (64) and heads (12): 14x14 windows (padded 32 -> 42) and a 32x32 global grid
    cfg = DeepseekOCRConfig()
    sam = _sam(cfg)
    sam.layers = sam.layers[:3]  # layers 0-1 windowed, 2 global
    fast = copy.deepcopy(sam)
    assert flex_sam_attention(fast) == 3
    a, b = _layer_by_layer(sam, fast, cfg.sam.width)
    assert (a - b).abs().max().item() < 1e-4


def test_restore_puts_transformers_class_back() -> None:
    sam = _sam(tiny_config())
    stock = [type(layer.attn) for layer in sam.layers]
    fuse_sam_attention(sam)
    assert type(sam.patch_embed).__name__ == "MatmulSamPatchEmbeddings"
    flex_sam_attention(sam, "global")
    assert restore_sam_attention(sam) == 2
    assert [type(layer.attn) for layer in sam.layers] == stock
    assert type(sam.patch_embed).__name__ == "DeepseekOcr2SamPatchEmbeddings"
    assert restore_sam_attention(sam) == 0
    with pytest.raises(ValueError):
        flex_sam_attention(sam, "windows")


@pytest.mark.parametrize("attention", ["fused", "flex"])
def test_compile_encoder_wiring_cpu(attention: str) -> None:
    # the library entry point: modules swapped, encoder compiled in place (names unchanged), and
    # encode_pages through it equal to the eager default. backend="eager" keeps the CPU test fast:
    # it runs dynamo's capture of the whole encoder without inductor.
    from PIL import Image

    from optimem.model.speed import compile_encoder, uncompile_encoder

    model = DeepseekOCR.random(tiny_config(), seed=3)
    keys = list(model.module.state_dict())
    page = Image.new("RGB", (300, 400), "white")
    want = model.encode_pages([page, page], "tiny")
    torch._dynamo.reset()
    if attention == "fused":  # the facade's one-line entry point
        assert model.compile(backend="eager") is model
        enc = model.module.encoder
    else:
        enc = compile_encoder(model, attention=attention, backend="eager")
    assert enc is model.module.encoder
    cls = FlexRelPosSamAttention if attention == "flex" else FusedRelPosSamAttention
    assert all(type(layer.attn) is cls for layer in enc.sam_model.layers)
    assert type(enc.sam_model.patch_embed).__name__ == "MatmulSamPatchEmbeddings"
    assert list(model.module.state_dict()) == keys
    got = model.encode_pages([page, page], "tiny")
    assert got.shape == want.shape
    assert (got - want).abs().max().item() < 1e-5
    uncompile_encoder(model)
    assert all(type(layer.attn) is FusedRelPosSamAttention for layer in enc.sam_model.layers)
    assert type(enc.sam_model.patch_embed).__name__ == "MatmulSamPatchEmbeddings"  # the eager default
    assert (model.encode_pages([page, page], "tiny") - want).abs().max().item() < 1e-6


def test_matmul_patch_embedding_matches_conv() -> None:
    from optimem.model.speed import prepare_encoder

    sam = _sam(DeepseekOCRConfig())  # the real 3 -> 768, 16x16 stride-16 patch embedding
    pe = copy.deepcopy(sam.patch_embed)
    fast = torch.nn.Module()
    fast.pe = copy.deepcopy(pe)
    assert prepare_encoder(fast)["patch_embed"] == 1
    stock = copy.deepcopy(fast)
    assert prepare_encoder(stock, matmul_patch_embed=False)["patch_embed"] == 0
    assert type(stock.pe) is type(pe)
    x = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        want, got = pe(x), fast.pe(x)
        odd = fast.pe(x[:, :, :120])  # not a multiple of 16: falls back to the convolution
    assert got.shape == want.shape == (2, 8, 6, 768)
    assert got.is_contiguous() and odd.is_contiguous() and not want.is_contiguous()  # why it exists
    assert (got - want).abs().max().item() < 1e-4
    assert (odd - pe(x[:, :, :120])).abs().max().item() == 0


def test_fused_aligned_tables_and_narrow_values_match() -> None:
    # the fused path's 8-aligned rel tables (14 -> 16 zero columns) and its unpadded values (the CUDA
    # choice, run here through the CPU math kernel) against transformers' eager attention
    cfg = DeepseekOCRConfig()
    sam = _sam(cfg)
    attn = sam.layers[0].attn  # a real 14x14 window block, head dim 64
    ref = _eager_reference(attn)
    x = torch.randn(3, 14, 14, cfg.sam.width)
    with torch.no_grad():
        want = ref(x)[0]
        for pad_v in (True, False):
            fused = copy.deepcopy(attn)
            fused.__class__ = FusedRelPosSamAttention
            fused.pad_v = pad_v
            assert (fused(x)[0] - want).abs().max().item() < 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("attention", ["fused", "flex"])
def test_compiled_bf16_cuda_against_fp32_reference(attention: str) -> None:
    from optimem.model.speed import prepare_encoder

    cfg = DeepseekOCRConfig()
    sam = _sam(cfg).cuda()
    sam.layers = sam.layers[:3]
    fast = copy.deepcopy(sam).to(torch.bfloat16)
    prepare_encoder(fast, attention)
    h = torch.randn(2, 64, 64, cfg.sam.width, device="cuda")
    with torch.no_grad():
        a = h
        for layer in sam.layers:
            a = layer(a)
        run = torch.compile(lambda x: [x := layer(x) for layer in fast.layers][-1])
        b = run(h.to(torch.bfloat16)).float()
    assert (a - b).abs().max().item() < 5e-2 * max(1.0, a.abs().max().item())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("grid", [64, 80, 40, 32])  # the global blocks of base, large, small, tiny
def test_global_block_triton_kernel_cuda(grid: int) -> None:
    # the Triton kernel (head dim 64, bias added in the loop) against transformers' eager attention in
    # fp32; in bf16 it must be no worse than the widened-head SDPA path it replaces
    from optimem.model.sam_kernel import available

    assert available(), "CUDA builds of torch ship triton"
    cfg = DeepseekOCRConfig()
    attn = _sam(cfg).cuda().layers[2].attn  # a global block (64x64 tables, interpolated for other grids)
    x = torch.randn(2, grid, grid, cfg.sam.width, device="cuda")
    fast = copy.deepcopy(attn).to(torch.bfloat16)
    fast.__class__ = FusedRelPosSamAttention
    with torch.no_grad():
        want = _eager_reference(attn)(x)[0]
        got = fast(x.bfloat16())[0].float()
        fast.use_kernel = False
        widened = fast(x.bfloat16())[0].float()
    err, err_widened = (got - want).abs().max().item(), (widened - want).abs().max().item()
    assert err <= 1.5 * err_widened + 1e-3, (err, err_widened)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_attention_bf16_cuda() -> None:
    sam = _sam(tiny_config()).cuda().to(torch.bfloat16)
    fused = copy.deepcopy(sam)
    fuse_sam_attention(fused)
    x = torch.randn(4, 3, 1024, 1024, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        assert (sam(x).last_hidden_state - fused(x).last_hidden_state).abs().max().item() < 5e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("grid", [64, 80, 40, 32])  # base, large, small, tiny: 64 and 80 are not multiples of 14
def test_window_block_triton_kernel_cuda(grid: int) -> None:
    # a windowed SAM block through the window kernel (unpadded grid) against transformers' layer in
    # fp32 (padding, partition, eager attention, crop); in bf16 no worse than the widened-SDPA path
    from optimem.model.sam_attention import FusedSamVisionLayer

    cfg = DeepseekOCRConfig()
    layer = _sam(cfg).cuda().layers[0]  # windowed
    assert layer.window_size == 14
    ref = copy.deepcopy(layer)
    ref.attn = _eager_reference(layer.attn)
    fast = copy.deepcopy(layer).to(torch.bfloat16)
    fuse_sam_attention(fast)
    assert type(fast) is FusedSamVisionLayer
    x = torch.randn(2, grid, grid, cfg.sam.width, device="cuda")
    with torch.no_grad():
        want = ref(x)
        got = fast(x.bfloat16()).float()
        fast.attn.use_kernel = False
        widened = fast(x.bfloat16()).float()
    err, err_widened = (got - want).abs().max().item(), (widened - want).abs().max().item()
    assert err <= 1.5 * err_widened + 1e-3, (err, err_widened)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("tokens", [2 * 64 * 64, 1000])  # a ragged row count too
def test_mlp_linear_gelu_kernel_cuda(tokens: int) -> None:
    # SAM's MLP with lin1 + exact GELU in one kernel against transformers' MLP in fp32; in bf16 no
    # worse than the unfused bf16 path
    from optimem.model.sam_attention import FusedGeluSamMLP

    cfg = DeepseekOCRConfig()
    mlp = _sam(cfg).cuda().layers[0].mlp
    fast = copy.deepcopy(mlp).to(torch.bfloat16)
    fuse_sam_attention(fast)
    assert type(fast) is FusedGeluSamMLP
    x = torch.randn(tokens, cfg.sam.width, device="cuda")
    with torch.no_grad():
        want = mlp(x)
        got = fast(x.bfloat16()).float()
        fast.use_kernel = False
        unfused = fast(x.bfloat16()).float()
    err, err_unfused = (got - want).abs().max().item(), (unfused - want).abs().max().item()
    assert err <= 1.5 * err_unfused + 1e-3, (err, err_unfused)
