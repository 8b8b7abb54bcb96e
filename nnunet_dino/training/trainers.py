"""The plugin's nnU-Net trainers. Class names are public API: checkpoints store them and
`nnUNetv2_predict` resolves them by name.

Trainers are data: each network family's row (networks/registry.py, declared at the end of its
`networks/<paper>.py`) names its trainer, recipe, sizes, variants, `_paper` recipe and adapted sizes;
`family_trainers` turns a row into trainer rows (name, parent, the attributes it changes; its
`network_kwargs` add to the parent's), and `declare_trainer` makes each a real class of this module,
so nnU-Net's resolver finds it and it pickles like any class. Every plugin trainer gets a `_debug`
twin (2 short epochs, seed 0: tests, smoke runs). To declare another combination yourself, subclass
in three lines:

    class nnUNetTrainerUDFA_L_MyRecipe(nnUNetTrainerUDFA_L):
        learning_rate = 1e-4

Encoder adaptation is one more declared attribute (backbones/adaptation.py): `_LoRA` and `_FT` rows
exist for each family at its declared `adapted_sizes`, e.g. `adaptation = Adaptation("last_k", last_k=4)`
in a subclass trains the last four blocks.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from ..backbones.adaptation import Adaptation
from ..cpu_threads import cap_torch_threads
from ..networks.registry import BASE_TRAINER, NetworkFamily, network_families
from .base import DEBUG_RUN, nnUNetTrainerDino
from .budget import BudgetMixin
from .seeding import SeededMixin

#: every `_paper` trainer: no test-time mirroring (none of the official codes mirrors at test time), weight
#: decay on every trainable parameter (as their optimisers), the official channel rule; the family's
#: `paper_recipe` adds to (and may override) these
PAPER_COMMON = dict(test_time_mirroring=False, decay_all_parameters=True, input_recipe="official")

# Encoder adaptation, for each family at its `adapted_sizes`. LoRA: rank 16 on the attention linears, at the
# adapters' rate. FT: the whole encoder at a third of the adapters' rate (MedDINOv3 trains its ViT at 1e-4
# beside a decoder at 3e-4), layer decay 0.9, frozen for its first 10 epochs while the fresh adapters warm up
# (nnU-Net's "new parts first, then everything").
LORA = Adaptation("lora", rank=16, alpha=16.0)
FINE_TUNE = Adaptation("full", layer_decay=0.9, backbone_lr_ratio=1 / 3, warmup_epochs=10)
ADAPTED = (("LoRA", LORA), ("FT", FINE_TUNE))

TrainerRow = Tuple[str, str, Dict[str, object]]


def family_trainers(family: NetworkFamily) -> List[TrainerRow]:
    """The trainer rows of one family: its trainer at the default size, the other sizes, the variants, the
    `_paper` trainer and the `_LoRA` / `_FT` twins of its adapted sizes."""
    name = family.trainer
    rows: List[TrainerRow] = [(name, family.parent_trainer,
                               dict(network_class=family.network_class, backbone=family.default_backbone,
                                    **family.recipe))]
    for size in family.sizes:
        if size.suffix:
            extra = {"network_kwargs": dict(size.network_kwargs)} if size.network_kwargs else {}
            rows.append((name + size.suffix, name, dict(backbone=size.backbone, **extra)))
    if family.paper_recipe is not None:
        rows.append((name + "_paper", name, {**PAPER_COMMON, **family.paper_recipe}))
    rows += [(name + v.suffix, name + v.parent, dict(v.attributes)) for v in family.variants]
    rows += [(f"{name}{suffix}_{label}", name + suffix, dict(adaptation=adaptation))
             for suffix in family.adapted_sizes for label, adaptation in ADAPTED]
    return rows


def _in_declaration_order(rows: List[TrainerRow]) -> Tuple[TrainerRow, ...]:
    """Parents before children (a family may derive from another family's trainer)."""
    declared, ordered, pending = {BASE_TRAINER}, [], list(rows)
    while pending:
        ready = [row for row in pending if row[1] in declared]
        if not ready:
            raise ValueError(f"trainer rows with unknown parents: {[(n, p) for n, p, _ in pending]}")
        for row in ready:
            ordered.append(row)
            declared.add(row[0])
            pending.remove(row)
    return tuple(ordered)


TRAINERS: Tuple[TrainerRow, ...] = _in_declaration_order(
    [row for family in network_families() for row in family_trainers(family)])
ADAPTED_TRAINERS = tuple(f"{family.trainer}{suffix}" for family in network_families()
                         for suffix in family.adapted_sizes)


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
    declared = {BASE_TRAINER: nnUNetTrainerDino}
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
class UsableCoresMixin:
    """nnU-Net's own trainer on one torch thread per usable core, as the plugin's (cpu_threads.py)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        cap_torch_threads()

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True):
        """nnU-Net's (which picks the call by these parameter names); nnUNetv2_predict makes no trainer."""
        cap_torch_threads()
        return nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                        num_output_channels, enable_deep_supervision)


class nnUNetTrainer_debug(UsableCoresMixin, nnUNetTrainer):
    """nnU-Net's own trainer and network, with the `_debug` run length (pipeline tests)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = DEBUG_RUN


# --- the demo (`make demo`): the same budget of training iterations for every model, seed 0 -----
class nnUNetTrainer_demo(BudgetMixin, SeededMixin, UsableCoresMixin, nnUNetTrainer):
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
