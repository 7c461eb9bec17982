"""What an image costs in each provider's context and what one request may carry, per model family.

A budget means the bill only if every part of a request is priced the way the provider prices it, so
each family below follows its provider's current public document (URLs next to each formula; the
figures were read from those pages, 2026-11):

- OpenAI, https://platform.openai.com/docs/guides/images-vision#calculating-costs
  * tile-based families (gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1/o3, gpt-4o-mini): `detail="low"` costs the
    base tokens; `detail="high"` fits the image in 2048x2048, scales its short side to 768 px and
    costs base + per-tile x (512 px tiles). Base/tile: gpt-4o/4.1/4.5 85/170, gpt-5 70/140,
    o1/o3 75/150, gpt-4o-mini 2833/5667.
  * patch-based families (gpt-4.1-mini/nano, o4-mini, gpt-5-mini/nano): 32 px patches, at most 1536
    (the image is scaled down to fit), times a per-model multiplier (1.62 / 2.46 / 1.72).
  * Limits: 500 images and 50 MB of payload per request
    (https://platform.openai.com/docs/guides/images-vision#image-input-requirements).
  `detail` is sent explicitly on every page (the `image_url` block keeps it; a v0/v1 standard image
  block would lose it and the API would then price the page as `auto`).
- Anthropic, https://platform.claude.com/docs/en/build-with-claude/vision
  * an image costs ceil(w/28) x ceil(h/28) visual tokens (28 px patches, padded right/bottom) after
    the API scales it down to the model's native maximum: long edge 1568 px and about 1.15
    megapixels for Claude models up to 4.6, 2576 px and 3.75 megapixels from Opus 4.7 on.
  * Limits: 100 images per request for 200k-context models (600 for the others), 2000x2000 px per
    image once a request has more than 20 images, 32 MB per request.
- Google Gemini, https://ai.google.dev/gemini-api/docs/tokens and
  https://ai.google.dev/gemini-api/docs/media-resolution
  * Gemini 2.x: 258 tokens when both sides are <= 384 px, else 258 per 768x768 tile.
  * Gemini 3: a fixed count per image set by `media_resolution` (low 280, medium 560, high 1120,
    the default for images). It is sent per image part (`media_resolution` on the v1 image block,
    which langchain-google-genai >= 4 passes on as the part's `media_resolution.level` for Gemini 3
    models and ignores, with a warning, for 2.5): pages go at low (tiny) or medium (small).
  * Limits (https://ai.google.dev/gemini-api/docs/image-understanding): 3,600 images per request
    (900 for Gemini 3 Pro), 20 MB of inline data per request.
- DeepSeek-OCR v1 (native): the placeholder count of the mode (73 / 111 / 273 / 421).

Text tokens are the caller's to count with the provider's tokenizer (the compressor takes a
`token_counter`, as `trim_messages` does). Without one, text is estimated with the DeepSeek-OCR
tokenizer (`renderers.tokens`) plus a per-message overhead: OpenAI's tokenizer downloads its
encodings at run time, which machines without network cannot.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from optimem.errors import ConfigError
from optimem.policies import Ladder, TierCost
from optimem.ladders import DEEPSEEK_OCR_V1


def tier_size(tier: str) -> int:
    """The side of a page view at `tier`: API providers get the views DeepSeek-OCR v1 reads."""
    return DEEPSEEK_OCR_V1.spec(tier).size


# -- formulas ----------------------------------------------------------------------------------------
def openai_image_tokens(width: int, height: int, detail: str = "high", *, upscale: bool = True,
                        base: int = 85, tile: int = 170) -> int:
    """Tile-based OpenAI families (gpt-4o class by default)."""
    if detail == "low":
        return base
    w, h = float(width), float(height)
    s = min(1.0, 2048 / max(w, h))
    w, h = w * s, h * s
    short = min(w, h)
    if upscale or short > 768:
        w, h = w * 768 / short, h * 768 / short
    tiles = math.ceil(round(w, 6) / 512) * math.ceil(round(h, 6) / 512)
    return base + tile * tiles


def openai_patch_tokens(width: int, height: int, multiplier: float, *, cap: int = 1536) -> int:
    """Patch-based OpenAI families: 32 px patches, at most `cap` of them, times the model's multiplier."""
    w, h = float(width), float(height)
    patches = math.ceil(w / 32) * math.ceil(h / 32)
    if patches > cap:
        s = math.sqrt(cap * 32 * 32 / (w * h))
        # the documented rule: shrink, then shrink again so whole patches fit along the width
        s = s * min(1.0, math.floor(w * s / 32) / (w * s / 32))
        w, h = w * s, h * s
        patches = min(cap, math.ceil(w / 32) * math.ceil(h / 32))
    return math.ceil(patches * multiplier)


def anthropic_image_tokens(width: int, height: int, *, max_edge: int = 1568, max_pixels: float = 1.15e6) -> int:
    """Claude: 28 px patches after scaling to the model's native maximum."""
    w, h = float(width), float(height)
    long_edge = max(w, h)
    if long_edge > max_edge:
        w, h = w * max_edge / long_edge, h * max_edge / long_edge
    if w * h > max_pixels * 1.04:  # ~1,600 tokens: 1092x1092 (1.19 MP) is documented as kept as is
        s = math.sqrt(max_pixels / (w * h))
        w, h = w * s, h * s
    return math.ceil(int(w) / 28) * math.ceil(int(h) / 28)


def gemini_image_tokens(width: int, height: int) -> int:
    """Gemini 2.x."""
    if width <= 384 and height <= 384:
        return 258
    return 258 * math.ceil(width / 768) * math.ceil(height / 768)


def _deepseek(w: int, h: int, detail: str | None = None) -> int:  # a square page at a v1 tier size
    best = DEEPSEEK_OCR_V1.views[0]
    for spec in DEEPSEEK_OCR_V1.views:
        if spec.size >= max(w, h):
            best = spec
    return best.tokens


# -- model families ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Provider:
    """One model family: how it prices an image, which page tiers are worth sending, request limits.

    `image_tokens(width, height, detail)`; `detail` is what is sent per tier: OpenAI's `detail`, Gemini
    3's per-part `media_resolution` level (None elsewhere).
    `message_tokens` is the framing each message costs beyond its content (role, separators).
    """

    name: str
    family: str
    image_tokens: Callable[..., int]
    tiers: tuple[str, ...] = ("large", "base", "small", "tiny")
    detail: dict[str, str] | None = None  # per tier, for OpenAI
    max_images: int | None = None
    max_request_bytes: int | None = None
    max_side_many: int | None = None  # Anthropic: side limit once a request has more than 20 images
    message_tokens: int = 4
    request_tokens: int = 3  # the reply's priming (OpenAI documents 3)
    image_format: str = "standard"  # "openai": image_url blocks with detail; "standard": v1 image blocks
    prefixes: tuple[str, ...] = field(default=(), repr=False)

    def page_tokens(self, tier: str) -> int:
        size = DEEPSEEK_OCR_V1.spec(tier).size
        return self.image_tokens(size, size, self.tier_detail(tier))

    def tier_detail(self, tier: str) -> str | None:
        return None if self.detail is None else self.detail.get(tier, "high")

    def ladder(self, extra: int = 0) -> Ladder:
        """The renderer's tiers priced by this family (+ `extra` per page: its label and framing);
        tiers that cost no less than a sharper one are skipped (a blurrier page that costs the same is
        never worth sending)."""
        fid = {t.name: t.fidelity for t in DEEPSEEK_OCR_V1.views}
        out: list[TierCost] = []
        for tier in self.tiers:
            cost = self.page_tokens(tier) + extra
            if out and cost >= out[-1].tokens:
                continue
            out.append(TierCost(tier, cost, fid[tier]))
        return Ladder(tuple(out))


def _oa_tiles(base: int, tile: int) -> Callable[..., int]:
    return lambda w, h, detail=None: openai_image_tokens(w, h, detail or "high", base=base, tile=tile)


def _oa_patches(mult: float) -> Callable[..., int]:
    return lambda w, h, detail=None: openai_patch_tokens(w, h, mult)


def _claude(max_edge: int, max_pixels: float) -> Callable[..., int]:
    return lambda w, h, detail=None: anthropic_image_tokens(w, h, max_edge=max_edge, max_pixels=max_pixels)


GEMINI3_RESOLUTION_TOKENS = {"low": 280, "medium": 560, "high": 1120, "ultra_high": 2240}
_OA = dict(max_images=500, max_request_bytes=50 * 1024 * 1024, message_tokens=3, request_tokens=3, image_format="openai")
_OA_TIERS = dict(tiers=("large", "tiny"), detail={"large": "high", "tiny": "low"})
# Tiers worth sending are those that cost clearly less than the ~1,000 text tokens a page holds: on
# Claude a 1280 px page costs more than its text (1,600 tokens), on Gemini 2 anything above 768 px is
# four tiles (1,032).
_AN = dict(tiers=("small", "tiny"), max_images=100, max_request_bytes=32 * 1024 * 1024, max_side_many=2000, message_tokens=4, request_tokens=0)
_GE = dict(max_images=3600, max_request_bytes=20 * 1024 * 1024, message_tokens=4, request_tokens=0)

FAMILIES: tuple[Provider, ...] = (
    # order matters: the first family whose prefix starts the model name wins
    Provider("openai", "gpt-4o-mini", _oa_tiles(2833, 5667), prefixes=("gpt-4o-mini",), **_OA_TIERS, **_OA),
    Provider("openai", "gpt-4.1-mini", _oa_patches(1.62), ("large",), prefixes=("gpt-4.1-mini", "gpt-5-mini"), **_OA),
    Provider("openai", "gpt-4.1-nano", _oa_patches(2.46), ("large",), prefixes=("gpt-4.1-nano", "gpt-5-nano"), **_OA),
    Provider("openai", "o4-mini", _oa_patches(1.72), ("large",), prefixes=("o4-mini",), **_OA),
    Provider("openai", "gpt-5", _oa_tiles(70, 140), prefixes=("gpt-5",), **_OA_TIERS, **_OA),
    Provider("openai", "o1", _oa_tiles(75, 150), prefixes=("o1", "o3"), **_OA_TIERS, **_OA),
    Provider("openai", "gpt-4o", _oa_tiles(85, 170), prefixes=("gpt-4o", "gpt-4.1", "gpt-4.5", "chatgpt-4o", "gpt-4"), **_OA_TIERS, **_OA),
    Provider("anthropic", "claude-opus-4-7", _claude(2576, 3.75e6), prefixes=("claude-opus-4-7", "claude-opus-4-8"), **_AN),
    Provider("anthropic", "claude", _claude(1568, 1.15e6), prefixes=("claude",), **_AN),
    Provider("gemini", "gemini-3", lambda w, h, detail=None: GEMINI3_RESOLUTION_TOKENS.get(detail or "high", 1120),
             ("small", "tiny"), detail={"small": "medium", "tiny": "low"}, max_images=900,
             max_request_bytes=20 * 1024 * 1024, prefixes=("gemini-3",)),
    Provider("gemini", "gemini-2", lambda w, h, detail=None: gemini_image_tokens(w, h), ("small",),
             prefixes=("gemini",), **_GE),
    Provider("deepseek-ocr", "deepseek-ocr-v1", _deepseek, message_tokens=0, request_tokens=0, prefixes=("deepseek-ocr",)),
)
DEFAULT_FAMILY = {"openai": "gpt-4o", "anthropic": "claude", "gemini": "gemini-2", "deepseek-ocr": "deepseek-ocr-v1"}
PROVIDERS: dict[str, Provider] = {p: next(f for f in FAMILIES if f.family == fam) for p, fam in DEFAULT_FAMILY.items()}


def get_provider(name: str, model: str | None = None) -> Provider:
    """The pricing for provider `name` ("openai", "anthropic", "gemini", "deepseek-ocr"), refined by a
    model name ("gpt-4o-mini", "claude-opus-4-7", ...) when one is given; `name` may itself be a
    model name."""
    key = (name or "").lower()
    if key not in PROVIDERS:
        fam = _family_of(key)
        if fam is None:
            raise ConfigError(f"unknown provider {name!r}; known: {', '.join(PROVIDERS)} (or a model name such as "
                              "gpt-4o, claude-sonnet-4-5, gemini-2.5-flash)")
        return fam
    if model:
        fam = _family_of(model.lower())
        if fam is not None and fam.name == key:
            return fam
    return PROVIDERS[key]


def _family_of(model: str) -> Provider | None:
    model = model.rsplit("/", 1)[-1]  # "models/gemini-2.5-pro", "openai/gpt-4o"
    for fam in FAMILIES:
        if any(model.startswith(p) for p in fam.prefixes):
            return fam
    return None


def text_tokens(text: str) -> int:
    """Estimate (see the module docstring): DeepSeek-OCR tokenizer count."""
    from optimem.renderers.tokens import count_tokens

    return count_tokens(text)


# -- page images as sent -------------------------------------------------------------------------------
_LUT16 = [(v * 15 + 127) // 255 for v in range(256)]
_PALETTE16 = [c for i in range(16) for c in (i * 17, i * 17, i * 17)]


def page_png(master, tier: str, *, compress_level: int = 1) -> bytes:
    """A page as an API provider receives it: the grey master scaled to the tier's side and stored as
    a 16-level grey palette PNG (4 bits a pixel). Text pages are black on white with anti-aliased
    edges; 16 levels keep the edges and make the file about a quarter of an RGB PNG. The providers
    resample images themselves, so the downscale takes Pillow's fast path (an integer box reduction,
    then bicubic: `reducing_gap`), and zlib's fastest level loses only a few percent of size on
    4-bit pages."""
    from PIL import Image

    size = DEEPSEEK_OCR_V1.spec(tier).size
    img = master if master.mode == "L" else master.convert("L")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=2.0)
    q = Image.frombytes("P", img.size, img.point(_LUT16).tobytes())
    q.putpalette(_PALETTE16)
    buf = io.BytesIO()
    q.save(buf, format="PNG", compress_level=compress_level, bits=4)
    return buf.getvalue()


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from an image's header (nothing decoded); None when it is not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except (UnidentifiedImageError, OSError, ValueError):
        return None
