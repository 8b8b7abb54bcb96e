"""What is compared and the goals checked."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

#: family -> (trainer at the smallest backbone, trainer at ViT-B). The baseline `nnunet` always runs.
FAMILIES = {
    "segdino": ("nnUNetTrainerSegDINO", "nnUNetTrainerSegDINO_B"),
    "udfa": ("nnUNetTrainerUDFA_S", "nnUNetTrainerUDFA"),
    "udfa_spa3": ("nnUNetTrainerUDFA_S_SPA3", "nnUNetTrainerUDFA_SPA3"),
    "dinounet": ("nnUNetTrainerDinoUNet", "nnUNetTrainerDinoUNet_B"),
}
FAMILY_NAMES = {"nnunet": "nnUNetTrainer", "segdino": "SegDINO", "udfa": "U-DFA", "udfa_spa3": "U-DFA (3-scale SPA)",
                "dinounet": "Dino U-Net"}
EXTRACTOR_ONLY = ("segdino", "dinounet")  # the backbone runs under no_grad, outside the autograd graph
MIRROR_AXES_2D = (0, 1)                   # nnUNetTrainer's inference_allowed_mirroring_axes for 2D
MATMUL_SIZE = {"cpu": 2048, "cuda": 8192}  # big enough to reach the ceiling, small enough to be quick

#: the performance goals: (figure, key in a model's "ratios", families, comparison, target)
GOALS = (
    ("train step / nnUNetTrainer", "step", {"segdino": 0.25, "dinounet": 0.6, "udfa": 0.8}, "<="),
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
    families: Tuple[str, ...] = ("segdino", "udfa", "dinounet")  # one per paper; `udfa_spa3` on request
    input_channels: int = 1
    num_classes: int = 4
    case: Optional[Tuple[int, int]] = None   # sliding-window case (H, W); default twice the patch
    predict_repeats: int = 1
    vit_b: bool = True                       # also write ViT-B checkpoints (sizes only)
    cpu_precision: str = "auto"              # the plugin networks' `cpu_precision` (nnUNetTrainer: fp32 on CPU)

    @property
    def case_size(self) -> Tuple[int, int]:
        return tuple(self.case) if self.case else (2 * self.patch[0], 2 * self.patch[1])
