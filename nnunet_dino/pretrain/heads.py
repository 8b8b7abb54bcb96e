"""The projection heads of DINO self-distillation (DINOv2's `DINOHead`).

An MLP (Linear-GELU, `layers` deep) into an L2-normalised bottleneck, then a weight-normalised
linear layer without bias onto `prototypes` scores. The last layer's weight norm has its gain fixed
at 1 (as DINOv2's `weight_g` is frozen): the scores are cosine similarities between the bottleneck
and each prototype. The normalisations run in fp32 with eps 1e-12 (DINOv2's): with a large eps a
bottleneck shrunk towards zero would give all-zero scores, a uniform softmax the DINO loss cannot
leave (the collapse to uniform outputs).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DinoHead(nn.Module):
    def __init__(self, in_dim: int, prototypes: int, hidden: int = 2048, bottleneck: int = 256, layers: int = 3):
        super().__init__()
        dims = [in_dim] + [hidden] * (layers - 1) + [bottleneck]
        mlp = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            mlp.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                mlp.append(nn.GELU())
        self.mlp = nn.Sequential(*mlp)
        self.prototypes = nn.Parameter(torch.empty(prototypes, bottleneck))
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.prototypes, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in_dim) -> (..., prototypes) scores in [-1, 1]."""
        z = F.normalize(self.mlp(x).float(), dim=-1, eps=1e-12)
        return z @ F.normalize(self.prototypes.float(), dim=-1, eps=1e-12).t()
