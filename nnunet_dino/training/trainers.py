"""The plugin's nnU-Net trainers. Class names are public API: checkpoints store them and
`nnUNetv2_predict` resolves them by name. Each `_debug` twin runs 2 short epochs (tests)."""
from __future__ import annotations

from ..networks.segdino import SegDINO
from .base import nnUNetTrainerDino

__all__ = [
    "nnUNetTrainerSegDINO", "nnUNetTrainerSegDINO_debug",
    "nnUNetTrainerSegDINO_B", "nnUNetTrainerSegDINO_B_debug",
]


# --- SegDINO (arXiv 2509.00833): DINOv3 + linear multi-level head; AdamW 1e-4, wd 1e-4, no schedule
class nnUNetTrainerSegDINO(nnUNetTrainerDino):
    network_class = SegDINO
    backbone = "dinov3_vits16"
    optimizer_name = "adamw"
    learning_rate = 1e-4
    weight_decay_value = 1e-4
    lr_schedule = "constant"


class nnUNetTrainerSegDINO_B(nnUNetTrainerSegDINO):
    backbone = "dinov3_vitb16"


class nnUNetTrainerSegDINO_debug(nnUNetTrainerSegDINO):
    debug_run = True


class nnUNetTrainerSegDINO_B_debug(nnUNetTrainerSegDINO_B):
    debug_run = True
