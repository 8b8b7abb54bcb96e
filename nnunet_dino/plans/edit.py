"""Editing nnU-Net plans so that what training changes also reaches `nnUNetv2_predict`.

nnU-Net saves `plans_manager.plans` into the results folder and the predictor rebuilds everything
from that file. Changing only the (cached, deep-copied) ConfigurationManager would train on one
patch size and predict with another, so every change goes into the plans dict itself.
"""
from __future__ import annotations

from typing import Sequence, Tuple

from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager


#: key of the record DINO trainers keep in their configuration (backbone, weights, resize rule)
PLANS_RECORD_KEY = "nnunet_dino"


def rounded_patch_size(patch_size: Sequence[int], multiple: int) -> Tuple[int, ...]:
    """Each edge to the nearest multiple, halves rounded up (at least one multiple)."""
    return tuple(max(multiple, int(s / multiple + 0.5) * multiple) for s in patch_size)


def update_configuration(plans_manager: PlansManager, configuration: str,
                         **changes) -> Tuple[PlansManager, ConfigurationManager]:
    """Write `changes` into plans['configurations'][configuration] and return fresh managers
    (PlansManager.get_configuration is lru-cached per instance)."""
    plans = plans_manager.plans
    plans["configurations"][configuration].update(changes)
    fresh = PlansManager(plans)
    return fresh, fresh.get_configuration(configuration)
