"""How the DINO encoder adapts during training: one declared `Adaptation`, and its mechanism.

Modes (a trainer declares one as its `adaptation` class attribute):
- `frozen` (default): nothing trains; no parameter, graph or checkpoint entry is added.
- `lora`: low-rank updates of the attention linears (fused qkv and output projection; with
  `lora_mlp` the MLP linears too): block weights W become W + (alpha / rank) * up @ down, `up`
  zero-initialised, so step 0 is the frozen model exactly. The pretrained tensors stay frozen.
- `last_k`: the last k blocks and the final norm train; the blocks before them run without a graph.
- `full`: every encoder tensor the forward uses trains (the patch embedding, prefix tokens and
  position embedding, every block, the final norm).
Every mode that trains may run a warm-up (`warmup_epochs`: the encoder stays frozen, then joins),
layer-wise learning-rate decay (`layer_decay`: the tensors of layer l get lr * decay^(depth + 1 - l),
layer 0 the embedding, 1..depth the blocks, depth + 1 the final norm, so block i gets
lr * decay^(depth - i)), a rate relative to the adapters' (`backbone_lr_ratio`) and gradient
checkpointing of the blocks that carry a graph (`checkpointing`).

Why not `peft`: it pulls in transformers and accelerate, and its module replacement does not reach
timm's DINOv3 attention, which reads `qkv.weight` straight into `F.linear` (with its separate q/v
biases): a wrapped `qkv` module would silently have no effect there. Here LoRA adapts the weight
itself: the block runs with W + s * up @ down substituted for W (`torch.func.functional_call`),
whatever reads it. The ViT's state dict keeps timm's keys (the base weights load, and hash, as
before); the LoRA tensors live beside it (`backbone.lora.*`). The price: backward forms the full
weight gradient of each adapted linear (one GEMM more than input-side LoRA). "Merging" for
inference caches the summed weights (`merge_for_inference`), so prediction pays nothing per tile.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

from ..errors import UserError

MODES = ("frozen", "lora", "last_k", "full")
#: the fields that shape the network and its checkpoints (a checkpoint must match them to load)
STRUCTURE = {"frozen": (), "lora": ("rank", "alpha", "lora_mlp"), "last_k": ("last_k",), "full": ()}
_EMBEDDING = ("patch_embed.", "cls_token", "reg_token", "pos_embed", "norm_pre.")


class AdaptationError(UserError, ValueError):
    """An adaptation declared with impossible settings, or a checkpoint of another adaptation."""


@dataclass(frozen=True)
class Adaptation:
    mode: str = "frozen"
    rank: int = 16                  # lora
    alpha: float = 16.0             # lora: the update is scaled by alpha / rank
    lora_mlp: bool = False          # lora: also the MLP linears
    last_k: int = 0                 # last_k: blocks that train (with the final norm)
    layer_decay: float = 1.0        # lr * decay^(depth + 1 - layer) for the encoder's tensors
    backbone_lr_ratio: float = 1.0  # encoder lr over the adapters' lr
    warmup_epochs: int = 0          # epochs the encoder stays frozen before it joins
    checkpointing: bool = False     # recompute the blocks that carry a graph in backward
    merge_for_inference: bool = True  # lora: cache W + s * up @ down while no gradient is needed

    def __post_init__(self):
        problems = []
        if self.mode not in MODES:
            problems.append(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "lora" and (self.rank < 1 or self.alpha <= 0):
            problems.append(f"lora needs rank >= 1 and alpha > 0, got rank {self.rank}, alpha {self.alpha}")
        if self.mode == "last_k" and self.last_k < 1:
            problems.append(f"last_k needs last_k >= 1 blocks, got {self.last_k}")
        if not 0 < self.layer_decay <= 1 or self.backbone_lr_ratio <= 0 or self.warmup_epochs < 0:
            problems.append(f"need 0 < layer_decay <= 1, backbone_lr_ratio > 0, warmup_epochs >= 0, got "
                            f"{self.layer_decay}, {self.backbone_lr_ratio}, {self.warmup_epochs}")
        if problems:
            raise AdaptationError("Adaptation: " + "; ".join(problems) + ".")

    @property
    def trains(self) -> bool:
        return self.mode != "frozen"

    def structure(self) -> dict:
        return {"mode": self.mode, **{name: getattr(self, name) for name in STRUCTURE[self.mode]}}

    def to_record(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: Optional[dict]) -> "Adaptation":
        """The adaptation a plans/checkpoint record names; none (older models): frozen."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (record or {}).items() if k in names})

    @property
    def label(self) -> str:
        """Short name for tables: 'frozen', 'LoRA r16', 'last 4 blocks', 'full'."""
        return {"frozen": "frozen", "lora": f"LoRA r{self.rank}" + (" +MLP" if self.lora_mlp else ""),
                "last_k": f"last {self.last_k} blocks", "full": "full"}[self.mode]

    def describe(self) -> str:
        what = {"frozen": "frozen",
                "lora": f"LoRA rank {self.rank}, alpha {self.alpha:g} on the attention"
                        + (" and MLP" if self.lora_mlp else "") + " linears (base frozen)",
                "last_k": f"last {self.last_k} blocks + final norm train (the rest frozen, no graph)",
                "full": "fully fine-tuned"}[self.mode]
        if not self.trains:
            return what
        extras = [f"encoder lr x{self.backbone_lr_ratio:.3g}"]
        if self.layer_decay < 1:
            extras.append(f"layer decay {self.layer_decay:g}")
        if self.warmup_epochs:
            extras.append(f"frozen for the first {self.warmup_epochs} epoch(s)")
        if self.checkpointing:
            extras.append("gradient checkpointing")
        return f"{what}; {', '.join(extras)}"


def layer_of(name: str, depth: int) -> Optional[int]:
    """Layer of a ViT state-dict key: 0 the embedding, i + 1 block i, depth + 1 the final norm; None
    for what the encoder's forward never uses (timm's pooling and classifier head)."""
    match = re.match(r"blocks\.(\d+)\.", name)
    if match:
        return int(match.group(1)) + 1
    if name.startswith("norm."):
        return depth + 1
    if name.startswith(_EMBEDDING):
        return 0
    return None


def trains_layer(adaptation: Adaptation, layer: Optional[int], depth: int) -> bool:
    """Whether the ViT's own tensors of `layer` train (LoRA's live beside the ViT: never)."""
    if layer is None or adaptation.mode in ("frozen", "lora"):
        return False
    return adaptation.mode == "full" or layer > depth - adaptation.last_k


def lr_scale(adaptation: Adaptation, layer: int, depth: int) -> float:
    return adaptation.backbone_lr_ratio * adaptation.layer_decay ** (depth + 1 - layer)


def parameter_groups(backbone, lr: float, weight_decay: float) -> List[dict]:
    """Optimiser groups of an adapted encoder's tensors (warm-up or not): one per layer and decay kind, at
    lr * `lr_scale` (the schedule keeps the scale); no weight decay on biases, norms, tokens and position
    embeddings. None for a frozen encoder."""
    adaptation, depth, groups = backbone.adaptation, backbone.depth, {}
    for name, param in backbone.adapted_parameters():
        lora = re.match(r"lora\.blocks\.(\d+)\.", name)
        layer = int(lora.group(1)) + 1 if lora else layer_of(name[len("vit."):], depth)
        decays = not (param.ndim <= 1 or name.endswith(".bias") or "token" in name or "pos_embed" in name)
        groups.setdefault((layer, decays), []).append(param)
    return [{"params": params, "weight_decay": weight_decay if decays else 0.0, "layer": layer,
             "lr_scale": lr_scale(adaptation, layer, depth), "lr": lr * lr_scale(adaptation, layer, depth)}
            for (layer, decays), params in sorted(groups.items())]


# --- LoRA ------------------------------------------------------------------------------------------
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

    def __init__(self, blocks: nn.ModuleList, run_block: Callable, adaptation: Adaptation):
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
