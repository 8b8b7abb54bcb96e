"""What every reader returns besides the voxels (a grid in space), and the one error readers raise for a
file that is readable but unusable as it is."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple


@dataclass
class Geometry:
    ndim: int = 2                                   # spatial dimensions (components excluded)
    spacing: Optional[Tuple[float, ...]] = None     # numpy order, mm
    origin: Optional[Tuple[float, ...]] = None      # SimpleITK (x, y, z) order
    direction: Optional[Tuple[float, ...]] = None


class UnsupportedImage(ValueError):
    """The file is readable but cannot be used as it is (the message says why and what to do)."""
