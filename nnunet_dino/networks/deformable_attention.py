"""Multi-scale deformable cross-attention (Zhu et al., Deformable DETR, arXiv 2010.04159, §4.1)
in pure PyTorch, and the ViT-Adapter "extractor" built on it (Chen et al., arXiv 2205.08534).

Each query predicts, per head, `num_points` sampling offsets around its reference point on every
value level and one softmax weight per (level, point); the output is the weighted sum of the
bilinearly sampled values. Sampling is `F.grid_sample` (bilinear, zero padding,
align_corners=False: a normalised location u in [0, 1] lies at pixel u * size - 0.5), and
autograd provides the backward pass, so no compiled operator is needed on CPU or GPU.

All heads, levels and points are sampled by one `grid_sample` call: the levels are laid side by
side on a zero canvas with one zero column between neighbours, and every sampling location is
clamped to the one-pixel zero border of its own level first. Inside that border bilinear
interpolation reads the same values as zero padding would; beyond it the value and every gradient
are zero, exactly as with zero padding, so the result equals per-level sampling.
"""
from __future__ import annotations

import functools
import math
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

Shape2d = Tuple[int, int]


def canvas_layout(value_shapes: Sequence[Shape2d]) -> Tuple[List[int], int, int]:
    """Where `deformable_sample` puts each level on its canvas: (first column of each level, canvas
    width, canvas height); levels side by side, top-aligned, one zero column between neighbours."""
    starts, col = [], 0
    for lvl, (_, w) in enumerate(value_shapes):
        starts.append(col)
        col += w + (1 if lvl < len(value_shapes) - 1 else 0)
    return starts, col, max(h for h, _ in value_shapes)


def _build_level_constants(value_shapes: Tuple[Shape2d, ...], device: torch.device,
                           dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    starts, width, height = canvas_layout(value_shapes)
    size = torch.tensor([[w, h] for h, w in value_shapes], device=device, dtype=dtype).view(-1, 1, 2)
    start = torch.tensor([[s, 0] for s in starts], device=device, dtype=dtype).view(-1, 1, 2)
    return size, start, torch.tensor([width, height], device=device, dtype=dtype)


def _build_normal_level_constants(value_shapes: Tuple[Shape2d, ...], device: torch.device,
                                  dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The constants as normal tensors even when first asked for under torch.inference_mode (nnU-Net's
    predictor): a cached inference tensor cannot be saved for backward by a later training forward."""
    with torch.inference_mode(False):
        return _build_level_constants(value_shapes, device, dtype)


_cached_level_constants = functools.lru_cache(maxsize=64)(_build_normal_level_constants)


def level_constants(value_shapes: Sequence[Shape2d], device: torch.device,
                    dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(L, 1, 2) level sizes as (w, h), (L, 1, 2) canvas offsets as (x, 0) and the (2,) canvas size as
    (w, h) on `device`: built once per shapes, device and dtype in eager mode (a tensor made from a
    Python list is a host-to-device copy and, on CUDA, a sync, every forward); a compiled graph holds
    them as constants, so tracing builds them afresh instead of reading the cache."""
    shapes = tuple((int(h), int(w)) for h, w in value_shapes)
    build = _build_level_constants if torch.compiler.is_compiling() else _cached_level_constants
    return build(shapes, device, dtype)


def deformable_sample(value: torch.Tensor, value_shapes: Sequence[Shape2d], locations: torch.Tensor,
                      weights: torch.Tensor) -> torch.Tensor:
    """Weighted bilinear sampling of multi-level values.

    value (B, Nv, M, Dh) with Nv = sum(h * w) over `value_shapes` (row-major per level, levels
    concatenated); locations (B, Nq, M, L, P, 2) as normalised (x, y) of each level;
    weights (B, Nq, M, L, P). Returns (B, Nq, M * Dh).
    """
    b, _, heads, head_dim = value.shape
    _, nq, _, levels, points, _ = locations.shape
    _, _, canvas_h = canvas_layout(value_shapes)
    pieces = []
    for lvl, (v, (h, w)) in enumerate(zip(value.split([h * w for h, w in value_shapes], dim=1), value_shapes)):
        v = v.permute(0, 2, 3, 1).reshape(b * heads, head_dim, h, w)
        gap = 1 if lvl < levels - 1 else 0  # a zero column between neighbouring levels
        pieces.append(F.pad(v, (0, gap, 0, canvas_h - h)) if gap or canvas_h > h else v)
    canvas = torch.cat(pieces, dim=-1) if len(pieces) > 1 else pieces[0]  # (B*M, Dh, Hc, Wc)

    size, start, canvas_size = level_constants(value_shapes, locations.device, locations.dtype)
    pixel = torch.clamp(locations * size - 0.5, min=-torch.ones_like(size), max=size)  # level pixels
    grid = (pixel + start + 0.5) * (2.0 / canvas_size) - 1.0  # canvas coords, align_corners=False
    grid = grid.permute(0, 2, 1, 3, 4, 5).reshape(b * heads, nq, levels * points, 2)
    dtype = torch.promote_types(canvas.dtype, grid.dtype)  # never round locations down to fp16
    sampled = F.grid_sample(canvas.to(dtype), grid.to(dtype), mode="bilinear", padding_mode="zeros",
                            align_corners=False)  # (B*M, Dh, Nq, L*P)
    weights = weights.permute(0, 2, 1, 3, 4).reshape(b * heads, 1, nq, levels * points)
    out = (sampled * weights).sum(-1)  # (B*M, Dh, Nq)
    return out.view(b, heads * head_dim, nq).transpose(1, 2)


class MultiScaleDeformableAttention(nn.Module):
    """Deformable cross-attention from queries (B, Nq, D) to multi-level values (B, Nv, D).

    `value_ratio` < 1 narrows the value path as ViT-Adapter does (value_proj D -> ratio*D,
    output_proj back to D); offsets are in pixels of each level, normalised by its (w, h).
    """

    def __init__(self, dim: int, num_heads: int = 8, num_levels: int = 4, num_points: int = 4,
                 value_ratio: float = 1.0):
        super().__init__()
        value_dim = int(dim * value_ratio)
        if value_dim % num_heads:
            raise ValueError(f"value dim {value_dim} (= {dim} * {value_ratio}) is not divisible by "
                             f"{num_heads} heads")
        self.dim, self.num_heads, self.num_levels, self.num_points = dim, num_heads, num_levels, num_points
        self.head_dim = value_dim // num_heads
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(dim, value_dim)
        self.output_proj = nn.Linear(value_dim, dim)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Deformable DETR's init: head h starts sampling along direction 2*pi*h/M (scaled so the
        larger coordinate is 1), point p at distance p + 1; uniform attention; xavier projections."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], dim=-1)
        grid = grid / grid.abs().max(dim=-1, keepdim=True).values
        grid = grid.view(self.num_heads, 1, 1, 2).repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor, value: torch.Tensor,
                value_shapes: Sequence[Shape2d]) -> torch.Tensor:
        """query (B, Nq, D); reference_points (B or 1, Nq, L, 2) normalised (x, y) in [0, 1];
        value (B, Nv, D) with Nv = sum(h * w) of `value_shapes`. Returns (B, Nq, D)."""
        b, nq, _ = query.shape
        if len(value_shapes) != self.num_levels or value.shape[1] != sum(h * w for h, w in value_shapes):
            raise ValueError(f"value {tuple(value.shape)} does not match {self.num_levels} levels "
                             f"{list(value_shapes)}")
        m, lv, p = self.num_heads, self.num_levels, self.num_points
        v = self.value_proj(value).view(b, value.shape[1], m, self.head_dim)
        offsets = self.sampling_offsets(query).view(b, nq, m, lv, p, 2)
        weights = self.attention_weights(query).view(b, nq, m, lv * p).softmax(-1).view(b, nq, m, lv, p)
        size = level_constants(value_shapes, offsets.device, offsets.dtype)[0]  # (L, 1, 2) as (w, h)
        locations = reference_points[:, :, None, :, None, :] + offsets / size
        return self.output_proj(deformable_sample(v, value_shapes, locations, weights))


def grid_reference_points(shapes: Sequence[Shape2d], device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised (x, y) cell centres of each grid, concatenated row-major: (1, sum h*w, 1, 2)."""
    refs = []
    for h, w in shapes:
        ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w
        y, x = torch.meshgrid(ys, xs, indexing="ij")
        refs.append(torch.stack([x.flatten(), y.flatten()], dim=-1))
    return torch.cat(refs, dim=0)[None, :, None, :]


class DropPath(nn.Module):
    """Stochastic depth per sample (Huang et al. 2016): drop a residual branch with prob. p."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ConvFFN(nn.Module):
    """ViT-Adapter's convolutional FFN on multi-grid tokens: Linear -> one depthwise 3x3 conv run on
    each token grid separately -> GELU -> Linear."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor, shapes: Sequence[Shape2d]) -> torch.Tensor:
        x = self.fc1(x)  # (B, N, C), N = sum h*w of `shapes`
        b, _, c = x.shape
        grids: List[torch.Tensor] = []
        for tokens, (h, w) in zip(x.split([h * w for h, w in shapes], dim=1), shapes):
            grid = tokens.transpose(1, 2).reshape(b, c, h, w)
            grids.append(self.dwconv(grid).flatten(2).transpose(1, 2))
        return self.fc2(self.act(torch.cat(grids, dim=1)))


class DeformableExtractor(nn.Module):
    """ViT-Adapter extractor: multi-grid queries take features from a frozen ViT by deformable
    cross-attention, then a ConvFFN (stochastic depth on the FFN branch only); pre-norm, residual."""

    def __init__(self, dim: int, num_heads: int = 16, num_points: int = 4, value_ratio: float = 0.5,
                 ffn_ratio: float = 0.25, drop_path: float = 0.0, gradient_checkpointing: bool = False):
        super().__init__()
        self.query_norm = nn.LayerNorm(dim, eps=1e-6)
        self.feat_norm = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiScaleDeformableAttention(dim, num_heads, 1, num_points, value_ratio)
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = ConvFFN(dim, int(dim * ffn_ratio))
        self.drop_path = DropPath(drop_path)
        self.gradient_checkpointing = gradient_checkpointing

    def _forward(self, query, reference_points, query_shapes, feat, feat_shape):
        query = query + self.attn(self.query_norm(query), reference_points, self.feat_norm(feat), [feat_shape])
        return query + self.drop_path(self.ffn(self.ffn_norm(query), query_shapes))

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor, query_shapes: Sequence[Shape2d],
                feat: torch.Tensor, feat_shape: Shape2d) -> torch.Tensor:
        """query (B, Nq, D) on `query_shapes` grids; feat (B, h*w, D) tokens of a `feat_shape` grid."""
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(self._forward, query, reference_points, query_shapes, feat, feat_shape,
                              use_reentrant=False)
        return self._forward(query, reference_points, query_shapes, feat, feat_shape)
