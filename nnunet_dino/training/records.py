"""Which backbone weights each fold of a model was trained with.

The checkpoint is the truth: a slim checkpoint's `BACKBONE_RECORD_KEY` entry names the backbone,
the weights source and their sha256. Each time a plugin trainer writes a checkpoint it also writes
that record as `backbone_weights.json` in the fold folder, so reports read it without unpickling
a checkpoint; folds without the file (older models, bundled checkpoints) are read from their
checkpoint. `plans.json` is shared by all folds and cannot say this per fold.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Dict

from ..files import write_atomically

WEIGHTS_RECORD_FILE = "backbone_weights.json"
CHECKPOINT_ORDER = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")  # as nnU-Net's --c


def write_fold_weights_record(fold_folder: str, record: dict) -> None:
    def dump(path: str) -> None:
        with open(path, "w") as f:
            json.dump(record, f, indent=2)
    write_atomically(os.path.join(fold_folder, WEIGHTS_RECORD_FILE), dump)


def _record_in_checkpoint(path: str) -> dict:
    import torch
    from ..networks.base import BACKBONE_RECORD_KEY
    try:  # nnU-Net's own checkpoint format needs full unpickling, as nnU-Net itself loads it
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # noqa: BLE001 - a corrupt checkpoint: try the next one
        return {}
    record = checkpoint.get("network_weights", {}).get(BACKBONE_RECORD_KEY)
    return dict(record, checkpoint=os.path.basename(path)) if record else {}


def fold_weights_record(fold_folder: str) -> dict:
    """{'backbone', 'sha256', 'weights': {'format', 'path', ...}} of the weights a fold was trained
    with; {} when the fold has no record (not trained by a plugin trainer, or self-contained)."""
    path = os.path.join(fold_folder, WEIGHTS_RECORD_FILE)
    if os.path.isfile(path):
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            pass  # the checkpoints still know
    for name in CHECKPOINT_ORDER:
        if os.path.isfile(os.path.join(fold_folder, name)):
            record = _record_in_checkpoint(os.path.join(fold_folder, name))
            if record:
                return record
    return {}


def other_folds_weights(fold_folder: str) -> Dict[str, dict]:
    """fold folder name -> record, for the model's other folds that have one."""
    model = os.path.dirname(os.path.abspath(fold_folder))
    own = os.path.basename(os.path.abspath(fold_folder))
    records = {}
    for folder in sorted(glob.glob(os.path.join(model, "fold_*"))):
        if os.path.basename(folder) != own and os.path.isdir(folder):
            record = fold_weights_record(folder)
            if record:
                records[os.path.basename(folder)] = record
    return records
