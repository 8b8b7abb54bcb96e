"""SegDINO (Yang et al., arXiv 2509.00833): frozen DINOv3 + a light linear head.

The paper-era head exactly: 4 taps (final LayerNorm applied) -> per-tap 1x1 projection to
[96, 192, 384, 768] channels (with bias) -> 3x3 conv to 128 (no bias) -> concatenate (512) ->
1x1 conv to the classes -> bilinear (align_corners=True) up to the input size. No norm and no
non-linearity: the head is linear in the features. For ViT-S and one output channel it has
2,213,793 parameters, the paper's 2.21 M. Multi-class through nnU-Net's softmax + Dice/CE loss
(the original code is binary only). The image reaches only the frozen encoder, so inputs with 2 or
>= 4 channels are mapped to 3 by a fixed rule (`base.fixed_channel_map`), not a learnable conv.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import DinoSegmentationNetwork

PROJECTION_CHANNELS = (96, 192, 384, 768)


class SegDINOHead(nn.Module):
    def __init__(self, embed_dim: int, num_classes: int, features: int = 128,
                 projection_channels: Sequence[int] = PROJECTION_CHANNELS):
        super().__init__()
        self.projections = nn.ModuleList(nn.Conv2d(embed_dim, c, 1) for c in projection_channels)
        self.refine = nn.ModuleList(nn.Conv2d(c, features, 3, padding=1, bias=False) for c in projection_channels)
        self.classifier = nn.Conv2d(features * len(projection_channels), num_classes, 1)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        size = maps[0].shape[-2:]
        fused = [refine(proj(m)) for m, proj, refine in zip(maps, self.projections, self.refine)]
        fused = [f if f.shape[-2:] == size else F.interpolate(f, size, mode="bilinear", align_corners=True)
                 for f in fused]
        return self.classifier(torch.cat(fused, dim=1))


class SegDINO(DinoSegmentationNetwork):
    slab_fusion_points = tuple(f"head.refine.{i}" for i in range(len(PROJECTION_CHANNELS)))  # each tap @ /16

    def __init__(self, input_channels: int, num_classes: int, backbone: str = "dinov3_vits16",
                 pos_embed_resize: str = "meta", imagenet_normalize: bool = False,
                 taps: Sequence[int] = None, features: int = 128, cpu_precision: str = "auto"):
        super().__init__(input_channels, num_classes, backbone, pos_embed_resize, imagenet_normalize, cpu_precision)
        self.taps = tuple(self.backbone.spec.default_taps if taps is None else taps)
        if len(self.taps) != len(PROJECTION_CHANNELS):
            raise ValueError(f"SegDINO uses {len(PROJECTION_CHANNELS)} taps, got {self.taps}")
        self.head = SegDINOHead(self.backbone.embed_dim, num_classes, features)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.backbone(x, self.taps)  # frozen, no autograd graph
        logits = self.head(maps)
        return F.interpolate(logits, x.shape[-2:], mode="bilinear", align_corners=True)
