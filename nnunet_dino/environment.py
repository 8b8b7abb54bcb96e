"""The plugin's own environment variables, in one place and one spelling: `nnUNet_dino_*`, as nnU-Net's
own (`nnUNet_raw`, `nnUNet_results`, ...). nnU-Net's folder variables are read in nnunet/folders.py.

Variables once spelt `NNUNET_DINO_*` are still read under that name, with a one-line deprecation notice
on stderr (once per process). Standard library only: the startup hook (`_autoregister.py`) reads one.
"""
from __future__ import annotations

import os
import sys
from typing import Mapping, Optional

WEIGHTS = "nnUNet_dino_weights"                  # the DINO weights: a folder, a file, `random` or `hub`
SEED = "nnUNet_dino_seed"                        # a fixed training seed (training/seeding.py)
BUDGET_SECONDS = "nnUNet_dino_budget_seconds"    # the demo's wall-clock budget (training/budget.py)
TEST_PAUSE = "nnUNet_dino_test_pause"            # test-only kill-and-resume hook (training/base.py)
NO_AUTOREGISTER = "nnUNet_dino_no_autoregister"  # 1: the startup hook leaves nnUNet_extTrainer alone
MRICRON_DIR = "nnUNet_dino_mricron_dir"          # the Colin27/AAL templates (datasets/colin27.py)

#: the old spelling of a variable -> its name now
DEPRECATED = {"NNUNET_DINO_NO_AUTOREGISTER": NO_AUTOREGISTER, "NNUNET_DINO_MRICRON_DIR": MRICRON_DIR}
_warned = set()


def get(name: str, default: Optional[str] = None, environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The variable's value; else its old spelling's (with a deprecation line on stderr); else `default`."""
    environ = os.environ if environ is None else environ
    if name in environ:
        return environ[name]
    for old, new in DEPRECATED.items():
        if new == name and old in environ:
            if old not in _warned:
                _warned.add(old)
                sys.stderr.write(f"nnunet-dino: {old} is deprecated, set {name} instead\n")
            return environ[old]
    return default
