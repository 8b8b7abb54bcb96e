"""Cheap checks of a weights source: is it readable, and does it fit a backbone -- without loading it.

The load pipeline of `weights.py`, dry: only the names and shapes of the tensors are read
(`read_source(dry=True)`: a safetensors file's JSON header, checked against the file's size so a
truncated download is caught, or a PyTorch file memory-mapped), then converted and checked by the
loader's own `fit_state` against the backbone built on the `meta` device, so the check costs
milliseconds to seconds even for a ViT-7B. Used before training creates any folder, and by
`nnunet-dino doctor` to say which backbones each found file serves.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from .frozen import build_timm_vit
from .registry import BackboneSpec
from .weights import WeightsSource, fit_state, read_source


def meta_vit(spec: BackboneSpec):
    """The backbone's timm ViT on the meta device: its state dict's names and shapes, no memory."""
    with torch.device("meta"):
        return build_timm_vit(spec)


def check_fits(state: Dict[str, torch.Tensor], spec: BackboneSpec, origin: str, config: Optional[dict] = None) -> None:
    """WeightsError unless `state` (any supported layout) holds exactly `spec`'s tensors and shapes."""
    fit_state(state, spec, meta_vit(spec), origin, config)


def check_weights_source(source: WeightsSource, spec: BackboneSpec) -> None:
    """The cheap check of a located source before anything is written; random and hub pass."""
    if source.kind in ("file", "folder"):
        state, config = read_source(source, dry=True)
        check_fits(state, spec, source.path, config)
