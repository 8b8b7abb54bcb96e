"""`lora`: low-rank updates of the attention linears (fused qkv and output projection; with `lora_mlp` the
MLP linears too): block weights W become W + (alpha / rank) * up @ down, `up` zero-initialised, so step 0 is
the frozen model exactly. The pretrained tensors stay frozen; the updates live beside the ViT
(`backbone.lora.*`), and a slim checkpoint keeps only them.

Why not `peft`: it pulls in transformers and accelerate, and its module replacement does not reach
timm's DINOv3 attention, which reads `qkv.weight` straight into `F.linear` (with its separate q/v
biases): a wrapped `qkv` module would silently have no effect there. Here LoRA adapts the weight
itself: the block runs with W + s * up @ down substituted for W (`torch.func.functional_call`),
whatever reads it. The ViT's state dict keeps timm's keys (the base weights load, and hash, as
before). The price: backward forms the full weight gradient of each adapted linear (one GEMM more than
input-side LoRA). "Merging" for inference caches the summed weights (`merge_for_inference`), so
prediction pays nothing per tile.
"""
from __future__ import annotations

import math
import re
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

from .base import AdaptationMode, register_mode


class LowRank(nn.Module):
    """The update s * up @ down of one (out, in) weight; `up` starts at zero."""

    def __init__(self, out_features: int, in_features: int, rank: int, scale: float):
        super().__init__()
        self.down = nn.Parameter(torch.empty(rank, in_features))
        self.up = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))  # as nn.Linear (and LoRA's reference code)
        self.scale = scale

    def delta(self) -> torch.Tensor:
        return (self.up @ self.down) * self.scale


class _BlockCall(nn.Module):
    """One block called the family's way, so functional_call can substitute its weights."""

    def __init__(self, run_block: Callable, block: nn.Module):
        super().__init__()
        self.run_block, self.block = run_block, block

    def forward(self, tokens: torch.Tensor, rope: Optional[torch.Tensor]) -> torch.Tensor:
        return self.run_block(self.block, tokens, rope)


def lora_targets(block: nn.Module, mlp: bool) -> List[str]:
    """Names (in the block) of the linears LoRA adapts: the attention's, and the MLP's if `mlp`."""
    return [name for name, module in block.named_modules() if isinstance(module, nn.Linear)
            and (name.startswith("attn.") or (mlp and name.startswith("mlp.")))]


class LoRA(nn.Module):
    """Per block, one `LowRank` update per adapted linear. `call(i, tokens, rope)` runs block i with the
    updated weights; without gradients (and `merge`), the summed weights are cached until a tensor changes."""

    def __init__(self, blocks: nn.ModuleList, run_block: Callable, adaptation):
        super().__init__()
        scale = adaptation.alpha / adaptation.rank
        self.blocks = nn.ModuleList()
        for block in blocks:
            updates = nn.ModuleDict()
            for name in lora_targets(block, adaptation.lora_mlp):
                linear = block.get_submodule(name)
                updates[name.replace(".", "_")] = LowRank(linear.out_features, linear.in_features,
                                                          adaptation.rank, scale)
            self.blocks.append(updates)
        self._targets = [lora_targets(block, adaptation.lora_mlp) for block in blocks]
        self._calls = [_BlockCall(run_block, block) for block in blocks]  # a plain list: not registered
        self.merge = adaptation.merge_for_inference
        self._merged: Dict[int, Tuple[tuple, Dict[str, torch.Tensor]]] = {}

    def _pairs(self, index: int) -> Iterator[Tuple[str, nn.Linear, LowRank]]:
        block = self._calls[index].block
        for name in self._targets[index]:
            yield name, block.get_submodule(name), self.blocks[index][name.replace(".", "_")]

    def weights(self, index: int) -> Dict[str, torch.Tensor]:
        """{'block.<linear>.weight': W + s * up @ down} for block `index`."""
        cache = self.merge and not torch.is_grad_enabled() and not torch.compiler.is_compiling()
        if cache:
            key = tuple((t.data_ptr(), t._version) for _, linear, update in self._pairs(index)
                        for t in (linear.weight, update.up, update.down))
            if index in self._merged and self._merged[index][0] == key:
                return self._merged[index][1]
        weights = {f"block.{name}.weight": linear.weight + update.delta().to(linear.weight.dtype)
                   for name, linear, update in self._pairs(index)}
        if cache:
            self._merged[index] = (key, weights)
        return weights

    def call(self, index: int, tokens: torch.Tensor, rope: Optional[torch.Tensor]) -> torch.Tensor:
        return torch.func.functional_call(self._calls[index], self.weights(index), (tokens, rope))

    def unmerge(self) -> None:
        """Drop the cached summed weights (they are rebuilt, or bypassed, on the next call)."""
        self._merged.clear()


class LoRAMode(AdaptationMode):
    name = "lora"
    trains = True
    shares_encoder_across_folds = False
    structure_fields = ("rank", "alpha", "lora_mlp")
    example = {"rank": 4, "alpha": 8.0}

    def problems(self, adaptation):
        if adaptation.rank < 1 or adaptation.alpha <= 0:
            return [f"lora needs rank >= 1 and alpha > 0, got rank {adaptation.rank}, alpha {adaptation.alpha}"]
        return []

    def label(self, adaptation) -> str:
        return f"LoRA r{adaptation.rank}" + (" +MLP" if adaptation.lora_mlp else "")

    def describe(self, adaptation) -> str:
        return (f"LoRA rank {adaptation.rank}, alpha {adaptation.alpha:g} on the attention"
                + (" and MLP" if adaptation.lora_mlp else "") + " linears (base frozen)")

    def trains_key(self, adaptation, key: str, depth: int) -> bool:
        return key.startswith("lora.")  # the ViT's own tensors never train

    def first_graph_block(self, adaptation, depth: int) -> int:
        return 0

    def attach(self, backbone, adaptation) -> None:
        backbone.lora = LoRA(backbone.vit.blocks, backbone.family_ops.run_block, adaptation)

    def run_block(self, backbone, index, tokens, rope):
        return backbone.lora.call(index, tokens, rope)

    def weights_loaded(self, backbone) -> None:
        backbone.lora.unmerge()

    def optimizer_layer(self, key: str, depth: int):
        return int(re.match(r"lora\.blocks\.(\d+)\.", key).group(1)) + 1  # block i's updates: layer i + 1


LORA = register_mode(LoRAMode())
