"""Shared helpers for the weight-loading tests (kept out of conftest so tests import them)."""
from __future__ import annotations

import torch
from torch import nn

from nnunet_dino.backbones import BackboneSpec, get_backbone_spec
from nnunet_dino.bench.gpu_check import TINY_BACKBONE as TINY_ARCH


def tiny_spec(base: str = "dinov2_vits14", **arch) -> BackboneSpec:
    """A dim-64, 4-block, 4-head variant of a registered backbone (`arch` overrides / adds)."""
    return get_backbone_spec(base).variant(f"tiny_{base}", **{**TINY_ARCH, **arch})


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Overwrite EVERY parameter with random values, in place; returns the module in eval().

    Defaults such as a 1e-5 layer scale or zero biases would hide mapping errors (a swapped or dropped
    tensor would change nothing), so layer scales get std 0.5 and norms random affine maps. Buffers
    are left alone: in these models they are derived tables (RoPE frequencies).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            owner = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
            if isinstance(owner, nn.LayerNorm) and name.endswith("weight"):
                param.copy_(1.0 + 0.2 * noise)
            elif "gamma" in name or "lambda" in name:  # layer scale
                param.copy_(0.5 * noise)
            else:
                param.copy_(0.2 * noise)
    return module.eval()
