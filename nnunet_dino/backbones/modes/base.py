"""What an encoder adaptation mode is: one `AdaptationMode` object per mode, in a registry.

A mode answers, for its settings (an `Adaptation`, backbones/adaptation.py, whose `mode` names it):
- what trains: `trains` (anything at all), `trains_key` (which of the encoder module's parameters),
  `first_graph_block` / `embedding_trains` (where the forward starts building an autograd graph), and
  `attach` (modules the mode adds to the encoder, e.g. LoRA's updates) with `run_block`;
- how the optimiser groups it: `optimizer_layer` (the ViT layer a parameter belongs to, for layer decay);
- what the slim checkpoint keeps: `keeps_key`, and `holds_whole_encoder` (no base weights to restore);
- whether the folds of an ensemble can share one encoder forward: `shares_encoder_across_folds`;
- which settings shape the network and its checkpoints (`structure_fields`), which are impossible
  (`problems`, `check_backbone`), how it reads in a table and a log (`label`, `describe`), and a small
  example for tests (`example`).
No module outside the mode objects branches on a mode's name. A new mode is one file in this folder that
defines its object and calls `register_mode` (the package imports every module in it).
"""
from __future__ import annotations

import re
from typing import Dict, List, Mapping, Optional, Tuple

import torch

#: ViT state-dict keys of the embedding (layer 0)
EMBEDDING = ("patch_embed.", "cls_token", "reg_token", "pos_embed", "norm_pre.")

_MODES: Dict[str, "AdaptationMode"] = {}


def layer_of(name: str, depth: int) -> Optional[int]:
    """Layer of a ViT state-dict key: 0 the embedding, i + 1 block i, depth + 1 the final norm; None
    for what the encoder's forward never uses (timm's pooling and classifier head)."""
    match = re.match(r"blocks\.(\d+)\.", name)
    if match:
        return int(match.group(1)) + 1
    if name.startswith("norm."):
        return depth + 1
    if name.startswith(EMBEDDING):
        return 0
    return None


class AdaptationMode:
    """The frozen encoder's behaviour; every other mode overrides what it changes. Keys are those of the
    encoder module (`FrozenDinoBackbone`): `vit.<timm key>` for the ViT, the mode's own modules beside it."""

    name: str = ""
    #: whether anything of the encoder trains
    trains: bool = False
    #: whether the folds of an ensemble may share one encoder forward (their encoders are identical)
    shares_encoder_across_folds: bool = True
    #: the slim checkpoint holds every ViT tensor: nothing to restore from the base weights
    holds_whole_encoder: bool = False
    #: the settings (fields of `Adaptation`) that shape the network and its checkpoints
    structure_fields: Tuple[str, ...] = ()
    #: settings of a small instance, for tests on tiny ViTs (`Adaptation(name, **example)`)
    example: Mapping[str, object] = {}

    # --- settings ------------------------------------------------------------------------------------------
    def problems(self, adaptation) -> List[str]:
        """What is impossible in these settings (empty: nothing)."""
        return []

    def check_backbone(self, adaptation, depth: int, backbone: str) -> List[str]:
        """What is impossible for an encoder of `depth` blocks."""
        return []

    def label(self, adaptation) -> str:
        return self.name

    def describe(self, adaptation) -> str:
        return self.name

    # --- what trains --------------------------------------------------------------------------------------
    def trains_vit_layer(self, adaptation, layer: Optional[int], depth: int) -> bool:
        """Whether the ViT's own tensors of `layer` (`layer_of`) train."""
        return False

    def trains_key(self, adaptation, key: str, depth: int) -> bool:
        """Whether the encoder module's parameter `key` trains."""
        return key.startswith("vit.") and self.trains_vit_layer(adaptation, layer_of(key[4:], depth), depth)

    def first_graph_block(self, adaptation, depth: int) -> int:
        """The first block that builds an autograd graph (depth: none)."""
        return depth

    def embedding_trains(self, adaptation) -> bool:
        return False

    def attach(self, backbone, adaptation) -> None:
        """Add the mode's own modules to the encoder (called once, by `FrozenDinoBackbone.adapt`)."""

    def run_block(self, backbone, index: int, tokens: torch.Tensor, rope: Optional[torch.Tensor]) -> torch.Tensor:
        """Block `index` of the encoder, as this mode runs it."""
        return backbone.family_ops.run_block(backbone.vit.blocks[index], tokens, rope)

    def weights_loaded(self, backbone) -> None:
        """Called after a state dict was loaded into the network (caches of the old tensors go)."""

    # --- optimiser and checkpoints ------------------------------------------------------------------------
    def optimizer_layer(self, key: str, depth: int) -> Optional[int]:
        """The layer (for layer-wise learning-rate decay) of a parameter the mode trains."""
        return layer_of(key[len("vit."):], depth) if key.startswith("vit.") else None

    def keeps_key(self, adaptation, key: str, depth: int) -> bool:
        """Whether a slim checkpoint keeps the encoder module's state-dict entry `key` (what it changed)."""
        return self.trains and self.trains_key(adaptation, key, depth)


def register_mode(mode: AdaptationMode) -> AdaptationMode:
    if not mode.name or (mode.name in _MODES and type(_MODES[mode.name]) is not type(mode)):
        raise ValueError(f"adaptation mode {mode.name!r}: no name, or registered already with another definition")
    _MODES[mode.name] = mode
    return mode


def mode_names() -> Tuple[str, ...]:
    return tuple(_MODES)


def get_mode(name: str) -> Optional[AdaptationMode]:
    """The mode object named `name`, None when there is none."""
    return _MODES.get(name)


def modes() -> Tuple[AdaptationMode, ...]:
    return tuple(_MODES.values())
