"""The network registry: every segmentation family of this package is one `NetworkFamily` row, declared at
the end of its own `networks/<paper>.py` (importing `nnunet_dino.networks` registers them all).

Everything that lists the families reads this table: the trainer classes (`training/trainers.py`: the
family's trainer at each size, its variants, its `_paper` recipe, its `_LoRA` / `_FT` twins), the bench
(`bench/settings.py`), the GPU check (`bench/gpu_check.py`) and the tests' network table
(`tests/network_table.py`, and the registry matrix `tests/test_registry_matrix.py`). Adding a family is
one file: the network class, and its row at the end of it.

A row is data only: trainer attributes are plain values (`training/trainers.py` turns them into classes),
so no network module imports the training side.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple, Type

import torch

from ..backbones import get_backbone_spec

#: the backbone of `tiny` builds (CPU smoke runs, tests): the family's smallest backbone at width 64, 4 blocks
TINY_BACKBONE = dict(embed_dim=64, depth=4, num_heads=4)
#: the base of every family's trainer
BASE_TRAINER = "nnUNetTrainerDino"

_FAMILIES: Dict[str, "NetworkFamily"] = {}
_DISCOVERED = False


@dataclass(frozen=True)
class Size:
    """One size of a family: the suffix its trainer adds to the family's trainer name ('' for the default
    size), the backbone, and network arguments that size needs (e.g. gradient checkpointing for ViT-L)."""
    suffix: str
    backbone: str
    network_kwargs: Tuple[Tuple[str, object], ...] = ()


@dataclass(frozen=True)
class TrainerVariant:
    """A further trainer of the family: `<trainer><suffix>`, deriving from `<trainer><parent>`, changing
    `attributes` (trainer class attributes; `network_kwargs` add to the parent's)."""
    suffix: str
    parent: str
    attributes: Mapping[str, object]


@dataclass(frozen=True)
class NetworkFamily:
    """One paper's network family.

    name / key: display name ('SegDINO v2') and short id ('segdino_v2': bench keys, JSON).
    network_class: the `DinoSegmentationNetwork` subclass; its `slab_fusion_points` are the family's.
    trainer / parent_trainer: the name of the family's trainer at its default size and the trainer it derives
        from (another family's, to inherit its recipe, or `BASE_TRAINER`).
    recipe: the default trainer's attributes beyond network class and backbone (optimiser, rate, schedule,
        `network_kwargs`): the package's recipe for the family.
    sizes: smallest first; the one with suffix '' is the default (`default_backbone`).
    variants: further trainers (another head, the paper's ablations, ...).
    paper_recipe: the `_paper` trainer's attributes (the authors' recipe, as far as nnU-Net allows), added to
        the shared `_paper` rules of training/trainers.py; None: no `_paper` trainer.
    adapted_sizes: size suffixes that get `_LoRA` and `_FT` trainers.
    tiny_options: network arguments of `tiny` builds (narrow CNNs); deterministic_options: those that make a
        training step deterministic (no stochastic depth), for eager-vs-compiled comparisons.
    injects: True when the adapter writes into the encoder's token stream (gradients cross the frozen blocks);
        False for extractor-only families (the encoder runs without an autograd graph).
    bench_variants: (key suffix, label suffix, trainer suffix) of bench-only variants (e.g. U-DFA's 3-scale SPA).
    bench_step_goal: the bench's goal for the train step over nnUNetTrainer's (None: none set).
    """
    name: str
    key: str
    network_class: Type[torch.nn.Module]
    trainer: str
    recipe: Mapping[str, object]
    sizes: Tuple[Size, ...]
    parent_trainer: str = BASE_TRAINER
    variants: Tuple[TrainerVariant, ...] = ()
    paper_recipe: Optional[Mapping[str, object]] = None
    adapted_sizes: Tuple[str, ...] = ("",)
    tiny_options: Tuple[Tuple[str, object], ...] = ()
    deterministic_options: Tuple[Tuple[str, object], ...] = ()
    injects: bool = False
    bench_variants: Tuple[Tuple[str, str, str], ...] = ()
    bench_step_goal: Optional[float] = None

    def __post_init__(self):
        suffixes = [s.suffix for s in self.sizes]
        if "" not in suffixes or len(set(suffixes)) != len(suffixes):
            raise ValueError(f"{self.name}: sizes need unique suffixes, one of them '' (the default size)")
        if not tuple(self.network_class.slab_fusion_points):
            raise ValueError(f"{self.name}: {self.network_class.__name__} declares no slab_fusion_points; every "
                             f"family runs in 2.5d (networks/slab.py)")
        unknown = set(self.adapted_sizes) - set(suffixes)
        if unknown:
            raise ValueError(f"{self.name}: adapted_sizes {sorted(unknown)} are not sizes")

    # --- what the row says, derived -----------------------------------------------------------------------
    @property
    def default_backbone(self) -> str:
        return self.size("").backbone

    @property
    def smallest(self) -> Size:
        return self.sizes[0]

    @property
    def slab_fusion_points(self) -> Tuple[str, ...]:
        return tuple(self.network_class.slab_fusion_points)

    @property
    def extractor_only(self) -> bool:
        return not self.injects

    @property
    def network_path(self) -> str:
        """'module:Class' under nnunet_dino.networks."""
        return f"{self.network_class.__module__.rsplit('.', 1)[-1]}:{self.network_class.__name__}"

    def size(self, suffix: str) -> Size:
        for size in self.sizes:
            if size.suffix == suffix:
                return size
        raise KeyError(f"{self.name} has no size {suffix!r}; sizes: {[s.suffix for s in self.sizes]}")

    def trainer_name(self, suffix: str = "") -> str:
        return self.trainer + suffix

    def vit_b(self) -> Optional[Size]:
        """The ViT-B size (the bench's checkpoint sizes), if the family has one."""
        return next((s for s in self.sizes if get_backbone_spec(s.backbone).embed_dim == 768), None)

    # --- building -------------------------------------------------------------------------------------------
    def build(self, input_channels: int = 1, num_classes: int = 3, tiny: bool = False, seed: int = 0,
              backbone: Optional[str] = None, **options) -> torch.nn.Module:
        """The family's network at its smallest size (or `backbone`), seeded; `tiny`: a `TINY_BACKBONE`
        variant of that backbone and the row's narrow CNN options (CPU smoke runs, tests)."""
        return build_network(self.network_class, backbone or self.smallest.backbone, input_channels, num_classes,
                             tiny, self.tiny_options, seed, **options)


def build_network(network_class: Type[torch.nn.Module], backbone: str, input_channels: int, num_classes: int,
                  tiny: bool = False, tiny_options: Tuple[Tuple[str, object], ...] = (), seed: int = 0,
                  **options) -> torch.nn.Module:
    """`network_class` on `backbone` (tiny: its `TINY_BACKBONE` variant, with `tiny_options`), seeded."""
    spec = get_backbone_spec(backbone)
    if tiny:
        spec = spec.variant(f"tiny_{backbone}", **TINY_BACKBONE)
        options = {**dict(tiny_options), **options}
    torch.manual_seed(seed)
    return network_class(input_channels, num_classes, backbone=spec, **options)


def register_network_family(family: NetworkFamily) -> NetworkFamily:
    for other in _FAMILIES.values():
        if other.name != family.name and (other.key == family.key or other.trainer == family.trainer):
            raise ValueError(f"{family.name}: key {family.key!r} or trainer {family.trainer} taken by {other.name}")
    _FAMILIES[family.name] = family
    return family


def network_families() -> Tuple[NetworkFamily, ...]:
    """Every family, in registration order. Every module of this package is imported first (once): a family
    module registers its row at its end, so a new family needs no import line anywhere."""
    global _DISCOVERED
    if not _DISCOVERED:
        package = importlib.import_module(__package__)
        for module in sorted(m.name for m in pkgutil.iter_modules(package.__path__)):
            importlib.import_module(f"{__package__}.{module}")
        _DISCOVERED = True
    return tuple(_FAMILIES.values())


def get_network_family(name_or_key: str) -> NetworkFamily:
    for family in network_families():
        if name_or_key in (family.name, family.key):
            return family
    raise KeyError(f"unknown network family {name_or_key!r}; known: "
                   f"{', '.join(f.name for f in network_families())}")


__all__ = ["BASE_TRAINER", "NetworkFamily", "Size", "TINY_BACKBONE", "TrainerVariant", "build_network",
           "get_network_family",
           "network_families", "register_network_family"]
