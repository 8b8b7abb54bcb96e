"""Dino U-Net (Gao et al., arXiv 2508.20909): frozen DINOv3 + spatial-prior adapter + FAPM +
nnU-Net decoder, as the official code runs it.

    image -> SPM (CNN, /4../32) --tokens--> 4 interaction blocks (extractor only: SPM tokens query
    the frozen ViT taps by deformable cross-attention; the last block runs 3 passes) -> maps D @
    /4, /8, /16, /32 (+ ViT maps, per-level norm) -> FAPM -> [32, 64, 128, 256] -> learnable x4
    upsampling -> skips @ /1, /2, /4, /8 -> nnU-Net UNetDecoder (3 stages) -> 1x1 head.

Batch norm as the official code: built as BatchNorm2d, which nnU-Net's multi-GPU training turns into
the official SyncBatchNorm (nnUNetTrainer converts every BatchNorm before wrapping the network in DDP;
the statistics then span all GPUs' batches). Single-GPU and CPU runs keep BatchNorm2d, which is what
SyncBatchNorm computes for one process. `norm='instance'` is an alternative for small batches.

Differences from the official network (the recipe around it -- epochs, mirroring, planning, loss --
is listed row by row in the README, "Deviations from the papers"):
- the ViT stays in eval(); the official code leaves it in train mode, where DINOv3 rescales its RoPE
  coordinates at random per block (and the 7B drops residual branches). The frozen encoder's
  `rope_rescale` / `drop_path` options reproduce that (the `_paper` trainers switch them on);
- channels: 2 or >= 4 channels go through a learnable 1x1 mix here; the official code maps 2 to
  [c0, c1, c0] and keeps the first 3 of more (`input_recipe = "official"` does that);
- three-channel data normalised by nnU-Net's rgb_to_0_1 get the weights' mean/std here, [0, 1] there
  (`input_recipe = "official"` keeps [0, 1]);
- the ConvFFN and the query split take the grid shapes explicitly, so H and W only need to be
  multiples of 32 and of the ViT patch (the shell pads to that and crops back);
- the deformable attention is the pure-PyTorch grid_sample formulation (the official backward needs
  a compiled CUDA op); the backbone computes in bf16 on GPUs with native bf16, fp16 before;
- gradient checkpointing is off by default (a runtime choice, `gradient_checkpointing=True`
  reproduces the official `with_cp`).

Trainable parameters for 2 classes and 1 input channel (tests/test_dino_unet_network.py):

    ViT       adapter       FAPM  upsampling  decoder        total   published
    S/16    3,698,432  1,393,214     348,640  754,274    6,194,560     6.19 M
    B/16   10,193,984  1,884,734     348,640  754,274   13,181,632    13.18 M
    L/16   16,654,272  2,212,414     348,640  754,274   19,969,600    19.97 M
    7B/16 227,084,736  6,144,574     348,640  754,274  234,332,224   234.3 M

They equal the published counts to their rounding (S +0.07 %, B +0.01 %, L -0.002 %, 7B +0.01 % of the
rounded figures), which include the two unused seg layers (388 parameters for 2 classes), which
we keep frozen (see the decoder). The frozen ViT is not included; 1 or 3 input channels add
nothing, any other count adds the shell's learnable 1x1 channel mix (15 parameters for 4 channels;
the spatial prior module reads the mapped image, so the mix gets a gradient); each extra class adds
33 trainable parameters (the head's 32 weights and a bias).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn.functional as F
from torch import nn
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder

from ..backbones import BackboneSpec
from .base import DinoSegmentationNetwork
from .registry import NetworkFamily, Size, TrainerVariant, register_network_family
from .deformable_attention import DeformableExtractor, MultiScaleDeformableAttention, grid_reference_points

NORMS = ("batch", "instance")


def norm2d(kind: str, channels: int) -> nn.Module:
    """The adapter's norm: BatchNorm2d (SyncBatchNorm once nnU-Net's DDP converts it, as the official
    code) or affine InstanceNorm2d."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, eps=1e-5, affine=True)
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


def _conv_norm_relu(cin: int, cout: int, stride: int, norm: str) -> List[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), norm2d(norm, cout), nn.ReLU(inplace=True)]


class SpatialPriorModule(nn.Module):
    """ViT-Adapter's CNN branch: stem (/4, 64 ch) and three stride-2 convs (128, 256, 256 ch at
    /8, /16, /32), each level projected to the ViT width D by a 1x1 conv."""

    def __init__(self, dim: int, channels: int = 64, norm: str = "batch"):
        super().__init__()
        c = channels
        self.stem = nn.Sequential(*_conv_norm_relu(3, c, 2, norm), *_conv_norm_relu(c, c, 1, norm),
                                  *_conv_norm_relu(c, c, 1, norm), nn.MaxPool2d(3, 2, 1))
        self.conv2 = nn.Sequential(*_conv_norm_relu(c, 2 * c, 2, norm))
        self.conv3 = nn.Sequential(*_conv_norm_relu(2 * c, 4 * c, 2, norm))
        self.conv4 = nn.Sequential(*_conv_norm_relu(4 * c, 4 * c, 2, norm))
        self.fc = nn.ModuleList(nn.Conv2d(cin, dim, 1) for cin in (c, 2 * c, 4 * c, 4 * c))

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        c1 = self.stem(x)
        c2 = self.conv2(c1)
        c3 = self.conv3(c2)
        c4 = self.conv4(c3)
        return [fc(c) for fc, c in zip(self.fc, (c1, c2, c3, c4))]  # D @ /4, /8, /16, /32


class InteractionBlock(nn.Module):
    """The extractor half of a ViT-Adapter interaction block: SPM tokens read one ViT tap, the ViT
    tokens are left unchanged (no injector). `num_extractors` > 1 repeats the read."""

    def __init__(self, dim: int, num_extractors: int = 1, **extractor_kwargs):
        super().__init__()
        self.extractors = nn.ModuleList(DeformableExtractor(dim, **extractor_kwargs)
                                        for _ in range(num_extractors))

    def forward(self, query, reference_points, query_shapes, vit_map: torch.Tensor) -> torch.Tensor:
        feat_shape = tuple(vit_map.shape[-2:])
        feat = vit_map.flatten(2).transpose(1, 2)  # (B, h*w, D)
        for extractor in self.extractors:
            query = extractor(query, reference_points, query_shapes, feat, feat_shape)
        return query


class SpatialPriorAdapter(nn.Module):
    """SPM + level embeddings + extractor-only interaction blocks -> 4 normalised D-channel maps
    at /4, /8, /16, /32."""

    def __init__(self, dim: int, num_blocks: int = 4, extra_extractors: int = 2, num_heads: int = 16,
                 num_points: int = 4, value_ratio: float = 0.5, ffn_ratio: float = 0.25,
                 drop_path: float = 0.3, norm: str = "batch", gradient_checkpointing: bool = False):
        super().__init__()
        self.spm = SpatialPriorModule(dim, norm=norm)
        self.level_embed = nn.Parameter(torch.empty(3, dim))
        kwargs = dict(num_heads=num_heads, num_points=num_points, value_ratio=value_ratio, ffn_ratio=ffn_ratio,
                      drop_path=drop_path, gradient_checkpointing=gradient_checkpointing)
        self.interactions = nn.ModuleList(
            InteractionBlock(dim, 1 + (extra_extractors if i == num_blocks - 1 else 0), **kwargs)
            for i in range(num_blocks))
        self.up = nn.ConvTranspose2d(dim, dim, 2, 2)
        self.norms = nn.ModuleList(norm2d(norm, dim) for _ in range(4))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """ViT-Adapter's init: trunc-normal(0.02) Linear, He-normal (fan-out) convs, unit norms,
        then the deformable-attention init, N(0, 1) level embeddings."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, MultiScaleDeformableAttention):
                m.reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, x: torch.Tensor, vit_maps: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """x (B, 3, H, W), H and W multiples of 32; vit_maps: one (B, D, h, w) map per block."""
        c1, *pyramid = self.spm(x)
        shapes = [tuple(c.shape[-2:]) for c in pyramid]  # /8, /16, /32
        query = torch.cat([c.flatten(2).transpose(1, 2) + e for c, e in zip(pyramid, self.level_embed)], dim=1)
        refs = grid_reference_points(shapes, device=x.device, dtype=query.dtype)
        for block, vit_map in zip(self.interactions, vit_maps):
            query = block(query, refs, shapes, vit_map)
        b, _, d = query.shape
        c2, c3, c4 = (t.transpose(1, 2).reshape(b, d, h, w)
                      for t, (h, w) in zip(query.split([h * w for h, w in shapes], dim=1), shapes))
        c1 = self.up(c2) + c1
        out = []
        for c, vit_map, norm in zip((c1, c2, c3, c4), vit_maps, self.norms):
            if vit_map.shape[-2:] != c.shape[-2:]:
                vit_map = F.interpolate(vit_map, c.shape[-2:], mode="bilinear", align_corners=False)
            out.append(norm(c + vit_map))
        return out


class SqueezeExcitation(nn.Module):
    """Channel gate (Hu et al. 2018): GAP -> 1x1 (C -> max(1, C // r)) -> ReLU -> 1x1 -> sigmoid."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(hidden, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class FAPMLevel(nn.Module):
    """One FAPM scale: FiLM-modulated low-rank projection, refinement, shortcut."""

    def __init__(self, in_dim: int, rank: int, out_channels: int, norm_op: Type[nn.Module], norm_kwargs: dict,
                 nonlin: Type[nn.Module], nonlin_kwargs: dict):
        super().__init__()
        oc = out_channels
        self.specific = nn.Conv2d(in_dim, rank, 1)
        self.film = nn.Conv2d(rank, 2 * rank, 1)
        self.refine = nn.Sequential(
            nn.Conv2d(rank, oc, 1), norm_op(oc, **norm_kwargs), nonlin(**nonlin_kwargs),
            nn.Conv2d(oc, oc, 3, padding=1, groups=oc), nn.Conv2d(oc, oc, 1),  # depthwise-separable
            norm_op(oc, **norm_kwargs), nonlin(**nonlin_kwargs),
            nn.Conv2d(oc, oc, 1), SqueezeExcitation(oc))
        self.shortcut = nn.Identity() if rank == oc else nn.Conv2d(rank, oc, 1)

    def forward(self, x: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(shared).chunk(2, dim=1)
        z = gamma * self.specific(x) + beta  # gamma is not offset by 1, as in the official code
        return self.refine(z) + self.shortcut(z)


class FidelityAwareProjection(nn.Module):
    """FAPM: D-channel adapter maps -> nnU-Net stage widths. A 1x1 basis shared by all scales
    modulates each scale's own projection (FiLM); PyTorch default init, as the official code."""

    def __init__(self, in_dim: int, out_channels: Sequence[int] = (32, 64, 128, 256), rank: int = 256,
                 norm_op: Type[nn.Module] = nn.InstanceNorm2d, norm_kwargs: Optional[dict] = None,
                 nonlin: Type[nn.Module] = nn.LeakyReLU, nonlin_kwargs: Optional[dict] = None):
        super().__init__()
        norm_kwargs = dict(eps=1e-5, affine=True) if norm_kwargs is None else norm_kwargs
        nonlin_kwargs = dict(inplace=True) if nonlin_kwargs is None else nonlin_kwargs
        self.shared_basis = nn.Conv2d(in_dim, rank, 1)
        self.levels = nn.ModuleList(FAPMLevel(in_dim, rank, oc, norm_op, norm_kwargs, nonlin, nonlin_kwargs)
                                    for oc in out_channels)

    def forward(self, maps: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        return [level(x, self.shared_basis(x)) for level, x in zip(self.levels, maps)]


class LearnableUpsampling(nn.Module):
    """One ConvTranspose2d(k2, s2) per level, applied repeatedly (shared weights) while doubling
    still fits the target size, then a bilinear snap to the exact size if needed."""

    def __init__(self, channels: Sequence[int]):
        super().__init__()
        self.ups = nn.ModuleList(nn.ConvTranspose2d(c, c, 2, 2) for c in channels)

    def forward(self, maps: Sequence[torch.Tensor], sizes: Sequence[Tuple[int, int]]) -> List[torch.Tensor]:
        out = []
        for up, x, (h, w) in zip(self.ups, maps, sizes):
            while 2 * x.shape[-2] <= h and 2 * x.shape[-1] <= w:
                x = up(x)
            if tuple(x.shape[-2:]) != (h, w):
                x = F.interpolate(x, (h, w), mode="bilinear", align_corners=False)
            out.append(x)
        return out


@dataclass
class SkipPyramid:
    """What nnU-Net's UNetDecoder reads from its encoder, for skips made elsewhere: channels and
    strides (relative to the previous skip) of each skip, the last one being the bottleneck."""
    output_channels: List[int]
    strides: List[List[int]]
    kernel_sizes: List[List[int]]
    conv_op: Type[nn.Module] = nn.Conv2d
    conv_bias: bool = True
    norm_op: Type[nn.Module] = nn.InstanceNorm2d
    norm_op_kwargs: dict = field(default_factory=lambda: dict(eps=1e-5, affine=True))
    dropout_op: Optional[Type[nn.Module]] = None
    dropout_op_kwargs: Optional[dict] = None
    nonlin: Type[nn.Module] = nn.LeakyReLU
    nonlin_kwargs: dict = field(default_factory=lambda: dict(inplace=True))


class DinoUNet(DinoSegmentationNetwork):
    """Dino U-Net. Options beyond the shared contract:

    taps: 4 ViT block indices (default: the spec's, S/B [2,5,8,11], L [4,11,17,23], 7B [9,19,29,39]).
    norm: 'batch' (BatchNorm2d; SyncBatchNorm under nnU-Net's DDP, as the official code) or
        'instance' (affine InstanceNorm2d, for small batches) in the SPM and the per-level norms.
    drop_path: stochastic depth on every extractor's FFN branch (0.3).
    num_heads / num_points / value_ratio / ffn_ratio: deformable attention and ConvFFN (16 / 4 / 0.5 / 0.25).
    extra_extractors: extra reads by the last interaction block (2, so 1 + 2 passes).
    fapm_rank, decoder_channels, n_conv_per_stage: FAPM rank (256), the nnU-Net stage widths
        [32, 64, 128, 256] and convs per decoder stage (2).
    gradient_checkpointing: recompute extractor activations in backward (saves memory, costs time).
    """

    extra_pad_multiple = 32
    min_input_size = 64  # its /32 stage needs 2 x 2 pixels: instance norm cannot train on one
    image_reaches_trainable_path = True  # the spatial prior module reads the mapped image
    slab_fusion_points = ("decoder.stages.0", "decoder.stages.2")  # the /4 and /1 decoder stages

    def __init__(self, input_channels: int, num_classes: int, backbone: Union[str, BackboneSpec] = "dinov3_vits16",
                 pos_embed_resize: Optional[str] = None, imagenet_normalize: bool = False,
                 taps: Optional[Sequence[int]] = None, norm: str = "batch", drop_path: float = 0.3,
                 num_heads: int = 16, num_points: int = 4, value_ratio: float = 0.5, ffn_ratio: float = 0.25,
                 extra_extractors: int = 2, fapm_rank: int = 256,
                 decoder_channels: Sequence[int] = (32, 64, 128, 256), n_conv_per_stage: int = 2,
                 gradient_checkpointing: bool = False, cpu_precision: str = "auto"):
        super().__init__(input_channels, num_classes, backbone, pos_embed_resize, imagenet_normalize, cpu_precision)
        self.taps = tuple(self.backbone.spec.default_taps if taps is None else taps)
        if len(self.taps) != 4 or len(decoder_channels) != 4:
            raise ValueError(f"Dino U-Net uses 4 taps and 4 decoder widths, got {self.taps}, "
                             f"{tuple(decoder_channels)}")
        dim = self.backbone.embed_dim
        self.adapter = SpatialPriorAdapter(dim, len(self.taps), extra_extractors, num_heads, num_points,
                                           value_ratio, ffn_ratio, drop_path, norm, gradient_checkpointing)
        skips = SkipPyramid(output_channels=list(decoder_channels), strides=[[1, 1]] + [[2, 2]] * 3,
                            kernel_sizes=[[3, 3]] * 4)
        self.fapm = FidelityAwareProjection(dim, decoder_channels, fapm_rank, skips.norm_op, skips.norm_op_kwargs,
                                            skips.nonlin, skips.nonlin_kwargs)
        self.upsample = LearnableUpsampling(decoder_channels)
        # deep supervision stays off: all seg layers are built (nnU-Net's convention), the last one is the head.
        # The unused ones are frozen: nnU-Net's DDP has no find_unused_parameters, so a trainable parameter
        # without a gradient would fail the second step of multi-GPU training.
        self.decoder = UNetDecoder(skips, num_classes, n_conv_per_stage, deep_supervision=False)
        for unused in self.decoder.seg_layers[:-1]:
            unused.requires_grad_(False)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        vit_maps = self.backbone(x, self.taps)  # frozen, no autograd graph
        features = self.adapter(x, vit_maps)  # D @ /4, /8, /16, /32
        skips = self.upsample(self.fapm(features), [(h >> i, w >> i) for i in range(4)])  # /1, /2, /4, /8
        return self.decoder(skips)


# --- the family's row (networks/registry.py) ---------------------------------------------------------------
_ROPE_JITTER = {"rope_rescale": 2.0}  # the official code leaves the frozen DINOv3 in train mode (RoPE rescaled)
register_network_family(NetworkFamily(
    name="Dino U-Net", key="dinounet", network_class=DinoUNet, trainer="nnUNetTrainerDinoUNet",
    # Dino U-Net (arXiv 2508.20909): DINOv3 + deformable-attention adapter + FAPM + nnU-Net decoder, as the
    # official code runs: SGD (Nesterov, momentum 0.99), weight decay 3e-5, lr 1e-3, poly. Its 512 x 512 /
    # 4-stage planning: `nnunet-dino plan -d ID --preset dinounet512`, then `-p nnUNetPlansDinoUNet512`.
    recipe=dict(optimizer_name="sgd", learning_rate=1e-3, weight_decay_value=3e-5, lr_schedule="poly"),
    # the 227 M-parameter adapter of the 7B recomputes its activations in backward, as the official code does
    sizes=(Size("", "dinov3_vits16"), Size("_B", "dinov3_vitb16"), Size("_L", "dinov3_vitl16"),
           Size("_7B", "dinov3_vit7b16", (("gradient_checkpointing", True),))),
    paper_recipe=dict(num_epochs_value=200, backbone_train_augmentation=_ROPE_JITTER),
    variants=(TrainerVariant("_7B_paper", "_paper", dict(
        backbone="dinov3_vit7b16", network_kwargs={"gradient_checkpointing": True},
        backbone_train_augmentation={**_ROPE_JITTER, "drop_path": 0.4})),),
    tiny_options=(("decoder_channels", (8, 16, 32, 32)), ("fapm_rank", 16)),
    deterministic_options=(("drop_path", 0.0),), injects=False, bench_step_goal=0.6))
