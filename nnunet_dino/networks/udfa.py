"""U-DFA (Sajjad, Shaukat, Mir; arXiv 2510.00585, MLMI 2025): a frozen DINOv2 whose token stream
receives CNN detail at several depths, inside a U-Net.

The paper's code is not public; this follows the paper's figure and equations.
For ViT-B/14 (D = 768, 12 blocks) and a 224 x 224 input, strides relative to the padded input:

    image --SPA--> 32@/1  64@/2  128@/4  256@/8  512@/16          (trainable CNN)
      '--patch embed--> tokens --blocks 0-3--> LGFA 1 <-> SPA /4    (no autograd graph before it)
                                 --blocks 4-7--> LGFA 2 <-> SPA /8    (frozen weights, activation grads)
                                 --blocks 8-11-> LGFA 3 <-> SPA /16
    final LayerNorm -> (768, 16, 16) -> 1x1 conv to 512 -> fuse refined SPA /16 (resampled to the ViT
    grid) -> resample to the /8 grid -> fuse refined SPA /8 -> U-Net ladder: /4 (refined), /2, /1
    -> 1x1 head.

Each LGFA (paper Eq. 1-2) is two pre-norm multi-head
cross-attention blocks (`blocks.CrossAttentionBlock`):
  1. injection: the DINO patch tokens query the SPA tokens of that stage; the result is added to the
     token stream, which continues through the next frozen blocks;
  2. refinement: the SPA tokens query the updated patch tokens; the refined map replaces that SPA
     scale, for later LGFAs at the same scale and as the decoder skip.

Choices where the paper is silent:
- SPA (`spa`): dynamic-network-architectures' PlainConvEncoder with nnU-Net's 2D conventions (2 x
  [3x3 conv, InstanceNorm, LeakyReLU 0.01] per stage, stride-2 first conv). 'nnunet': channels
  32-64-128-256-512 at /1../16; its /4, /8, /16 stages meet the LGFAs and its /1 and /2 stages are
  also skips, so the decoder reaches full resolution with CNN detail. 'paper' (the paper's three
  scales): a one-conv 32-channel /2 stem, then 64@/4, 128@/8, 256@/16, which meet the LGFAs and are
  the only skips; below /4 the decoder upsamples by learned x2 stages without skips (transposed conv
  + 2 convs, 32 then 16 channels). README, "U-DFA's SPA", compares the two.
- Attention width = D with the ViT's head count (head dim 64 for S/B/L/g); MLP ratio 4 on both sides.
  Positions: fixed 2D sin-cos encodings of each cell's *pixel centre* (ViT cell i at 14i + 6.5, CNN
  cell i at stride*i), added to the query/key inputs only, so both grids share one coordinate frame.
- Prefix tokens (CLS, registers) are neither injected into nor attended to (they have no position);
  they keep flowing through the frozen blocks' self-attention.
- Zero init: both residual branches of the injection carry a LayerScale initialised to 0, so at step
  0 the token stream equals the plain backbone's. At step 0 only those gains get gradients (everything
  they gate is multiplied by 0); from step 1 on every injection parameter does. The refinement uses
  plain residuals (its output is a CNN map, there is nothing pretrained to preserve).
- Depth split: module k ends after block round((k + 1) L / N): 4/8/12 for ViT-B, 13/27/40 for g.
  Module k takes the SPA scale whose third of the depth holds its centre, index floor(3 (k + 1/2) / N):
  N = 3 -> /4, /8, /16; N = 2 -> /4, /16; N = 6 -> /4, /4, /8, /8, /16, /16 (a scale used twice is
  refined twice); N = 1 -> /8.
- Bottleneck: the 1/14 ViT grid never aligns with /8 or /16, so maps change grid once each way by
  bilinear resampling with exact cell centres (`blocks.resample_to_grid`), then the rest is a plain
  nnU-Net ladder (transposed conv, crop odd overshoot, concat, 2 convs). Only the ViT patch (14) is
  needed as a padding multiple. No deep-supervision heads: the forward returns one tensor.
- Gradients: blocks before the first injection and the patch embedding run under no_grad (unless the
  encoder's adaptation trains them: `FrozenDinoBackbone.graph_scope`), so a learnable 1x1 channel
  mixer (inputs with 2 or >= 4 channels) learns through the SPA only.
  `checkpoint_backbone=True` recomputes the later frozen blocks in backward (for L and g).
- Precision on CUDA: the encoder's own rule (`FrozenDinoBackbone.autocast`: bf16, fp16 before compute
  capability 8.0) for the patch embedding and the blocks before the first injection; the blocks that
  carry gradients run in nnU-Net's fp16 step autocast rather than nesting a second dtype inside it
  (which torch.compile cannot differentiate). On CPUs with native bf16 the whole forward runs under
  bf16 autocast (`cpu_precision` in networks/base.py).
- Init: nnU-Net's He-normal for convs; trunc-normal(0.02) for attention and MLP linears.

Parameter counts with the defaults, 1 input channel and 4 classes (each further class adds 33;
inputs with 2 or >= 4 channels add a 3C + 3 channel mixer), asserted in tests/test_udfa_network.py
(S and B built for real, L and g on the meta device):

    backbone         trainable   /      total   share
    dinov2_vits14   24,581,444   /   46,637,636   52.7 %
    dinov2_vitb14   42,102,596   /  128,682,308   32.7 %   (paper: "33 %")
    dinov2_vitl14   59,681,604   /  364,049,220   16.4 %
    dinov2_vitg14  108,995,396   / 1,245,474,628   8.8 %

With `spa="paper"` (the three-scale SPA): S 15,040,404 / 37,096,596 (40.5 %), B 31,873,428 /
118,453,140 (26.9 %), L 48,993,684 (13.9 %), g 97,389,972 (7.9 %): SPA 1.2 M instead of 4.7 M,
bottleneck and decoder 7.4 M instead of 10.6 M (B), LGFAs 7.3, 7.6, 8.4 M (narrower SPA widths).

The CNN side (SPA 4.7 M, bottleneck and decoder 10.6 M) does not depend on the backbone; for ViT-B
the three LGFAs hold 7.6, 8.4 and 10.8 M (injection 6.1-6.7 M, refinement 1.5-4.1 M, growing with the
SPA width of their scale). The `_reg4` variants have the same trainable count; their frozen total
grows by 3 D (4 register tokens, no CLS position embedding).
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn

from ..backbones import BackboneSpec
from .base import DinoSegmentationNetwork
from .registry import NetworkFamily, Size, TrainerVariant, register_network_family
from .blocks import (CrossAttentionBlock, SkipLadderDecoder, conv_stack, map_to_tokens, nnunet_conv_kwargs,
                     patch_grid, resample_to_grid, sincos_position_encoding_2d, strided_conv_grid,
                     tokens_to_map)

#: SPA variants: (output strides, default widths). 'nnunet': a 5-stage nnU-Net encoder whose /1 and /2
#: stages are extra decoder skips; 'paper': the paper's three scales, /4, /8, /16 (a one-conv /2 stem
#: below them is not an output), the decoder reaching /1 by learned upsampling without skips.
SPA_VARIANTS = {"nnunet": ((1, 2, 4, 8, 16), (32, 64, 128, 256, 512)),
                "paper": ((4, 8, 16), (64, 128, 256))}
SPA_CHANNELS = SPA_VARIANTS["nnunet"][1]
FUSION_STRIDES = (4, 8, 16)             # the SPA scales the LGFAs exchange with


def block_boundaries(depth: int, num_modules: int) -> Tuple[int, ...]:
    """Exclusive end block of each of `num_modules` near-equal groups (round half up)."""
    if not 1 <= num_modules <= depth:
        raise ValueError(f"num_fusion_modules must be in [1, {depth}] for a {depth}-block ViT, got {num_modules}")
    return tuple(int(math.floor((k + 1) * depth / num_modules + 0.5)) for k in range(num_modules))


def fusion_levels(num_modules: int, spa_strides: Sequence[int] = SPA_VARIANTS["nnunet"][0]) -> Tuple[int, ...]:
    """SPA output index for each module: the scale whose share of the depth contains the module's centre."""
    return tuple(spa_strides.index(FUSION_STRIDES[int(len(FUSION_STRIDES) * (k + 0.5) / num_modules)])
                 for k in range(num_modules))


def spa_encoder(strides: Sequence[int], channels: Sequence[int], convs_per_stage: int) -> Tuple[nn.Module, int]:
    """nnU-Net's PlainConvEncoder with outputs at `strides` (a ladder of stride-2 stages): below a first
    output stride s > 1, log2(s) - 1 one-conv stem stages of half the first width. Returns the encoder
    and the number of stem stages (its first skips, not SPA outputs)."""
    stem = max(int(math.log2(strides[0])) - 1, 0)
    stage_strides = ([1] if strides[0] == 1 else [2] * (stem + 1)) + [2] * (len(strides) - 1)
    encoder = PlainConvEncoder(3, stem + len(strides), [channels[0] // 2] * stem + list(channels), kernel_sizes=3,
                               strides=stage_strides, n_conv_per_stage=[1] * stem + [convs_per_stage] * len(strides),
                               return_skips=True, **nnunet_conv_kwargs())
    return encoder, stem


class LocalGlobalFusionAdapter(nn.Module):
    """LGFA: inject SPA detail into the DINO patch tokens, then refine the SPA tokens with them."""

    def __init__(self, embed_dim: int, spa_channels: int, num_heads: int, attention_dim: int,
                 mlp_ratio: float = 4.0):
        super().__init__()
        self.inject = CrossAttentionBlock(embed_dim, spa_channels, num_heads, attention_dim, mlp_ratio,
                                          layer_scale_init=0.0)
        self.refine = CrossAttentionBlock(spa_channels, embed_dim, num_heads, attention_dim, mlp_ratio)

    def forward(self, patch_tokens: torch.Tensor, vit_pos: torch.Tensor, spa_tokens: torch.Tensor,
                spa_pos: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, N, D) patch tokens + (N, D) positions, (B, M, C) SPA tokens + (M, C) positions ->
        (updated patch tokens, refined SPA tokens)."""
        patch_tokens = self.inject(patch_tokens, spa_tokens, vit_pos, spa_pos)
        spa_tokens = self.refine(spa_tokens, patch_tokens, spa_pos, vit_pos)
        return patch_tokens, spa_tokens


class UDFA(DinoSegmentationNetwork):
    """U-DFA network. Options beyond the shared five:

    num_fusion_modules: LGFAs, one after each of as many near-equal block groups (paper: 3; ablation 2, 6).
    spa: 'nnunet' (5 stages /1 ... /16, all skips) or 'paper' (/4, /8, /16; learned upsampling to /1).
    spa_channels: SPA widths at the variant's strides (default: `SPA_VARIANTS`).
    spa_convs_per_stage, decoder_convs_per_stage: conv-IN-LReLU blocks per stage.
    num_heads, attention_dim: LGFA attention (default: the ViT's heads and width).
    mlp_ratio: LGFA MLP hidden width over its residual width (0 disables the MLPs).
    bottleneck_channels: width the final tokens are projected to.
    checkpoint_backbone: recompute the frozen blocks that carry gradients in backward (saves memory).
    """

    image_reaches_trainable_path = True  # the SPA CNN reads the mapped image
    slab_fusion_points = ("fuse_eighth", "decoder.stages.2")  # the /8 bottleneck and the /1 decoder stage

    def __init__(self, input_channels: int, num_classes: int, backbone: Union[str, BackboneSpec] = "dinov2_vitb14",
                 pos_embed_resize: Optional[str] = None, imagenet_normalize: bool = False, num_fusion_modules: int = 3,
                 spa: str = "nnunet", spa_channels: Optional[Sequence[int]] = None, spa_convs_per_stage: int = 2,
                 num_heads: Optional[int] = None, attention_dim: Optional[int] = None, mlp_ratio: float = 4.0,
                 bottleneck_channels: int = 512, decoder_convs_per_stage: int = 2,
                 checkpoint_backbone: bool = False, cpu_precision: str = "auto"):
        super().__init__(input_channels, num_classes, backbone, pos_embed_resize, imagenet_normalize, cpu_precision)
        if spa not in SPA_VARIANTS:
            raise ValueError(f"spa must be one of {tuple(SPA_VARIANTS)}, got {spa!r}")
        self.spa_strides, default_channels = SPA_VARIANTS[spa]
        spa_channels = tuple(spa_channels or default_channels)
        if len(spa_channels) != len(self.spa_strides):
            raise ValueError(f"spa_channels needs {len(self.spa_strides)} widths (strides {self.spa_strides}), "
                             f"got {spa_channels}")
        embed_dim = self.backbone.embed_dim
        self.block_ends = block_boundaries(self.backbone.depth, num_fusion_modules)
        self.fusion_levels = fusion_levels(num_fusion_modules, self.spa_strides)
        self.checkpoint_backbone = checkpoint_backbone
        self.vit_grid = patch_grid(self.backbone.patch_size)
        self.spa_grids = tuple(strided_conv_grid(s) for s in self.spa_strides)

        self.spa, self.spa_stem = spa_encoder(self.spa_strides, spa_channels, spa_convs_per_stage)
        heads = num_heads or self.backbone.spec.num_heads
        self.lgfa = nn.ModuleList(
            LocalGlobalFusionAdapter(embed_dim, spa_channels[level], heads, attention_dim or embed_dim, mlp_ratio)
            for level in self.fusion_levels)
        *finer, c8, c16 = spa_channels
        self.bottleneck_proj = conv_stack(embed_dim, bottleneck_channels, num_convs=1, kernel_size=1)
        self.bottleneck_fuse = conv_stack(bottleneck_channels + c16, bottleneck_channels, decoder_convs_per_stage)
        self.fuse_eighth = conv_stack(bottleneck_channels + c8, c8, decoder_convs_per_stage)
        upsampling = tuple(max(finer[0] >> k, 8) for k in range(1, int(math.log2(self.spa_strides[0])) + 1))
        self.decoder = SkipLadderDecoder(c8, tuple(reversed(finer)), num_classes, decoder_convs_per_stage, upsampling)
        for cnn in (self.spa, self.bottleneck_proj, self.bottleneck_fuse, self.fuse_eighth, self.decoder):
            cnn.apply(InitWeights_He(1e-2))

    # --- encoder: SPA + frozen ViT with LGFAs ---------------------------------------------------
    def _frozen_blocks(self, tokens: torch.Tensor, rope, start: int, stop: int, like: torch.Tensor) -> torch.Tensor:
        with self.backbone.autocast(like):
            tokens = self.backbone.run_blocks(tokens, rope, start, stop, checkpoint=self.checkpoint_backbone)
        return tokens.to(like.dtype)

    def encode(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int], List[torch.Tensor], List[torch.Tensor]]:
        """Padded (B, 3, H, W) image -> (final token stream (B, prefix + h*w, D), ViT grid (h, w),
        SPA maps (`spa_strides`) after refinement, the token stream right after each injection)."""
        spa = list(self.spa(x))[self.spa_stem:]
        prefix = self.backbone.spec.num_prefix_tokens
        with self.backbone.graph_scope(self.block_ends[0]):  # no graph before the first injection, unless it trains
            with self.backbone.autocast(x):
                tokens, rope, grid = self.backbone.embed(x)
            tokens = self._frozen_blocks(tokens, rope, 0, self.block_ends[0], x)
        vit_pos = sincos_position_encoding_2d(grid, tokens.shape[-1], self.vit_grid, device=x.device)
        streams, done = [], self.block_ends[0]
        for lgfa, level, end in zip(self.lgfa, self.fusion_levels, self.block_ends):
            if end > done:
                tokens, done = self._frozen_blocks(tokens, rope, done, end, x), end
            size = tuple(spa[level].shape[-2:])
            spa_pos = sincos_position_encoding_2d(size, spa[level].shape[1], self.spa_grids[level], device=x.device)
            patch, spa_tokens = lgfa(tokens[:, prefix:], vit_pos, map_to_tokens(spa[level]), spa_pos)
            tokens = torch.cat([tokens[:, :prefix], patch], dim=1)
            spa[level] = tokens_to_map(spa_tokens, size)
            streams.append(tokens)
        return tokens, grid, spa, streams

    # --- bottleneck + decoder -------------------------------------------------------------------
    def segment(self, x: torch.Tensor) -> torch.Tensor:
        tokens, grid, spa, _ = self.encode(x)
        vit_map = self.backbone.to_map(tokens, grid)                 # final LayerNorm, (B, D, h, w)
        b = self.bottleneck_proj(vit_map)
        s16 = resample_to_grid(spa[-1], grid, self.spa_grids[-1], self.vit_grid)
        b = self.bottleneck_fuse(torch.cat([b, s16], dim=1))         # on the ViT grid
        b = resample_to_grid(b, tuple(spa[-2].shape[-2:]), self.vit_grid, self.spa_grids[-2])
        b = self.fuse_eighth(torch.cat([b, spa[-2]], dim=1))         # on the /8 grid
        h, w = x.shape[-2:]  # skipless stages below the finest skip: the ceil-halved sizes of a conv ladder
        sizes = [(-(-h // s), -(-w // s)) for s in (self.spa_strides[0] >> k for k in range(1, 5)) if s >= 1]
        return self.decoder(b, spa[-3::-1], sizes)                   # skips /4 (/2, /1) -> logits at /1


# --- the family's row (networks/registry.py) ---------------------------------------------------------------
_CHECKPOINTED = (("checkpoint_backbone", True),)  # L and g recompute the frozen blocks that carry gradients
register_network_family(NetworkFamily(
    name="U-DFA", key="udfa", network_class=UDFA, trainer="nnUNetTrainerUDFA",
    # U-DFA (arXiv 2510.00585): DINOv2 + SPA + LGFA injection. Paper: Adam(W), wd 1e-4, Dice + CE.
    # AdamW 3e-4 with a 10-epoch linear warm-up then poly decay: the zero-initialised injection gates and
    # the fresh CNN get small first updates (Adam's early steps are large), then train at a rate that
    # suits attention adapters; nnU-Net's SGD 1e-2 is tuned for fully trained CNNs, not adapters.
    # The SPA is a 5-stage nnU-Net encoder: at equal iterations, and at equal time on the demo's test
    # slabs, it beats the paper's three scales (README, "U-DFA's SPA"), which `_SPA3` selects.
    recipe=dict(optimizer_name="adamw", learning_rate=3e-4, weight_decay_value=1e-4, lr_schedule="poly",
                warmup_epochs=10, network_kwargs={"spa": "nnunet"}),
    sizes=(Size("_S", "dinov2_vits14"), Size("", "dinov2_vitb14"), Size("_L", "dinov2_vitl14", _CHECKPOINTED),
           Size("_G", "dinov2_vitg14", _CHECKPOINTED)),
    variants=(  # the paper's SPA (three scales, /4, /8, /16; learned upsampling to full resolution), and the
                # paper's ablation of the number of fusion modules
        TrainerVariant("_SPA3", "", dict(network_kwargs={"spa": "paper"})),
        TrainerVariant("_S_SPA3", "_S", dict(network_kwargs={"spa": "paper"})),
        TrainerVariant("_LGFA2", "", dict(network_kwargs={"num_fusion_modules": 2})),
        TrainerVariant("_LGFA6", "", dict(network_kwargs={"num_fusion_modules": 6}))),
    # the paper: Adam, weight decay 1e-4, batch 12, 224 x 224; its channel rule and lr are not published
    paper_recipe=dict(input_recipe="auto", optimizer_name="adam", batch_size_value=12, patch_size_value=(224, 224),
                      network_kwargs={"spa": "paper"}),
    adapted_sizes=("", "_S"),
    tiny_options=(("spa_channels", (8, 16, 16, 32, 32)), ("bottleneck_channels", 32)),
    injects=True, bench_variants=(("_spa3", " (3-scale SPA)", "_SPA3"),), bench_step_goal=0.8))
