"""What is inside a weights file besides the backbone, and which architecture variant it is.

- Training checkpoints (DINOv2/DINOv3 and MedDINOv3 alike) wrap the backbone: a `teacher`,
  `student`, `model` (...) dict, or flattened `teacher.` prefixes, then `backbone.` keys beside the
  `dino_head.*` / `ibot_head.*` heads. `unwrap_checkpoint` keeps the teacher's backbone, drops the
  rest and says so (a log line and a note in the load record).
- Variants the keys reveal: a ViT trained without query/value biases (MedDINOv3, `qkv_bias=False`)
  has no bias tensors; a backbone row built with biases then gets zero biases, which compute
  exactly the same attention, and the record says `qkv_bias: False`.
"""
from __future__ import annotations

import logging
import re
from typing import Dict, Iterable, Optional, Tuple

import torch

from .errors import WeightsError

logger = logging.getLogger("nnunet_dino.backbones")

#: wrapper dicts of training checkpoints, in order of preference (the teacher is the model to use)
WRAPPER_KEYS = ("teacher", "model_ema", "model", "state_dict", "module", "student")
_ATTN_BIAS = re.compile(r"^blocks\.(\d+)\.attn\.(qkv\.bias|q_bias|v_bias)$")


class NotedState(dict):
    """A state dict of tensors, with notes on how it was taken from its file and the variant found."""

    def __init__(self, state: Dict[str, torch.Tensor], notes: Iterable[str] = (), variant: Optional[dict] = None):
        super().__init__(state)
        self.notes: Tuple[str, ...] = tuple(notes)
        self.variant: dict = dict(variant or {})


def _all_tensors(state) -> bool:
    return isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())


def _keep_prefix(state: dict, prefix: str) -> Tuple[dict, Dict[str, int]]:
    """(tensors under `prefix`, without it; {dropped top-level name: tensor count})."""
    kept, dropped = {}, {}
    for key, value in state.items():
        if key.startswith(prefix):
            kept[key[len(prefix):]] = value
        else:
            head = key.split(".", 1)[0]
            dropped[head] = dropped.get(head, 0) + 1
    return kept, dropped


def unwrap_checkpoint(obj, path: str) -> NotedState:
    """A file's loaded object -> the backbone's tensors, with notes on what was unwrapped and dropped."""
    taken = []
    while isinstance(obj, dict) and not _all_tensors(obj):
        key = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if key is None:
            break
        taken.append(key)
        obj = obj[key]
    if not _all_tensors(obj):
        raise WeightsError(f"{path} does not hold a state dict of tensors; give a model weights file.")
    state, dropped = dict(obj), {}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    for prefix in ("teacher.", "backbone."):  # flattened teacher/student, then the heads
        if any(k.startswith(prefix) for k in state):
            taken.append(prefix.rstrip("."))
            state, more = _keep_prefix(state, prefix)
            dropped.update(more)
    notes = []
    if taken:
        what = " -> ".join(taken)
        lost = ", ".join(f"{name}.* ({n} tensors)" for name, n in sorted(dropped.items())) or "nothing"
        notes.append(f"training checkpoint {path}: loaded its {what} weights; dropped {lost}")
        logger.info(notes[-1])
    return NotedState(state, notes)


def complete_variant(state: Dict[str, torch.Tensor], vit) -> Tuple[Dict[str, torch.Tensor], dict]:
    """Match a ViT trained without attention biases to a row built with them (zero biases), or
    all-zero biases to a row without them (dropped): both compute exactly the same attention. A partial
    or non-zero set is left for the strict check to report. Returns (state, variant record)."""
    if not any(k.endswith("attn.qkv.weight") for k in state):
        return state, {}
    expected = vit.state_dict()
    wanted = [k for k in expected if _ATTN_BIAS.match(k)]
    present = [k for k in state if _ATTN_BIAS.match(k)]
    if present and not wanted and all(not bool(state[k].any()) for k in present):
        return {k: v for k, v in state.items() if k not in present}, {"qkv_bias": "zero (dropped)"}
    blocks = {_ATTN_BIAS.match(k).group(1) for k in wanted}
    if wanted and not present and all(f"blocks.{i}.attn.qkv.weight" in state for i in blocks):
        state = {**state, **{k: torch.zeros_like(expected[k]) for k in wanted}}
        return state, {"qkv_bias": False}
    return state, {"qkv_bias": bool(present)}
