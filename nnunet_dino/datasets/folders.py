"""Putting a dataset folder that was built aside into place in nnUNet_raw, without a moment where
neither the old nor the new one exists (used by every dataset writer here)."""
from __future__ import annotations

import os
import shutil
import uuid
from typing import Sequence


def move_into_place(built: str, final: str, replaced: Sequence[str] = ()) -> None:
    """Rename the finished folder `built` to `final`. Folders being replaced (`final` itself, and any
    other folder of the same dataset id in `replaced`) are first renamed aside, then deleted once the
    new folder is in place; if the final rename fails they are put back."""
    aside = []
    for old in dict.fromkeys([*replaced, *([final] if os.path.exists(final) else [])]):
        hidden = os.path.join(os.path.dirname(old), f".{os.path.basename(old)}.replaced-{uuid.uuid4().hex[:8]}")
        os.rename(old, hidden)
        aside.append((old, hidden))
    try:
        os.rename(built, final)
    except BaseException:
        for old, hidden in aside:
            os.rename(hidden, old)
        raise
    for _, hidden in aside:
        shutil.rmtree(hidden, ignore_errors=True)
