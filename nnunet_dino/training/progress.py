"""Progress inside nnU-Net's final validation: nnU-Net builds its validation predictor with progress
bars off, so a CPU shows nothing for the minutes one large case takes. Plugin trainers turn the
sliding-window bar on for the duration of their validation only."""
from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def sliding_window_progress() -> Iterator[None]:
    """Within this block, every nnUNetPredictor shows its sliding-window progress bar."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    original = nnUNetPredictor.__init__

    def with_progress(predictor, *args, **kwargs):
        original(predictor, *args, **kwargs)
        predictor.allow_tqdm = True

    nnUNetPredictor.__init__ = with_progress
    try:
        yield
    finally:
        nnUNetPredictor.__init__ = original
