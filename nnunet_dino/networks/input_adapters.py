"""Input adapters: the modules that carry out an input recipe -- how nnU-Net's normalised channels
become the three channels the DINO weights saw.

- `zscore`: nnU-Net's z-scored channel(s), repeated to three (the network's own `InputToRGB`).
- `rgb`: nnU-Net's `rgb_to_0_1` RGB, then the weights' mean/std.
- `ct_windows`: one CT channel; Hounsfield units are recovered exactly from nnU-Net's
  CTNormalization (it clips to the foreground 0.5/99.5 percentiles, then z-scores with the
  foreground mean/std, so HU = x * std + mean inside the clip range) and three HU windows
  (width W, level L: HU clipped to [L - W/2, L + W/2]) become the three channels. Weights trained
  on [0, 1] RGB see each window scaled to [0, 1], then their mean/std; weights trained on HU
  (MedDINOv3) see the clipped HU standardised with their mean/std.
- `meddinov3`: MedDINOv3's published recipe, HU clipped to [-1000, 1000], then
  (x - 65.1084) / (178.0166 + 1e-8), repeated: the `ct_windows` rule with one window.
- `official`: the authors' channel rule (official Dino U-Net code): nnU-Net's channels as they are,
  1 repeated, 2 -> [c0, c1, c0], 3 as they are, more -> the first 3 (`base.fixed_channel_map` rule
  'first3'); no learnable mix. RGB in [0, 1] stays in [0, 1] unless the record says `weights_affine`
  (SegDINO's code applies the weights' mean/std, Dino U-Net's does not).

A recipe is a record in the plans (resolved, checked and written by `training.input_recipe_record`);
`input_module` turns it into the module applied before the encoder, so `nnUNetv2_predict` in a fresh
process applies the same one.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..backbones.normalization import HU_SPACE, MEDDINOV3_CT, Normalization
from ..errors import OptionError
from .base import InputToRGB

RECIPES = ("auto", "zscore", "rgb", "ct_windows", "meddinov3", "official")
CT_RECIPES = ("ct_windows", "meddinov3")
#: named HU windows (width, level)
WINDOW_PRESETS = {"soft_tissue": (400.0, 40.0), "liver": (150.0, 30.0), "bone": (1800.0, 400.0),
                  "lung": (1500.0, -600.0), "brain": (80.0, 40.0), "mediastinum": (350.0, 50.0)}
DEFAULT_WINDOWS = ("soft_tissue", "liver", "bone")
MEDDINOV3_WINDOWS = ((2000.0, 0.0),) * 3  # HU [-1000, 1000] on every channel

Window = Tuple[float, float]


class InputRecipeError(OptionError):
    """An input recipe that cannot apply to this dataset, plan or weights."""


def parse_windows(windows: Sequence[Union[str, Sequence[float]]] = DEFAULT_WINDOWS) -> List[Window]:
    """Three windows, each a preset name or a (width, level) pair in HU."""
    parsed = []
    for window in windows:
        if isinstance(window, str):
            if window not in WINDOW_PRESETS:
                raise InputRecipeError(f"unknown CT window {window!r}; presets: {', '.join(WINDOW_PRESETS)} "
                                       f"(or give (width, level) in HU)")
            parsed.append(WINDOW_PRESETS[window])
            continue
        try:
            width, level = (float(v) for v in window)
        except (TypeError, ValueError):
            raise InputRecipeError(f"a CT window is a preset name or (width, level) in HU, got {window!r}") from None
        if width <= 0:
            raise InputRecipeError(f"a CT window's width must be > 0 HU, got {width}")
        parsed.append((width, level))
    if len(parsed) != 3:
        raise InputRecipeError(f"ct_windows takes three windows (one per RGB channel), got {len(parsed)}")
    return parsed


def hu_from_ct_normalization(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Invert nnU-Net's CTNormalization (exact inside its percentile clip range)."""
    return x * max(std, 1e-8) + mean


class CTWindowsInput(nn.Module):
    """(B, 1, H, W) CT-normalised slices -> (B, 3, H, W): one HU window per channel, then the weights'
    normalisation (see the module docstring). No parameters."""

    def __init__(self, ct_intensities: dict, windows: Sequence[Window], normalization: Normalization):
        super().__init__()
        self.ct_mean, self.ct_std = float(ct_intensities["mean"]), float(ct_intensities["std"])
        width = torch.tensor([w for w, _ in windows], dtype=torch.float32)
        level = torch.tensor([c for _, c in windows], dtype=torch.float32)
        low = level - width / 2
        mean, std = torch.tensor(normalization.mean), torch.tensor(normalization.std)
        if normalization.space == HU_SPACE:  # y = (clip(hu) - mean) / std
            scale, shift = 1.0 / std, -mean / std
        else:                                # y = ((clip(hu) - low) / width - mean) / std
            scale, shift = 1.0 / (width * std), -(low / width + mean) / std
        for name, value in (("low", low), ("high", level + width / 2), ("scale", scale), ("shift", shift)):
            self.register_buffer(name, value.float().view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 1:
            raise ValueError(f"CT windows take one CT channel, got {x.shape[1]}")
        hu = hu_from_ct_normalization(x.float(), self.ct_mean, self.ct_std)
        clipped = torch.maximum(torch.minimum(hu, self.high), self.low)  # (B, 3, H, W)
        return (clipped * self.scale + self.shift).to(x.dtype)


class RGBInput(nn.Module):
    """(B, 3, H, W) RGB in [0, 1] (nnU-Net's rgb_to_0_1) -> the weights' mean/std. No parameters."""

    def __init__(self, normalization: Normalization):
        super().__init__()
        self.register_buffer("mean", torch.tensor(normalization.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(normalization.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 3:
            raise ValueError(f"the rgb input recipe takes 3 channels, got {x.shape[1]}")
        return (x - self.mean) / self.std


def input_module(record: dict, input_channels: int = 3) -> Optional[nn.Module]:
    """The module a recorded recipe applies before the encoder; None for `zscore` (the network's own)."""
    recipe = record.get("recipe", "zscore")
    if recipe == "zscore":
        return None
    normalization = Normalization.from_record(record["normalization"])
    if recipe == "official":
        mapping = InputToRGB(input_channels, imagenet_normalize=False, learnable=False, rule="first3")
        return nn.Sequential(mapping, RGBInput(normalization)) if record.get("weights_affine") else mapping
    if recipe == "rgb":
        return RGBInput(normalization)
    if recipe == "ct_windows":
        return CTWindowsInput(record["ct_intensities"], [tuple(w) for w in record["windows"]], normalization)
    if recipe == "meddinov3":
        return CTWindowsInput(record["ct_intensities"], MEDDINOV3_WINDOWS, MEDDINOV3_CT)
    raise InputRecipeError(f"unknown input recipe {recipe!r} in the plans; known: {', '.join(RECIPES)}")


def apply_input_recipe(network: nn.Module, record: Optional[dict]) -> nn.Module:
    """Put the recipe's module in front of the encoder of a DinoSegmentationNetwork (in place)."""
    module = input_module(record or {}, network.input_channels)
    if module is not None:
        network.input_adapter = module
    return network
