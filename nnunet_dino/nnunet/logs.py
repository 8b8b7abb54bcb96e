"""Times read from nnU-Net's own training logs (`fold_X/training_log_*.txt`, one file per start of
`nnUNetv2_train`, each line `<datetime>: <message>`), so they exist for any trainer:

* training time per epoch: nnU-Net's `Epoch time: X s` lines;
* prediction time per case: the validation that ends a fold logs `predicting <case>` before each case
  and `Validation complete` after the last export: (complete - first 'predicting') / cases. It
  includes the sliding-window prediction, resampling to the original geometry and export, as
  `nnUNetv2_predict` does them, on the device the fold was trained on.
"""
from __future__ import annotations

import glob
import os
import re
from datetime import datetime
from typing import List, Optional

LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?): (.*)$")
EPOCH_TIME = re.compile(r"Epoch time: ([0-9.]+) s")


def _timed_lines(path: str):
    with open(path, errors="replace") as f:
        for line in f:
            match = LINE.match(line.rstrip("\n"))
            if match:
                yield datetime.fromisoformat(match.group(1)), match.group(2).strip()


def training_logs(fold_folder: str) -> List[str]:
    return sorted(glob.glob(os.path.join(fold_folder, "training_log_*.txt")))


def epoch_times(fold_folder: str) -> List[float]:
    """Seconds of every epoch nnU-Net logged for this fold (all its starts)."""
    return [float(m.group(1)) for path in training_logs(fold_folder) for _, text in _timed_lines(path)
            for m in [EPOCH_TIME.search(text)] if m]


def validation_seconds_per_case(fold_folder: str) -> Optional[float]:
    """Seconds per case of the fold's last finished validation; None when no log holds one."""
    result = None
    for path in training_logs(fold_folder):
        first, cases = None, 0
        for when, text in _timed_lines(path):
            if text.startswith("predicting "):
                first = first or when
                cases += 1
            elif text.startswith("Validation complete") and first is not None and cases:
                result = (when - first).total_seconds() / cases
                first, cases = None, 0
    return result
