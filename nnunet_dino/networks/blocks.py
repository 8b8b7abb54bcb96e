"""Generic blocks the networks compose (nothing here knows a particular paper).

- Grid geometry: where each cell of a feature map sits on the (padded) input image, 2D sin-cos
  position encodings on those pixel coordinates, and bilinear resampling between two grids (a ViT
  grid at stride 14 and a CNN ladder at strides 4, 8, 16 never share cell centres).
- Multi-head cross-attention on `F.scaled_dot_product_attention`, wrapped in a pre-norm transformer
  block whose residual branches can start at exactly zero (zero LayerScale).
- nnU-Net conv stacks (conv -> InstanceNorm -> LeakyReLU, from dynamic-network-architectures) and a
  U-Net decoder over a stride-2 skip ladder that tolerates odd sizes.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from dynamic_network_architectures.building_blocks.simple_conv_blocks import StackedConvBlocks
from torch import nn


# --- grid geometry ---------------------------------------------------------------------------
class PixelGrid(NamedTuple):
    """Cell i of a feature map is centred on input pixel `offset + stride * i` (both axes)."""
    stride: float
    offset: float = 0.0


def patch_grid(patch_size: int) -> PixelGrid:
    """Non-overlapping p x p patches (a ViT): cell i covers pixels p*i .. p*i + p - 1."""
    return PixelGrid(float(patch_size), (patch_size - 1) / 2.0)


def strided_conv_grid(stride: int) -> PixelGrid:
    """A ladder of 3x3 / stride-2 / padding-1 convs (nnU-Net encoders): cell i sits on pixel stride*i."""
    return PixelGrid(float(stride), 0.0)


def _centres(n: int, grid: PixelGrid, device, dtype=torch.float32) -> torch.Tensor:
    return grid.offset + grid.stride * torch.arange(n, device=device, dtype=dtype)


def sincos_position_encoding_2d(size: Tuple[int, int], dim: int, grid: PixelGrid,
                                temperature: float = 10000.0, device=None,
                                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(h*w, dim) fixed 2D sin-cos encoding of the cells' pixel centres, row-major.

    Layout [sin y, cos y, sin x, cos x], dim/4 frequencies temperature^(-k/(dim/4)) per block. It is a
    function of pixel coordinates, not cell indices, so grids of different strides (a ViT at 14, a
    CNN at 4/8/16) place the same image location at the same phase of the same frequency range.
    """
    if dim % 4:
        raise ValueError(f"2D sin-cos position encoding needs dim divisible by 4, got {dim}")
    h, w = size
    bands = dim // 4
    omega = temperature ** (-torch.arange(bands, device=device, dtype=torch.float32) / bands)
    y = _centres(h, grid, device)[:, None] * omega[None]  # (h, bands)
    x = _centres(w, grid, device)[:, None] * omega[None]  # (w, bands)
    y = torch.cat([y.sin(), y.cos()], dim=1)[:, None, :].expand(h, w, 2 * bands)
    x = torch.cat([x.sin(), x.cos()], dim=1)[None, :, :].expand(h, w, 2 * bands)
    return torch.cat([y, x], dim=-1).reshape(h * w, dim).to(dtype)


def resample_to_grid(x: torch.Tensor, size: Tuple[int, int], src: PixelGrid, dst: PixelGrid) -> torch.Tensor:
    """Bilinear resampling of a (B, C, h, w) map on grid `src` onto `size` cells of grid `dst`,
    matching cell centres exactly in pixel space (edges clamp to the border cells)."""
    def axis(n_src: int, n_dst: int) -> torch.Tensor:
        idx = (_centres(n_dst, dst, x.device) - src.offset) / src.stride  # fractional source index
        return idx * (2.0 / (n_src - 1)) - 1.0 if n_src > 1 else torch.zeros_like(idx)

    if tuple(x.shape[-2:]) == tuple(size) and src == dst:
        return x
    gy, gx = axis(x.shape[-2], size[0]), axis(x.shape[-1], size[1])
    sample = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)  # (h', w', 2) as (x, y)
    sample = sample.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1, -1)
    return F.grid_sample(x, sample, mode="bilinear", padding_mode="border", align_corners=True)


def tokens_to_map(tokens: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """(B, h*w, C) -> (B, C, h, w)."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], size[0], size[1])


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h*w, C)."""
    return x.flatten(2).transpose(1, 2)


# --- attention -------------------------------------------------------------------------------
class LayerScale(nn.Module):
    """Per-channel residual gain (CaiT). Initialised to 0 the branch it gates starts switched off."""

    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class MultiHeadCrossAttention(nn.Module):
    """Queries from one token set attend to another (keys/values), via F.scaled_dot_product_attention.

    Position encodings, when given, are added to the inputs of the query and key projections only,
    so attention can use location while the values (what gets written back) carry content alone.
    """

    def __init__(self, query_dim: int, context_dim: int, num_heads: int, inner_dim: Optional[int] = None,
                 out_dim: Optional[int] = None):
        super().__init__()
        inner_dim = inner_dim or query_dim
        if inner_dim % num_heads:
            raise ValueError(f"attention width {inner_dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q = nn.Linear(query_dim, inner_dim)
        self.k = nn.Linear(context_dim, inner_dim)
        self.v = nn.Linear(context_dim, inner_dim)
        self.proj = nn.Linear(inner_dim, out_dim or query_dim)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:  # (B, N, h*d) -> (B, h, N, d)
        return t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def forward(self, query: torch.Tensor, context: torch.Tensor, query_pos: Optional[torch.Tensor] = None,
                context_pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        q = self._heads(self.q(query if query_pos is None else query + query_pos))
        k = self._heads(self.k(context if context_pos is None else context + context_pos))
        v = self._heads(self.v(context))
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, Nq, d)
        return self.proj(out.transpose(1, 2).flatten(2))


class CrossAttentionBlock(nn.Module):
    """Pre-norm transformer block with cross-attention instead of self-attention:

        x <- x + g_a * MHCA(LN(x) + pos_x, LN(ctx) + pos_ctx)
        x <- x + g_m * MLP(LN(x))            (when mlp_ratio > 0)

    `layer_scale_init=None` gives plain residuals (g = 1); `0.0` gives zero LayerScales, so the block
    is exactly the identity at initialisation while the gains still receive gradients.
    """

    def __init__(self, dim: int, context_dim: int, num_heads: int, inner_dim: Optional[int] = None,
                 mlp_ratio: float = 4.0, layer_scale_init: Optional[float] = None):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_ctx = nn.LayerNorm(context_dim)
        self.attn = MultiHeadCrossAttention(dim, context_dim, num_heads, inner_dim, out_dim=dim)
        self.gamma_attn = LayerScale(dim, layer_scale_init) if layer_scale_init is not None else nn.Identity()
        self.mlp = None
        if mlp_ratio > 0:
            hidden = int(round(dim * mlp_ratio))
            self.norm_mlp = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
            self.gamma_mlp = LayerScale(dim, layer_scale_init) if layer_scale_init is not None else nn.Identity()
        self.apply(_init_transformer)  # leaves the LayerScale gains as requested

    def forward(self, x: torch.Tensor, context: torch.Tensor, pos: Optional[torch.Tensor] = None,
                context_pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + self.gamma_attn(self.attn(self.norm_q(x), self.norm_ctx(context), pos, context_pos))
        if self.mlp is not None:
            x = x + self.gamma_mlp(self.mlp(self.norm_mlp(x)))
        return x


def _init_transformer(module: nn.Module) -> None:
    """ViT convention: truncated-normal(0.02) linear weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# --- nnU-Net conv stacks and decoder ---------------------------------------------------------
def nnunet_conv_kwargs() -> dict:
    """nnU-Net's 2D defaults: conv with bias -> InstanceNorm(eps 1e-5, affine) -> LeakyReLU(0.01)."""
    return dict(conv_op=nn.Conv2d, conv_bias=True, norm_op=nn.InstanceNorm2d,
                norm_op_kwargs={"eps": 1e-5, "affine": True}, dropout_op=None, dropout_op_kwargs=None,
                nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True})


def conv_stack(in_channels: int, out_channels: int, num_convs: int = 2, stride: int = 1,
               kernel_size: int = 3) -> StackedConvBlocks:
    """`num_convs` x [conv kxk -> InstanceNorm -> LeakyReLU]; the first conv carries the stride."""
    return StackedConvBlocks(num_convs, input_channels=in_channels, output_channels=out_channels,
                             kernel_size=kernel_size, initial_stride=stride, **nnunet_conv_kwargs())


def crop_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop bottom/right to `size`: a x2 upsampling of a ceil-halved odd size is 1 cell too large."""
    if x.shape[-2] < size[0] or x.shape[-1] < size[1]:
        raise ValueError(f"cannot crop {tuple(x.shape[-2:])} to the larger {tuple(size)}")
    return x[..., :size[0], :size[1]]


class SkipLadderDecoder(nn.Module):
    """nnU-Net decoder over skips on a stride-2 ladder, coarse to fine, ending in a 1x1 head.

    Each stage: transposed conv (k2, s2) to the skip's channels -> crop to the skip's size (strided
    3x3 convs round odd sizes up, so x2 can overshoot by one cell; cropping keeps cells aligned) ->
    concatenate the skip -> `convs_per_stage` x conv-IN-LReLU. Unlike
    `dynamic_network_architectures`' UNetDecoder it needs no encoder object, accepts odd sizes and
    builds only the one segmentation layer it uses. `upsample_channels`: further x2 stages after the
    last skip (learned upsampling without skips: transposed conv -> crop -> convs), e.g. from a /4
    skip to full resolution.
    """

    def __init__(self, in_channels: int, skip_channels: Sequence[int], num_classes: int,
                 convs_per_stage: int = 2, upsample_channels: Sequence[int] = ()):
        super().__init__()
        self.upsample = nn.ModuleList()
        self.stages = nn.ModuleList()
        below = in_channels
        for ch, skip in [(c, True) for c in skip_channels] + [(c, False) for c in upsample_channels]:  # coarse -> fine
            self.upsample.append(nn.ConvTranspose2d(below, ch, kernel_size=2, stride=2))
            self.stages.append(conv_stack(2 * ch if skip else ch, ch, convs_per_stage))
            below = ch
        self.num_skips = len(skip_channels)
        self.head = nn.Conv2d(below, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor],
                sizes: Sequence[Tuple[int, int]] = ()) -> torch.Tensor:
        """`x` sits one ladder step below `skips[0]`; skips are ordered coarse -> fine; `sizes`: the
        output sizes of the stages without skips (their crops)."""
        targets = [s.shape[-2:] for s in skips] + list(sizes)
        for i, (up, stage, size) in enumerate(zip(self.upsample, self.stages, targets)):
            x = crop_to(up(x), size)
            x = stage(torch.cat([x, skips[i]], dim=1) if i < self.num_skips else x)
        return self.head(x)


__all__ = ["PixelGrid", "patch_grid", "strided_conv_grid", "sincos_position_encoding_2d", "resample_to_grid",
           "tokens_to_map", "map_to_tokens", "LayerScale", "MultiHeadCrossAttention", "CrossAttentionBlock",
           "nnunet_conv_kwargs", "conv_stack", "crop_to", "SkipLadderDecoder"]
