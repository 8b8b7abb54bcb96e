"""The pretraining recipe: every hyper-parameter in one dataclass (saved in the training state and
the JSON record), its per-step schedules and the optimiser's parameter groups.

Defaults follow DINOv2's ViT recipe where it applies to continued training on a single GPU node:
AdamW, linear warm-up then cosine learning rate, cosine weight decay 0.04 -> 0.2, cosine teacher
momentum 0.992 -> 1, teacher temperature warmed 0.04 -> 0.07 over the first 30 % of the steps,
layer-wise lr decay 0.9 with the patch embedding at 0.2 x, no weight decay on biases, norms, layer
scales, tokens and position embeddings, gradient clipping at 3. The loss weights are DINOv2's
(DINO 1, iBOT 1, KoLeo 0.1); Gram anchoring (DINOv3) is off unless `gram_weight` > 0.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Dict, List, Tuple

from ..errors import OptionError


CENTRINGS = ("centre", "sinkhorn")


@dataclass(frozen=True)
class Recipe:
    steps: int = 10000
    batch_size: int = 32                    # slices per step (per GPU under DDP)
    global_size: int = 224                  # rounded to a multiple of the patch size
    local_size: int = 96
    local_crops: int = 8
    global_scale: Tuple[float, float] = (0.32, 1.0)
    local_scale: Tuple[float, float] = (0.05, 0.32)
    contrast: Tuple[float, float] = (0.65, 1.5)
    brightness: float = 0.3                 # z-score units
    gamma: Tuple[float, float] = (0.7, 1.5)
    gamma_probability: float = 0.3
    noise: float = 0.1
    lr: float = 2e-4
    min_lr: float = 1e-6
    warmup_fraction: float = 0.1
    layer_decay: float = 0.9
    patch_embed_lr: float = 0.2
    weight_decay: Tuple[float, float] = (0.04, 0.2)
    momentum: Tuple[float, float] = (0.992, 1.0)
    teacher_temp: Tuple[float, float] = (0.04, 0.07)
    teacher_temp_warmup_fraction: float = 0.3
    student_temp: float = 0.1
    centre_momentum: float = 0.9
    centring: str = "centre"                # or "sinkhorn" (Sinkhorn-Knopp)
    prototypes: int = 65536
    head_hidden: int = 2048
    head_bottleneck: int = 256
    head_layers: int = 3
    mask_probability: float = 0.5
    mask_ratio: Tuple[float, float] = (0.1, 0.5)
    dino_weight: float = 1.0
    ibot_weight: float = 1.0
    koleo_weight: float = 0.1
    gram_weight: float = 0.0
    gram_refresh: int = 1000                # steps between refreshes of the Gram teacher
    clip_grad: float = 3.0
    case_pool: int = 64
    save_every: int = 200
    seed: int = 0

    def for_patch(self, patch: int) -> "Recipe":
        """The recipe with crop sizes rounded to multiples of the backbone's patch size."""
        def rounded(size: int) -> int:
            return max(patch, int(round(size / patch)) * patch)
        return dataclasses.replace(self, global_size=rounded(self.global_size), local_size=rounded(self.local_size))

    def check(self) -> None:
        if self.steps < 1 or self.batch_size < 2:
            raise OptionError("--steps must be >= 1 and --batch-size >= 2 (KoLeo needs two images)")
        if self.centring not in CENTRINGS:
            raise OptionError(f"--centring {self.centring!r}: choose one of {', '.join(CENTRINGS)}")
        for name in ("global_scale", "local_scale", "mask_ratio"):
            low, high = getattr(self, name)
            if not 0 < low <= high <= 1:
                raise OptionError(f"{name} must be two fractions 0 < low <= high <= 1, got {(low, high)}")

    def record(self) -> dict:
        return dataclasses.asdict(self)


def cosine(start: float, end: float, progress: float) -> float:
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


@dataclass(frozen=True)
class StepValues:
    lr: float
    weight_decay: float
    momentum: float
    teacher_temp: float


def schedule(recipe: Recipe, step: int) -> StepValues:
    """The scheduled values at 0-based `step`."""
    warmup = int(recipe.warmup_fraction * recipe.steps)
    if step < warmup:
        lr = recipe.lr * (step + 1) / warmup
    else:
        lr = cosine(recipe.lr, recipe.min_lr, (step - warmup) / max(1, recipe.steps - warmup))
    progress = step / max(1, recipe.steps - 1)
    temp_warmup = int(recipe.teacher_temp_warmup_fraction * recipe.steps)
    temp = recipe.teacher_temp[1]
    if step < temp_warmup:
        temp = recipe.teacher_temp[0] + (recipe.teacher_temp[1] - recipe.teacher_temp[0]) * step / temp_warmup
    return StepValues(lr, cosine(*recipe.weight_decay, progress), cosine(*recipe.momentum, progress), temp)


def _no_decay(name: str, ndim: int) -> bool:
    return ndim <= 1 or "token" in name or "pos_embed" in name


def _layer(name: str, depth: int) -> int:
    """0: embeddings and prefix tokens; i + 1: block i; depth + 1: the final norm and the heads."""
    if name.startswith("vit.blocks."):
        return int(name.split(".")[2]) + 1
    if name.startswith("vit.") and not name.startswith(("vit.norm.", "vit.fc_norm.")) or name == "mask_token":
        return 0
    return depth + 1


def parameter_groups(model, recipe: Recipe) -> List[dict]:
    """AdamW groups, each with `lr_scale` and `wd_scale` that the step loop multiplies in."""
    depth = len(model.vit.blocks)
    groups: Dict[Tuple[float, float], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr_scale = recipe.layer_decay ** (depth + 1 - _layer(name, depth))
        if name.startswith("vit.patch_embed."):
            lr_scale *= recipe.patch_embed_lr
        wd_scale = 0.0 if _no_decay(name, param.ndim) else 1.0
        group = groups.setdefault((lr_scale, wd_scale), {"params": [], "lr_scale": lr_scale, "wd_scale": wd_scale})
        group["params"].append(param)
    return list(groups.values())


def apply_schedule(optimizer, values: StepValues) -> None:
    for group in optimizer.param_groups:
        group["lr"] = values.lr * group["lr_scale"]
        group["weight_decay"] = values.weight_decay * group["wd_scale"]
