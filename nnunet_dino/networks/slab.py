"""2.5D slabs: one mechanism that gives any DINO network of this package context across slices.

A slab is a stack of K neighbouring slices, `(B, C, K, H, W)` as nnU-Net's 3D loader and sliding
window hand it over for a `[K, H, W]` patch. `make_slab` attaches a `Slab` to a 2D network built by
the trainer (`network.slab`); the shell's forward (networks/base.py) then

1. folds the slices into the batch, `(B * K, C, H, W)`, so the frozen encoder sees all B·K slices
   in one batch, and maps each slice's channels to the encoder's three as in 2D;
2. in `neighbours="rgb"` mode (single-channel data) gives channel j of slice s the mapped image of
   slice s - 1 + j, i.e. slices s-1, s, s+1 as R, G, B; edge slices of the slab repeat themselves.
   `"repeat"` keeps the 2D mapping (each slice alone);
3. runs the paper's adapter and decoder per slice, with a `SliceFusion` after each of the network's
   `slab_fusion_points` (decoder stages, declared per family): a residual convolution across slices,
   `f + Conv3d(c, c, (3, 1, 1))(f)` with replicate padding along z, initialised to zero;
4. unfolds the logits to `(B, classes, K, H, W)`.

With `"repeat"` the slab network equals the 2D network slice by slice at initialisation (the
fusions add exactly zero), so training starts from the 2D model and learns what the neighbours add.
The fusions are forward hooks owned by the `Slab` module: the network's own state-dict keys are
unchanged and the fusion weights live under `slab.fusions.*`.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

#: how the encoder's three channels are filled per slice
NEIGHBOUR_MODES = ("rgb", "repeat")
#: cross-slice fusion after the network's declared decoder stages ("conv") or none
FUSION_MODES = ("conv", "none")


def slices_of(slab: torch.Tensor) -> torch.Tensor:
    """(B, C, K, H, W) -> (B * K, C, H, W), slices of one sample consecutive."""
    return slab.transpose(1, 2).flatten(0, 1)


def slab_of(slices: torch.Tensor, depth: int) -> torch.Tensor:
    """(B * K, C, H, W) -> (B, C, K, H, W); the inverse of `slices_of`."""
    return slices.unflatten(0, (-1, depth)).transpose(1, 2)


def neighbour_channels(rgb: torch.Tensor, depth: int) -> torch.Tensor:
    """(B * K, 3, H, W) mapped slices -> channel j of slice s taken from slice s - 1 + j (clamped to
    the slab: the first and last slices stand in for their missing neighbour)."""
    v = rgb.unflatten(0, (-1, depth))                       # (B, K, 3, H, W)
    below = torch.cat([v[:, :1, 0], v[:, :-1, 0]], dim=1)   # slice s-1
    above = torch.cat([v[:, 1:, 2], v[:, -1:, 2]], dim=1)   # slice s+1
    return torch.stack([below, v[:, :, 1], above], dim=2).flatten(0, 1)


def output_channels(module: nn.Module) -> int:
    """Channels of a decoder stage's output: those of its last convolution."""
    convs = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    if not convs:
        raise ValueError(f"{type(module).__name__} has no convolution: cannot fuse its output across slices")
    return convs[-1].out_channels


class SliceFusion(nn.Module):
    """Residual convolution across the K slices of a slab at one decoder scale, zero at initialisation."""

    def __init__(self, channels: int, depth: int, kernel: int = 3):
        super().__init__()
        self.depth = depth
        self.conv = nn.Conv3d(channels, channels, (kernel, 1, 1), padding=(kernel // 2, 0, 0),
                              padding_mode="replicate")
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        slab = slab_of(features, self.depth)
        if slab.device.type != "cpu" or not torch.is_autocast_enabled("cpu"):
            return features + slices_of(self.conv(slab))
        # CPU bf16 autocast: oneDNN's bf16 Conv3d corrupts the heap on larger maps (seen with U-DFA-S at
        # 64 x 64), so the fusion runs in fp32 there
        with torch.autocast("cpu", enabled=False):
            mixed = self.conv(slab.float())
        return features + slices_of(mixed).to(features.dtype)

    def hook(self, module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        """Forward hook on a decoder stage: replaces its output by the fused one. A bound method, so a
        deep copy of the network hooks the copied fusion."""
        return self(output)


class Slab(nn.Module):
    """The slab settings of a network and its cross-slice fusions (registered as `network.slab`)."""

    def __init__(self, channels: Sequence[int], slices: int, neighbours: str, fusion: str):
        super().__init__()
        if neighbours not in NEIGHBOUR_MODES:
            raise ValueError(f"neighbours must be one of {NEIGHBOUR_MODES}, got {neighbours!r}")
        if fusion not in FUSION_MODES:
            raise ValueError(f"fusion must be one of {FUSION_MODES}, got {fusion!r}")
        if slices < 1:
            raise ValueError(f"a slab needs at least one slice, got {slices}")
        self.slices, self.neighbours, self.fusion = slices, neighbours, fusion
        self.fusions = nn.ModuleList(SliceFusion(c, slices) for c in (channels if fusion == "conv" else ()))

    def extra_repr(self) -> str:
        return f"slices={self.slices}, neighbours={self.neighbours!r}, fusion={self.fusion!r}"

    def to_slices(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[2] != self.slices:
            raise ValueError(f"a slab network takes (B, C, {self.slices}, H, W) slabs, got {tuple(x.shape)}")
        return slices_of(x)

    def to_slab(self, logits: torch.Tensor) -> torch.Tensor:
        return slab_of(logits, self.slices)

    def encoder_input(self, rgb: torch.Tensor) -> torch.Tensor:
        """The mapped slices as the encoder (and the adapter's CNN) sees them."""
        return neighbour_channels(rgb, self.slices) if self.neighbours == "rgb" else rgb


def make_slab(network: nn.Module, slices: int, neighbours: str = "repeat", fusion: str = "conv") -> nn.Module:
    """Turn a 2D DinoSegmentationNetwork into a slab network (in place; returns it)."""
    if getattr(network, "slab", None) is not None:
        raise ValueError("the network is a slab network already")
    points = tuple(network.slab_fusion_points)
    if fusion == "conv" and not points:
        raise ValueError(f"{type(network).__name__} declares no slab_fusion_points")
    stages = [network.get_submodule(p) for p in points]
    network.slab = Slab([output_channels(s) for s in stages], slices, neighbours, fusion)
    for stage, fuse in zip(stages, network.slab.fusions):
        stage.register_forward_hook(fuse.hook)
    return network
