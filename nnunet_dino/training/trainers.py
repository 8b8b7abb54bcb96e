"""The plugin's nnU-Net trainers. Class names are public API: checkpoints store them and
`nnUNetv2_predict` resolves them by name. Each `_debug` twin runs 2 short epochs (tests)."""
from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from ..networks.dino_unet import DinoUNet
from ..networks.segdino import SegDINO
from ..networks.udfa import UDFA
from .base import DEBUG_RUN, nnUNetTrainerDino
from .budget import BudgetMixin
from .seeding import SeededMixin

__all__ = [
    "nnUNetTrainerSegDINO", "nnUNetTrainerSegDINO_debug",
    "nnUNetTrainerSegDINO_B", "nnUNetTrainerSegDINO_B_debug",
    "nnUNetTrainerUDFA", "nnUNetTrainerUDFA_debug",
    "nnUNetTrainerUDFA_S", "nnUNetTrainerUDFA_S_debug",
    "nnUNetTrainerUDFA_L", "nnUNetTrainerUDFA_L_debug",
    "nnUNetTrainerUDFA_G", "nnUNetTrainerUDFA_G_debug",
    "nnUNetTrainerUDFA_LGFA2", "nnUNetTrainerUDFA_LGFA2_debug",
    "nnUNetTrainerUDFA_LGFA6", "nnUNetTrainerUDFA_LGFA6_debug",
    "nnUNetTrainerDinoUNet", "nnUNetTrainerDinoUNet_debug",
    "nnUNetTrainerDinoUNet_B", "nnUNetTrainerDinoUNet_B_debug",
    "nnUNetTrainerDinoUNet_L", "nnUNetTrainerDinoUNet_L_debug",
    "nnUNetTrainerDinoUNet_7B", "nnUNetTrainerDinoUNet_7B_debug",
    "nnUNetTrainer_debug", "nnUNetTrainer_demo", "nnUNetTrainerUDFA_S_demo", "nnUNetTrainerSegDINO_demo", "nnUNetTrainerDinoUNet_demo",
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


# --- Dino U-Net (arXiv 2508.20909): DINOv3 + deformable-attention adapter + FAPM + nnU-Net decoder.
# As the official code runs: nnU-Net's SGD (Nesterov, momentum 0.99), weight decay 3e-5, lr 1e-3, poly.
# Its 512 x 512 / 4-stage planning: `nnunet-dino plan -d ID --preset dinounet512`, then `-p nnUNetPlansDinoUNet512`.
class nnUNetTrainerDinoUNet(nnUNetTrainerDino):
    network_class = DinoUNet
    backbone = "dinov3_vits16"
    optimizer_name = "sgd"
    learning_rate = 1e-3
    weight_decay_value = 3e-5
    lr_schedule = "poly"


class nnUNetTrainerDinoUNet_B(nnUNetTrainerDinoUNet):
    backbone = "dinov3_vitb16"


class nnUNetTrainerDinoUNet_L(nnUNetTrainerDinoUNet):
    backbone = "dinov3_vitl16"


class nnUNetTrainerDinoUNet_7B(nnUNetTrainerDinoUNet):
    backbone = "dinov3_vit7b16"
    network_kwargs = {"gradient_checkpointing": True}  # the 227 M-parameter adapter, as the official code


class nnUNetTrainerDinoUNet_debug(nnUNetTrainerDinoUNet):
    debug_run = True


class nnUNetTrainerDinoUNet_B_debug(nnUNetTrainerDinoUNet_B):
    debug_run = True


class nnUNetTrainerDinoUNet_L_debug(nnUNetTrainerDinoUNet_L):
    debug_run = True


class nnUNetTrainerDinoUNet_7B_debug(nnUNetTrainerDinoUNet_7B):
    debug_run = True


# --- nnU-Net's own trainer, for comparisons at the same short lengths as ours -------------------
class nnUNetTrainer_debug(nnUNetTrainer):
    """nnU-Net's own trainer and network, with the `_debug` run length (pipeline tests)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = DEBUG_RUN


# --- the demo (`make demo`): the same budget of training iterations for every model, seed 0 -----
class nnUNetTrainer_demo(BudgetMixin, SeededMixin, nnUNetTrainer):
    """nnU-Net's own trainer, network and recipe, stopped by the demo's budget (seeded)."""
    seed = 0


class nnUNetTrainerUDFA_S_demo(BudgetMixin, nnUNetTrainerUDFA_S):
    seed = 0
    warmup_epochs = 2


class nnUNetTrainerSegDINO_demo(BudgetMixin, nnUNetTrainerSegDINO):
    seed = 0


class nnUNetTrainerDinoUNet_demo(BudgetMixin, nnUNetTrainerDinoUNet):
    seed = 0
