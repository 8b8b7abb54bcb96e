"""The plugin's nnU-Net trainers. Class names are public API: checkpoints store them and
`nnUNetv2_predict` resolves them by name. Each `_debug` twin runs 2 short epochs (tests)."""
from __future__ import annotations

from ..networks.segdino import SegDINO
from ..networks.udfa import UDFA
from .base import nnUNetTrainerDino

__all__ = [
    "nnUNetTrainerSegDINO", "nnUNetTrainerSegDINO_debug",
    "nnUNetTrainerSegDINO_B", "nnUNetTrainerSegDINO_B_debug",
    "nnUNetTrainerUDFA", "nnUNetTrainerUDFA_debug",
    "nnUNetTrainerUDFA_S", "nnUNetTrainerUDFA_S_debug",
    "nnUNetTrainerUDFA_L", "nnUNetTrainerUDFA_L_debug",
    "nnUNetTrainerUDFA_G", "nnUNetTrainerUDFA_G_debug",
    "nnUNetTrainerUDFA_LGFA2", "nnUNetTrainerUDFA_LGFA2_debug",
    "nnUNetTrainerUDFA_LGFA6", "nnUNetTrainerUDFA_LGFA6_debug",
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


# --- U-DFA (arXiv 2510.00585): DINOv2 + SPA + LGFA injection. Paper: Adam(W), wd 1e-4, Dice + CE.
# AdamW 3e-4 with a 10-epoch linear warm-up then poly decay: the zero-initialised injection gates and
# the fresh CNN get small first updates (Adam's early steps are large), then train at a rate that
# suits attention adapters; nnU-Net's SGD 1e-2 is tuned for fully trained CNNs, not adapters.
class nnUNetTrainerUDFA(nnUNetTrainerDino):
    network_class = UDFA
    backbone = "dinov2_vitb14"
    optimizer_name = "adamw"
    learning_rate = 3e-4
    weight_decay_value = 1e-4
    lr_schedule = "poly"
    warmup_epochs = 10


class nnUNetTrainerUDFA_S(nnUNetTrainerUDFA):
    backbone = "dinov2_vits14"


class nnUNetTrainerUDFA_L(nnUNetTrainerUDFA):
    backbone = "dinov2_vitl14"
    network_kwargs = {"checkpoint_backbone": True}  # recompute frozen blocks in backward: memory


class nnUNetTrainerUDFA_G(nnUNetTrainerUDFA):
    backbone = "dinov2_vitg14"
    network_kwargs = {"checkpoint_backbone": True}


class nnUNetTrainerUDFA_LGFA2(nnUNetTrainerUDFA):  # ablation: number of fusion modules
    network_kwargs = {"num_fusion_modules": 2}


class nnUNetTrainerUDFA_LGFA6(nnUNetTrainerUDFA):
    network_kwargs = {"num_fusion_modules": 6}


class nnUNetTrainerUDFA_debug(nnUNetTrainerUDFA):
    debug_run = True


class nnUNetTrainerUDFA_S_debug(nnUNetTrainerUDFA_S):
    debug_run = True


class nnUNetTrainerUDFA_L_debug(nnUNetTrainerUDFA_L):
    debug_run = True


class nnUNetTrainerUDFA_G_debug(nnUNetTrainerUDFA_G):
    debug_run = True


class nnUNetTrainerUDFA_LGFA2_debug(nnUNetTrainerUDFA_LGFA2):
    debug_run = True


class nnUNetTrainerUDFA_LGFA6_debug(nnUNetTrainerUDFA_LGFA6):
    debug_run = True
