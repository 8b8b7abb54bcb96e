"""A fixed seed for a trainer: the `seed` class attribute, or the `nnUNet_dino_seed` environment
variable, which overrides it. With `nnUNet_n_proc_DA=0` on a CPU two runs are then identical
(nnU-Net's multi-process augmentation is non-deterministic by design), on a quiet machine or a busy
one: a seeded trainer turns off MKL's dynamic threading, which otherwise uses fewer threads when the
machine is loaded, so that its matrix products sum in another order and training drifts apart."""
from __future__ import annotations

import os
import random
from typing import Optional

import numpy as np
import torch

SEED_ENV_VAR = "nnUNet_dino_seed"


class SeededMixin:
    """Mix in before an nnUNetTrainer subclass: seeds Python, NumPy and torch once nnU-Net's
    `__init__` has run, before the network, its weights and the data loaders are made."""

    seed: Optional[int] = None
    debug_run: bool = False  # `_debug` twins default to seed 0

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        seed = os.environ.get(SEED_ENV_VAR, "").strip()
        seed = int(seed) if seed else (0 if self.debug_run and self.seed is None else self.seed)
        if seed is not None:  # before nnU-Net builds anything: MKL reads this on its first call
            os.environ["MKL_DYNAMIC"] = "FALSE"
        super().__init__(plans, configuration, fold, dataset_json, device)
        if seed is not None:
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
            self.print_to_log_file(f"nnunet-dino: seed {seed}")
