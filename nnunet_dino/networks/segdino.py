"""SegDINO (Yang et al., arXiv 2509.00833): frozen DINOv3 + a light linear head.

Two heads, selected by `head`: 'paper' (default), the paper-era head exactly: 4 taps (final LayerNorm applied) -> per-tap 1x1 projection to
[96, 192, 384, 768] channels (with bias) -> 3x3 conv to 128 (no bias) -> concatenate (512) ->
1x1 conv to the classes -> bilinear (align_corners=True) up to the input size. No norm and no
non-linearity: the head is linear in the features. For ViT-S and one output channel it has
2,213,793 parameters, the paper's 2.21 M. 'x4', the authors' current code (script-Yang/segdino after
its "scale-related bug" fix): the first level's 3x3 conv is followed by a ConvTranspose2d(128, 128,
kernel 4, stride 4, no bias), the other levels are resized (bilinear, align_corners=True) to that /4
map before the concatenation, so the classifier runs at /4 and the final upsampling is x4: 262,144
more parameters, 2,475,937 for ViT-S and one output channel (tests/test_segdino.py). Multi-class through nnU-Net's softmax + Dice/CE loss
(the original code is binary only). The image reaches only the frozen encoder, so inputs with 2 or
>= 4 channels are mapped to 3 by a fixed rule (`base.fixed_channel_map`), not a learnable conv.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import DinoSegmentationNetwork
from .registry import NetworkFamily, Size, TrainerVariant, register_network_family

PROJECTION_CHANNELS = (96, 192, 384, 768)


HEADS = ("paper", "x4")


class SegDINOHead(nn.Module):
    def __init__(self, embed_dim: int, num_classes: int, features: int = 128,
                 projection_channels: Sequence[int] = PROJECTION_CHANNELS, head: str = "paper"):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"SegDINO head must be one of {HEADS}, got {head!r}")
        self.projections = nn.ModuleList(nn.Conv2d(embed_dim, c, 1) for c in projection_channels)
        self.refine = nn.ModuleList(nn.Conv2d(c, features, 3, padding=1, bias=False) for c in projection_channels)
        self.upsample_first = (nn.ConvTranspose2d(features, features, 4, stride=4, bias=False) if head == "x4"
                               else None)
        self.classifier = nn.Conv2d(features * len(projection_channels), num_classes, 1)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        fused = [refine(proj(m)) for m, proj, refine in zip(maps, self.projections, self.refine)]
        if self.upsample_first is not None:
            fused[0] = self.upsample_first(fused[0])
        size = fused[0].shape[-2:]
        fused = [f if f.shape[-2:] == size else F.interpolate(f, size, mode="bilinear", align_corners=True)
                 for f in fused]
        return self.classifier(torch.cat(fused, dim=1))


class SegDINO(DinoSegmentationNetwork):
    slab_fusion_points = tuple(f"head.refine.{i}" for i in range(len(PROJECTION_CHANNELS)))  # each tap @ /16

    def __init__(self, input_channels: int, num_classes: int, backbone: str = "dinov3_vits16",
                 pos_embed_resize: Optional[str] = None, imagenet_normalize: bool = False,
                 taps: Sequence[int] = None, features: int = 128, head: str = "paper", cpu_precision: str = "auto"):
        super().__init__(input_channels, num_classes, backbone, pos_embed_resize, imagenet_normalize, cpu_precision)
        self.taps = tuple(self.backbone.spec.default_taps if taps is None else taps)
        if len(self.taps) != len(PROJECTION_CHANNELS):
            raise ValueError(f"SegDINO uses {len(PROJECTION_CHANNELS)} taps, got {self.taps}")
        self.head = SegDINOHead(self.backbone.embed_dim, num_classes, features, head=head)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.backbone(x, self.taps)  # frozen, no autograd graph
        logits = self.head(maps)
        return F.interpolate(logits, x.shape[-2:], mode="bilinear", align_corners=True)


# --- the family's row (networks/registry.py) ---------------------------------------------------------------
register_network_family(NetworkFamily(
    name="SegDINO", key="segdino", network_class=SegDINO, trainer="nnUNetTrainerSegDINO",
    # SegDINO (arXiv 2509.00833): DINOv3 + linear multi-level head; AdamW 1e-4, wd 1e-4, no schedule
    recipe=dict(optimizer_name="adamw", learning_rate=1e-4, weight_decay_value=1e-4, lr_schedule="constant"),
    sizes=(Size("", "dinov3_vits16"), Size("_B", "dinov3_vitb16"), Size("_L", "dinov3_vitl16")),
    # the authors' current head: first level upsampled x4 by a transposed conv before the fusion
    variants=(TrainerVariant("_HeadX4", "", dict(network_kwargs={"head": "x4"})),),
    # the official code leaves the frozen DINOv3 in train mode: RoPE coordinates rescaled by a factor in [1/2, 2]
    paper_recipe=dict(num_epochs_value=50, batch_size_value=4, input_recipe_options={"rgb_affine": True},
                      backbone_train_augmentation={"rope_rescale": 2.0}),
    injects=False, bench_step_goal=0.25))
