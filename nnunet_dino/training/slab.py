"""Which configurations a DINO trainer runs, and the slab record of a 2.5D one.

A 2D configuration runs the 2D network. A 3D configuration runs only as a slab (networks/slab.py):
the `2.5d` configuration of `nnunet-dino plan --preset 2.5d`, marked by `nnunet_dino_slab` in the
plans. nnU-Net's own 3D configurations (`3d_fullres`, `3d_lowres`) are refused before anything is
written: their patches are [Z, H, W] with Z of 20 to 200+, so slab-wise encoding would run batch x Z
ViT slices per step (a 2.5d slab of 5 runs batch x 5), and the message names the 2.5d preset.

The trainer declares the slab's neighbour mode and fusion (`slab_neighbours`, `slab_fusion`); its
`__init__` records them, resolved for the data, in the plans saved with the model, and
`build_network_architecture` (the predictor, in a fresh process) rebuilds the slab from that record.
"""
from __future__ import annotations

from typing import Optional

from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

from ..networks.slab import FUSION_MODES, NEIGHBOUR_MODES
from ..plans.slab import SLAB_CONFIGURATION, SLAB_PRESET, SLAB_RECORD_KEY


#: a slab's test-time mirroring: the in-plane axes of its (K, H, W) tiles, as the 2d configuration mirrors
SLAB_INFERENCE_MIRROR_AXES = (1, 2)


class UnsupportedConfigurationError(ValueError):
    """A configuration a DINO trainer cannot run (raised before nnU-Net writes anything)."""


def unsupported_configuration(trainer_name: str, configuration: str, ndim: int) -> UnsupportedConfigurationError:
    return UnsupportedConfigurationError(
        f"{trainer_name} segments 2D images, but configuration '{configuration}' is {ndim}D. "
        f"Use the '2d' configuration: `nnUNetv2_train DATASET 2d FOLD -tr {trainer_name}` "
        f"(nnU-Net's 2d configuration segments 3D volumes slice by slice), or, for context across slices, add a slab "
        f"configuration with `nnunet-dino plan -d DATASET --preset {SLAB_PRESET}` and train "
        f"`nnUNetv2_train DATASET {SLAB_CONFIGURATION} FOLD -tr {trainer_name}`.")


def slab_marker(configuration_manager: ConfigurationManager) -> Optional[dict]:
    """The configuration's slab record (None: not a slab configuration)."""
    return configuration_manager.configuration.get(SLAB_RECORD_KEY)


def check_runnable(trainer_name: str, configuration: str, configuration_manager: ConfigurationManager) -> None:
    """2D, or a slab whose record matches its patch; else the refusal naming the 2.5d preset."""
    patch = configuration_manager.patch_size
    marker = slab_marker(configuration_manager)
    if len(patch) == 2 and marker is None:
        return
    if len(patch) != 3 or marker is None:
        raise unsupported_configuration(trainer_name, configuration, len(patch))
    if int(marker.get("slices", patch[0])) != patch[0]:
        raise UnsupportedConfigurationError(
            f"configuration '{configuration}' records slabs of {marker['slices']} slices but its patch is "
            f"{list(patch)}: re-run `nnunet-dino plan -d DATASET --preset {SLAB_PRESET} --slices K`")


def slab_record(trainer_cls, configuration_manager: ConfigurationManager, num_input_channels: int,
                input_recipe: Optional[dict] = None) -> Optional[dict]:
    """{'slices', 'neighbours', 'fusion'} for a slab configuration (None for 2D): the one recorded in the
    plans when the trainer has run, else the trainer's declaration resolved for the data. Neighbours as
    RGB need single-channel data that the input recipe maps by repetition (not three CT windows)."""
    marker = slab_marker(configuration_manager)
    if marker is None:
        return None
    if {"neighbours", "fusion"} <= set(marker):
        return {"slices": int(configuration_manager.patch_size[0]), "neighbours": marker["neighbours"],
                "fusion": marker["fusion"]}
    neighbours, fusion = trainer_cls.slab_neighbours, trainer_cls.slab_fusion
    if neighbours not in NEIGHBOUR_MODES or fusion not in FUSION_MODES:
        raise ValueError(f"{trainer_cls.__name__}: slab_neighbours must be one of {NEIGHBOUR_MODES} and slab_fusion "
                         f"one of {FUSION_MODES}, got {neighbours!r}, {fusion!r}")
    if neighbours == "rgb" and (num_input_channels != 1 or (input_recipe or {}).get("recipe") == "ct_windows"):
        neighbours = "repeat"
    return {"slices": int(configuration_manager.patch_size[0]), "neighbours": neighbours, "fusion": fusion}


def describe_slab(record: dict) -> str:
    """One log line."""
    channels = ("slices s-1, s, s+1 as the encoder's three channels" if record["neighbours"] == "rgb"
                else "each slice's own channels")
    fusion = "residual cross-slice convolutions at the declared decoder stages" if record["fusion"] == "conv" else "no fusion"
    return f"slabs of {record['slices']} slices, encoded slice by slice; {channels}; {fusion}"
