"""The plugin's nnU-Net trainers. Class names are public API: checkpoints store them and
`nnUNetv2_predict` resolves them by name.

Trainers are data: each is one row of `TRAINERS` (name, parent, the attributes it changes; its
`network_kwargs` add to the parent's), turned into a real class of this module by `declare_trainer`,
so nnU-Net's resolver finds it and it pickles like any class. Every plugin trainer gets a `_debug`
twin (2 short epochs, seed 0: tests, smoke runs). To declare another combination yourself, subclass
in three lines:

    class nnUNetTrainerUDFA_L_MyRecipe(nnUNetTrainerUDFA_L):
        learning_rate = 1e-4

Encoder adaptation is one more declared attribute (backbones/adaptation.py): `_LoRA` and `_FT` rows
exist for each family at its default and `_S` sizes, e.g. `adaptation = Adaptation("last_k", last_k=4)`
in a subclass trains the last four blocks.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from ..backbones.adaptation import Adaptation
from ..networks.dino_unet import DinoUNet
from ..networks.segdino import SegDINO
from ..networks.segdino_v2 import SegDINOv2
from ..networks.udfa import UDFA
from .base import DEBUG_RUN, nnUNetTrainerDino
from .budget import BudgetMixin
from .seeding import SeededMixin

#: every `_paper` trainer: no test-time mirroring (none of the official codes mirrors at test time), weight
#: decay on every trainable parameter (as their optimisers), the official channel rule
_PAPER_COMMON = dict(test_time_mirroring=False, decay_all_parameters=True, input_recipe="official")
#: the official codes leave the frozen DINOv3 in train mode: RoPE coordinates rescaled by a factor in [1/2, 2]
_ROPE_JITTER = {"rope_rescale": 2.0}

TRAINERS: Tuple[Tuple[str, str, Dict[str, object]], ...] = (
    # SegDINO (arXiv 2509.00833): DINOv3 + linear multi-level head; AdamW 1e-4, wd 1e-4, no schedule
    ("nnUNetTrainerSegDINO", "nnUNetTrainerDino",
     dict(network_class=SegDINO, backbone="dinov3_vits16", optimizer_name="adamw", learning_rate=1e-4,
          weight_decay_value=1e-4, lr_schedule="constant")),
    ("nnUNetTrainerSegDINO_B", "nnUNetTrainerSegDINO", dict(backbone="dinov3_vitb16")),
    ("nnUNetTrainerSegDINO_L", "nnUNetTrainerSegDINO", dict(backbone="dinov3_vitl16")),
    # the authors' current head: first level upsampled x4 by a transposed conv before the fusion
    ("nnUNetTrainerSegDINO_HeadX4", "nnUNetTrainerSegDINO", dict(network_kwargs={"head": "x4"})),
    # SegDINO v2: token pyramid adaptation + residual depthwise decoder; the authors' AdamW 1e-4 (wd 0.01)
    ("nnUNetTrainerSegDINOv2", "nnUNetTrainerSegDINO", dict(network_class=SegDINOv2, weight_decay_value=1e-2)),
    ("nnUNetTrainerSegDINOv2_B", "nnUNetTrainerSegDINOv2", dict(backbone="dinov3_vitb16")),
    # U-DFA (arXiv 2510.00585): DINOv2 + SPA + LGFA injection. Paper: Adam(W), wd 1e-4, Dice + CE.
    # AdamW 3e-4 with a 10-epoch linear warm-up then poly decay: the zero-initialised injection gates and
    # the fresh CNN get small first updates (Adam's early steps are large), then train at a rate that
    # suits attention adapters; nnU-Net's SGD 1e-2 is tuned for fully trained CNNs, not adapters.
    # The SPA is a 5-stage nnU-Net encoder: at equal iterations, and at equal time on the demo's test
    # slabs, it beats the paper's three scales (README, "U-DFA's SPA"), which `_SPA3` selects.
    ("nnUNetTrainerUDFA", "nnUNetTrainerDino",
     dict(network_class=UDFA, backbone="dinov2_vitb14", optimizer_name="adamw", learning_rate=3e-4,
          weight_decay_value=1e-4, lr_schedule="poly", warmup_epochs=10, network_kwargs={"spa": "nnunet"})),
    ("nnUNetTrainerUDFA_S", "nnUNetTrainerUDFA", dict(backbone="dinov2_vits14")),
    # L and g recompute the frozen blocks that carry gradients in backward (memory)
    ("nnUNetTrainerUDFA_L", "nnUNetTrainerUDFA",
     dict(backbone="dinov2_vitl14", network_kwargs={"checkpoint_backbone": True})),
    ("nnUNetTrainerUDFA_G", "nnUNetTrainerUDFA",
     dict(backbone="dinov2_vitg14", network_kwargs={"checkpoint_backbone": True})),
    # the paper's SPA: three scales (/4, /8, /16), learned upsampling to full resolution
    ("nnUNetTrainerUDFA_SPA3", "nnUNetTrainerUDFA", dict(network_kwargs={"spa": "paper"})),
    ("nnUNetTrainerUDFA_S_SPA3", "nnUNetTrainerUDFA_S", dict(network_kwargs={"spa": "paper"})),
    # the paper's ablation of the number of fusion modules
    ("nnUNetTrainerUDFA_LGFA2", "nnUNetTrainerUDFA", dict(network_kwargs={"num_fusion_modules": 2})),
    ("nnUNetTrainerUDFA_LGFA6", "nnUNetTrainerUDFA", dict(network_kwargs={"num_fusion_modules": 6})),
    # Dino U-Net (arXiv 2508.20909): DINOv3 + deformable-attention adapter + FAPM + nnU-Net decoder, as the
    # official code runs: SGD (Nesterov, momentum 0.99), weight decay 3e-5, lr 1e-3, poly. Its 512 x 512 /
    # 4-stage planning: `nnunet-dino plan -d ID --preset dinounet512`, then `-p nnUNetPlansDinoUNet512`.
    ("nnUNetTrainerDinoUNet", "nnUNetTrainerDino",
     dict(network_class=DinoUNet, backbone="dinov3_vits16", optimizer_name="sgd", learning_rate=1e-3,
          weight_decay_value=3e-5, lr_schedule="poly")),
    ("nnUNetTrainerDinoUNet_B", "nnUNetTrainerDinoUNet", dict(backbone="dinov3_vitb16")),
    ("nnUNetTrainerDinoUNet_L", "nnUNetTrainerDinoUNet", dict(backbone="dinov3_vitl16")),
    # the 227 M-parameter adapter recomputes its activations in backward, as the official code does
    ("nnUNetTrainerDinoUNet_7B", "nnUNetTrainerDinoUNet",
     dict(backbone="dinov3_vit7b16", network_kwargs={"gradient_checkpointing": True})),
    # --- the authors' recipes, as far as nnU-Net allows (README, "Deviations from the papers") ------
    ("nnUNetTrainerSegDINO_paper", "nnUNetTrainerSegDINO", dict(**_PAPER_COMMON, num_epochs_value=50,
     batch_size_value=4, input_recipe_options={"rgb_affine": True}, backbone_train_augmentation=_ROPE_JITTER)),
    ("nnUNetTrainerSegDINOv2_paper", "nnUNetTrainerSegDINOv2", dict(**_PAPER_COMMON, num_epochs_value=50,
     batch_size_value=4, input_recipe_options={"rgb_affine": True}, backbone_train_augmentation=_ROPE_JITTER)),
    ("nnUNetTrainerDinoUNet_paper", "nnUNetTrainerDinoUNet", dict(**_PAPER_COMMON, num_epochs_value=200,
     backbone_train_augmentation=_ROPE_JITTER)),
    ("nnUNetTrainerDinoUNet_7B_paper", "nnUNetTrainerDinoUNet_paper",
     dict(backbone="dinov3_vit7b16", network_kwargs={"gradient_checkpointing": True},
          backbone_train_augmentation={**_ROPE_JITTER, "drop_path": 0.4})),
    # U-DFA's paper: Adam, weight decay 1e-4, batch 12, 224 x 224; its channel rule and lr are not published
    ("nnUNetTrainerUDFA_paper", "nnUNetTrainerUDFA", dict({**_PAPER_COMMON, "input_recipe": "auto"},
     optimizer_name="adam", batch_size_value=12, patch_size_value=(224, 224), network_kwargs={"spa": "paper"})),
)

# Encoder adaptation, for each family at its default and `_S` sizes. LoRA: rank 16 on the attention
# linears, at the adapters' rate. FT: the whole encoder at a third of the adapters' rate (MedDINOv3
# trains its ViT at 1e-4 beside a decoder at 3e-4), layer decay 0.9, frozen for its first 10 epochs
# while the fresh adapters warm up (nnU-Net's "new parts first, then everything").
LORA = Adaptation("lora", rank=16, alpha=16.0)
FINE_TUNE = Adaptation("full", layer_decay=0.9, backbone_lr_ratio=1 / 3, warmup_epochs=10)
ADAPTED_TRAINERS = ("nnUNetTrainerSegDINO", "nnUNetTrainerUDFA", "nnUNetTrainerUDFA_S", "nnUNetTrainerDinoUNet")
TRAINERS += tuple((f"{base}_{suffix}", base, dict(adaptation=adaptation))
                  for base in ADAPTED_TRAINERS for suffix, adaptation in (("LoRA", LORA), ("FT", FINE_TUNE)))


def debug_attributes(cls: type) -> Dict[str, object]:
    """What a `_debug` twin changes: the short run, and an encoder warm-up of at most its first epoch."""
    attributes: Dict[str, object] = {"debug_run": True}
    if cls.adaptation.warmup_epochs > 1:
        attributes["adaptation"] = dataclasses.replace(cls.adaptation, warmup_epochs=1)
    return attributes


def declare_trainer(name: str, bases, **attributes) -> type:
    """A trainer class `name` deriving from `bases` (a class or a tuple, as `class` lists them) with
    `attributes`, bound to this module (resolvable by nnU-Net's trainer search and picklable)."""
    bases = bases if isinstance(bases, tuple) else (bases,)
    cls = type(name, bases, {"__module__": __name__, "__qualname__": name, **attributes})
    globals()[name] = cls
    return cls


def _declare_table() -> Tuple[type, ...]:
    declared = {"nnUNetTrainerDino": nnUNetTrainerDino}
    for name, parent, attributes in TRAINERS:
        if "network_kwargs" in attributes:  # a row's network arguments add to its parent's
            attributes = {**attributes, "network_kwargs": {**declared[parent].network_kwargs,
                                                           **attributes["network_kwargs"]}}
        declared[name] = declare_trainer(name, declared[parent], **attributes)
    public = tuple(declared[name] for name, _, _ in TRAINERS)
    for cls in public:
        declare_trainer(f"{cls.__name__}_debug", cls, **debug_attributes(cls))
    return public


PUBLIC_TRAINERS = _declare_table()


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


#: plugin trainers with a `_demo` twin: the demo's models, and the adaptation modes and U-DFA's paper SPA
#: compared on the demo dataset at the demo's budget
DEMO_TWINS = ("nnUNetTrainerUDFA_S", "nnUNetTrainerUDFA_S_LoRA", "nnUNetTrainerUDFA_S_FT", "nnUNetTrainerUDFA_S_SPA3",
              "nnUNetTrainerSegDINO", "nnUNetTrainerDinoUNet")
DEMO_WARMUP_EPOCHS = 2  # of the budget's 16 epochs: adapters first, then (FT) the encoder, scaled to the short run


def demo_attributes(cls: type) -> Dict[str, object]:
    """What a `_demo` twin changes besides its budget: seed 0, warm-ups of at most DEMO_WARMUP_EPOCHS."""
    attributes: Dict[str, object] = {"seed": 0, "warmup_epochs": min(cls.warmup_epochs, DEMO_WARMUP_EPOCHS)}
    if cls.adaptation.warmup_epochs > DEMO_WARMUP_EPOCHS:
        attributes["adaptation"] = dataclasses.replace(cls.adaptation, warmup_epochs=DEMO_WARMUP_EPOCHS)
    return attributes


DEMO_TRAINERS = tuple(declare_trainer(f"{base.__name__}_demo", (BudgetMixin, base), **demo_attributes(base))
                      for base in (globals()[name] for name in DEMO_TWINS))


__all__ = [name for cls in PUBLIC_TRAINERS for name in (cls.__name__, f"{cls.__name__}_debug")] + [
    "nnUNetTrainer_debug", "nnUNetTrainer_demo", *(cls.__name__ for cls in DEMO_TRAINERS)]
