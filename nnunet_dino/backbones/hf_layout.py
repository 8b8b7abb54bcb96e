"""Shared walk over Hugging Face transformers state dicts (both DINO families use it): top-level
keys are renamed by a table, per-layer keys are grouped by block index for the family's converter."""
from __future__ import annotations

import re
from typing import Dict, Mapping, Optional, Tuple

import torch

Tensors = Dict[str, torch.Tensor]


def split_hf_state(state: Tensors, layer: re.Pattern,
                   top_level: Mapping[str, Optional[str]]) -> Tuple[Tensors, Dict[int, Tensors]]:
    """(renamed top-level tensors, {block index: {key within the layer: tensor}}).

    `top_level` maps an exact key, or a prefix ending in '.', to its timm name or prefix; None drops
    the key (pre-training only tensors). Unknown keys pass through for the strict check to report."""
    out: Tensors = {}
    blocks: Dict[int, Tensors] = {}
    for key, value in state.items():
        match = layer.match(key)
        if match:
            blocks.setdefault(int(match.group(1)), {})[match.group(2)] = value
            continue
        for old, new in top_level.items():
            if key == old or (old.endswith(".") and key.startswith(old)):
                if new is not None:
                    out[new + key[len(old):]] = value
                break
        else:
            out[key] = value
    return out, blocks


def rename_block_params(out: Tensors, index: int, params: Tensors, renames: Mapping[str, str],
                        unknown_prefix: str) -> None:
    """Move the remaining tensors of block `index` to `blocks.{index}.<renamed>`; unknown ones keep
    their layer name (`unknown_prefix`) so the strict check reports them."""
    for sub, value in params.items():
        for old, new in renames.items():
            if sub.startswith(old):
                out[f"blocks.{index}.{new}{sub[len(old):]}"] = value
                break
        else:
            out[f"{unknown_prefix}{index}.{sub}"] = value
