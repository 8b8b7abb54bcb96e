"""How the DINO encoder adapts during training: one declared `Adaptation` (the settings), whose `mode`
names a mode object (backbones/modes/: frozen, lora, last_k, full; one file each) that holds the mechanism.

Modes (a trainer declares one as its `adaptation` class attribute):
- `frozen` (default): nothing trains; no parameter, graph or checkpoint entry is added.
- `lora`: low-rank updates of the attention linears (modes/lora.py), zero at step 0; the base stays frozen.
- `last_k`: the last k blocks and the final norm train; the blocks before them run without a graph.
- `full`: every encoder tensor the forward uses trains (the patch embedding, prefix tokens and
  position embedding, every block, the final norm).
Every mode that trains may run a warm-up (`warmup_epochs`: the encoder stays frozen, then joins),
layer-wise learning-rate decay (`layer_decay`: the tensors of layer l get lr * decay^(depth + 1 - l),
layer 0 the embedding, 1..depth the blocks, depth + 1 the final norm, so block i gets
lr * decay^(depth - i)), a rate relative to the adapters' (`backbone_lr_ratio`) and gradient
checkpointing of the blocks that carry a graph (`checkpointing`).

What each mode trains, how the optimiser groups it, what a slim checkpoint keeps and whether the folds of
an ensemble can share the encoder are the mode object's answers (`Adaptation.kind`); nothing else
branches on the mode's name.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import List, Optional

from .errors import AdaptationError
from .modes import AdaptationMode, get_mode, layer_of, mode_names
from .modes.lora import LoRA, LowRank, lora_targets  # noqa: F401  (their home before the modes package)

#: the registered modes' names (backbones/modes/)
MODES = mode_names()


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
        kind = get_mode(self.mode)
        problems = [] if kind is not None else [f"mode must be one of {mode_names()}, got {self.mode!r}"]
        if kind is not None:
            problems += kind.problems(self)
        if not 0 < self.layer_decay <= 1 or self.backbone_lr_ratio <= 0 or self.warmup_epochs < 0:
            problems.append(f"need 0 < layer_decay <= 1, backbone_lr_ratio > 0, warmup_epochs >= 0, got "
                            f"{self.layer_decay}, {self.backbone_lr_ratio}, {self.warmup_epochs}")
        if problems:
            raise AdaptationError("Adaptation: " + "; ".join(problems) + ".")

    @property
    def kind(self) -> AdaptationMode:
        """The mode object: what trains, how it is grouped, kept and shared."""
        return get_mode(self.mode)

    @property
    def trains(self) -> bool:
        return self.kind.trains

    @property
    def shares_encoder_across_folds(self) -> bool:
        """Whether the folds of an ensemble can run one encoder forward for all (a frozen encoder can; LoRA,
        last_k and full give every fold its own encoder)."""
        return self.kind.shares_encoder_across_folds

    def structure(self) -> dict:
        return {"mode": self.mode, **{name: getattr(self, name) for name in self.kind.structure_fields}}

    def to_record(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: Optional[dict]) -> "Adaptation":
        """The adaptation a plans/checkpoint record names; none (older models): frozen."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (record or {}).items() if k in names})

    @classmethod
    def example(cls, mode: str, **changes) -> "Adaptation":
        """A small instance of `mode` (its object's `example` settings), for tests on tiny ViTs."""
        return cls(mode, **{**get_mode(mode).example, **changes})

    @property
    def label(self) -> str:
        """Short name for tables: 'frozen', 'LoRA r16', 'last 4 blocks', 'full'."""
        return self.kind.label(self)

    def describe(self) -> str:
        what = self.kind.describe(self)
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


def trains_layer(adaptation: Adaptation, layer: Optional[int], depth: int) -> bool:
    """Whether the ViT's own tensors of `layer` train (LoRA's live beside the ViT: never)."""
    return adaptation.kind.trains_vit_layer(adaptation, layer, depth)


def lr_scale(adaptation: Adaptation, layer: int, depth: int) -> float:
    return adaptation.backbone_lr_ratio * adaptation.layer_decay ** (depth + 1 - layer)


def parameter_groups(backbone, lr: float, weight_decay: float) -> List[dict]:
    """Optimiser groups of an adapted encoder's tensors (warm-up or not): one per layer and decay kind, at
    lr * `lr_scale` (the schedule keeps the scale); no weight decay on biases, norms, tokens and position
    embeddings. None for a frozen encoder."""
    adaptation, depth, groups = backbone.adaptation, backbone.depth, {}
    for name, param in backbone.adapted_parameters():
        layer = adaptation.kind.optimizer_layer(name, depth)
        decays = not (param.ndim <= 1 or name.endswith(".bias") or "token" in name or "pos_embed" in name)
        groups.setdefault((layer, decays), []).append(param)
    return [{"params": params, "weight_decay": weight_decay if decays else 0.0, "layer": layer,
             "lr_scale": lr_scale(adaptation, layer, depth), "lr": lr * lr_scale(adaptation, layer, depth)}
            for (layer, decays), params in sorted(groups.items())]


__all__ = ["Adaptation", "AdaptationError", "LoRA", "LowRank", "MODES", "layer_of", "lora_targets", "lr_scale",
           "parameter_groups", "trains_layer"]
