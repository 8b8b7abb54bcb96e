"""A fixed seed for a trainer: the `seed` class attribute, or the `nnUNet_dino_seed` environment
variable, which overrides it. With `nnUNet_n_proc_DA=0` on a CPU two runs are then identical
(nnU-Net's multi-process augmentation is non-deterministic by design), on a quiet machine or a busy
one. A seeded trainer turns off the timing benchmark of nnU-Net's Gaussian blur augmentation (FFT or
direct convolution, whichever ran faster when first timed: the two round differently, so beside another
training the same seed trained differently), and, as a safeguard of the same kind, MKL's dynamic
threading (fewer threads on a busy machine would sum its products in another order)."""
from __future__ import annotations

import os
import random
from typing import Iterator, Optional

import numpy as np
import torch
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform

from .. import environment

SEED_ENV_VAR = environment.SEED


class SeededMixin:
    """Mix in before an nnUNetTrainer subclass: seeds Python, NumPy and torch once nnU-Net's
    `__init__` has run, before the network, its weights and the data loaders are made."""

    seed: Optional[int] = None
    debug_run: bool = False  # `_debug` twins default to seed 0
    seeded: bool = False  # set by __init__: a seed is in force

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        seed = os.environ.get(SEED_ENV_VAR, "").strip()
        seed = int(seed) if seed else (0 if self.debug_run and self.seed is None else self.seed)
        if seed is not None:  # before nnU-Net builds anything: MKL reads this on its first call
            os.environ["MKL_DYNAMIC"] = "FALSE"
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.seeded = seed is not None
        if seed is not None:
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
            self.print_to_log_file(f"nnunet-dino: seed {seed}")

    def get_training_transforms(self, *args, **kwargs):
        """nnU-Net's training transforms (called on the instance by `get_dataloaders`), with the Gaussian
        blur's timing benchmark off in a seeded run: the blur then always takes the same code path."""
        transforms = super().get_training_transforms(*args, **kwargs)
        if self.seeded:
            for transform in walk_transforms(transforms):
                if isinstance(transform, GaussianBlurTransform):
                    transform.benchmark = False
        return transforms


def walk_transforms(transform) -> Iterator:
    """A batchgeneratorsv2 transform and every transform nested in it (compositions, random wrappers)."""
    yield transform
    for child in [*getattr(transform, "transforms", ()), getattr(transform, "transform", None)]:
        if child is not None:
            yield from walk_transforms(child)
