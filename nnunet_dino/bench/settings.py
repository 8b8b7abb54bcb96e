"""What is compared and the goals checked. The families are the network registry's rows
(networks/registry.py): a family added there is benched without a change here."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from ..networks.registry import network_families


def _families() -> Dict[str, Tuple[str, str]]:
    """key -> (trainer at the family's smallest backbone, trainer at ViT-B), bench-only variants included."""
    table = {}
    for family in network_families():
        small = family.trainer_name(family.smallest.suffix)
        base = family.trainer_name((family.vit_b() or family.smallest).suffix)
        table[family.key] = (small, base)
        for key_suffix, _, trainer_suffix in family.bench_variants:
            table[family.key + key_suffix] = (small + trainer_suffix, base + trainer_suffix)
    return table


#: family -> (trainer at the smallest backbone, trainer at ViT-B). The baseline `nnunet` always runs.
FAMILIES = _families()
FAMILY_NAMES = {"nnunet": "nnUNetTrainer", **{f.key: f.name for f in network_families()},
                **{f.key + k: f.name + label for f in network_families() for k, label, _ in f.bench_variants}}
#: the backbone runs under no_grad, outside the autograd graph
EXTRACTOR_ONLY = tuple(f.key for f in network_families() if f.extractor_only)
#: one per family (bench-only variants on request)
DEFAULT_FAMILIES = tuple(f.key for f in network_families())
MIRROR_AXES_2D = (0, 1)                   # nnUNetTrainer's inference_allowed_mirroring_axes for 2D
MATMUL_SIZE = {"cpu": 2048, "cuda": 8192}  # big enough to reach the ceiling, small enough to be quick

#: the performance goals: (figure, key in a model's "ratios", families, comparison, target)
GOALS = (
    ("train step / nnUNetTrainer", "step",
     {f.key: f.bench_step_goal for f in network_families() if f.bench_step_goal is not None}, "<="),
    ("backbone GFLOP/s / matmul GFLOP/s", "backbone_gflops_over_matmul", {f: 0.7 for f in FAMILIES}, ">="),
    ("peak train / inference memory (extractor-only)", "memory_train_over_inference",
     {f: 1.3 for f in EXTRACTOR_ONLY}, "<="),
    ("ViT-B checkpoint / full-state checkpoint", "checkpoint_vit_b_slim_over_full", {f: 0.10 for f in FAMILIES}, "<="),
    ("prediction time per case / nnUNetTrainer", "prediction", {f: 0.7 for f in FAMILIES}, "<="),
)


@dataclass(frozen=True)
class BenchSettings:
    patch: Tuple[int, int] = (224, 224)
    batch: int = 2
    repeats: int = 5
    warmup: int = 2
    device: str = "cpu"
    families: Tuple[str, ...] = DEFAULT_FAMILIES  # one per family; `udfa_spa3` on request
    input_channels: int = 1
    num_classes: int = 4
    case: Optional[Tuple[int, int]] = None   # sliding-window case (H, W); default twice the patch
    predict_repeats: int = 1
    vit_b: bool = True                       # also write ViT-B checkpoints (sizes only)
    cpu_precision: str = "auto"              # the plugin networks' `cpu_precision` (nnUNetTrainer: fp32 on CPU)

    @property
    def case_size(self) -> Tuple[int, int]:
        return tuple(self.case) if self.case else (2 * self.patch[0], 2 * self.patch[1])
