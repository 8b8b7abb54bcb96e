"""Shim scanned by nnU-Net's trainer resolver (imported as a top-level module, then discarded).

Classes are defined in `nnunet_dino.training.trainers`; re-exporting keeps their `__module__`
there, so they pickle and keep one identity. The module name is unique on purpose.
"""
from nnunet_dino.training.trainers import *  # noqa: F401,F403
