"""Which configurations a DINO trainer runs, and the slab record of a 2.5D one.

A 2D configuration runs the 2D network. A 3D configuration runs only as a slab (networks/slab.py):
the `2.5d` configuration of `nnunet-dino plan --preset 2.5d`, marked by `nnunet_dino_slab` in the
plans. nnU-Net's own 3D configurations (`3d_fullres`, `3d_lowres`) are refused before anything is
written: their patches are [Z, H, W] with Z of 20 to 200+, so slab-wise encoding would run batch x Z
ViT slices per step (a 2.5d slab of 5 runs batch x 5), and the message names the 2.5d preset.

The trainer declares the slab's neighbour mode and fusion (`slab_neighbours`, `slab_fusion`); its
`__init__` records them, resolved for the data, in the plans saved with the model, and
`build_network_architecture` (the predictor, in a fresh process) rebuilds the slab from that record.
A slab started from the 2d model (`start_from`, plans/slab.py) keeps each slice's own channels: slices
s-1, s, s+1 as the encoder's channels would change what the 2d model's encoder sees.

Prediction. nnU-Net's sliding window steps `step_size` x patch along every axis: a 5-slice slab at 0.5
is predicted at every 2-3 slices, so each slice is encoded about twice (and its Gaussian weight along z,
sigma 5/8 slice, lets only the most central of those count). The trainer records beside the slab
(`nnunet_dino_slab_z_step`, from `prediction_z_step`) the step `nnunet-dino predict` takes along z
instead (`slab_slicers`), and so does the trainer's own validation (`validation_at_slab_steps`), so
that the cross-validation scores what is predicted; in-plane it keeps nnU-Net's step. `nnUNetv2_predict`
has one step for every axis and keeps it. Models without the record (trained before it existed) predict
with nnU-Net's step. Mirroring at inference is the in-plane part of what training mirrored
(`inference_mirror_axes`).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional, Sequence, Tuple

from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

from ..networks.slab import FUSION_MODES, NEIGHBOUR_MODES
from ..plans.slab import SLAB_CONFIGURATION, SLAB_PRESET, SLAB_RECORD_KEY


#: a slab's test-time mirroring: the in-plane axes of its (K, H, W) tiles, as the 2d configuration mirrors
SLAB_INFERENCE_MIRROR_AXES = (1, 2)
#: configuration key of the step along z (slices) at which `nnunet-dino predict` tiles a slab model
SLAB_Z_STEP_KEY = "nnunet_dino_slab_z_step"


def inference_mirror_axes(training_axes: Optional[Sequence[int]]) -> Optional[Tuple[int, ...]]:
    """A slab's test-time mirroring: the in-plane axes among those training mirrored, as the 2d model mirrors.
    Not z, although training mirrors it: every mirror along z would double the forwards of a volume."""
    axes = tuple(a for a in (training_axes or ()) if a in SLAB_INFERENCE_MIRROR_AXES)
    return axes or None


def prediction_z_step(slices: int) -> int:
    """Slices between neighbouring slab tiles along z at prediction. K - 1: consecutive slabs share one edge
    slice, so that slice is the mean of a prediction with context above and one with context below (the
    Gaussian weights both edges alike), every other slice is predicted once, and a volume costs K / (K - 1)
    the slices of the 2d model (1.25 at K = 5). Below K = 4 that would exceed 4 / 3: then K, no overlap
    (each slice predicted by exactly one slab, as often as by the 2d model)."""
    return slices - 1 if slices >= 4 else slices


def slab_slicers(image_size: Sequence[int], patch_size: Sequence[int], tile_step_size: float,
                 z_step: int) -> List[tuple]:
    """nnU-Net's sliding-window slicers of a (Z, H, W) case for (K, H, W) tiles, in nnU-Net's order, with
    `z_step` slices between tiles along z (nnU-Net's rule spreads them evenly over the case, so the last
    slab ends at the last slice) and nnU-Net's `tile_step_size` in-plane."""
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window
    z_starts = compute_steps_for_sliding_window(image_size[:1], patch_size[:1], min(1.0, z_step / patch_size[0]))[0]
    rows, columns = compute_steps_for_sliding_window(image_size[1:], patch_size[1:], tile_step_size)
    k, h, w = patch_size
    return [(slice(None), slice(z, z + k), slice(y, y + h), slice(x, x + w))
            for z in z_starts for y in rows for x in columns]


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


def start_of(configuration_manager: ConfigurationManager) -> Optional[str]:
    """The configuration whose trained fold this slab configuration starts from (None: from scratch); the
    key `start_from` is written by plans/slab.py's `chained_configuration`."""
    return (slab_marker(configuration_manager) or {}).get("start_from")


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
    """{'slices', 'neighbours', 'fusion'[, 'start_from']} for a slab configuration (None for 2D): the one
    recorded in the plans when the trainer has run, else the trainer's declaration resolved for the data. Neighbours as
    RGB need single-channel data that the input recipe maps by repetition (not three CT windows), and a
    slab trained from scratch (one started from the 2d model keeps the 2d model's encoder input)."""
    marker = slab_marker(configuration_manager)
    if marker is None:
        return None
    slices = int(configuration_manager.patch_size[0])
    start_from = start_of(configuration_manager)
    start = {"start_from": start_from} if start_from else {}
    if {"neighbours", "fusion"} <= set(marker):
        return {"slices": slices, "neighbours": marker["neighbours"], "fusion": marker["fusion"], **start}
    neighbours, fusion = trainer_cls.slab_neighbours, trainer_cls.slab_fusion
    if neighbours not in NEIGHBOUR_MODES or fusion not in FUSION_MODES:
        raise ValueError(f"{trainer_cls.__name__}: slab_neighbours must be one of {NEIGHBOUR_MODES} and slab_fusion "
                         f"one of {FUSION_MODES}, got {neighbours!r}, {fusion!r}")
    if neighbours == "rgb" and (num_input_channels != 1 or (input_recipe or {}).get("recipe") == "ct_windows"
                                or start):
        neighbours = "repeat"
    return {"slices": slices, "neighbours": neighbours, "fusion": fusion, **start}


def recorded_z_step(configuration_manager: ConfigurationManager) -> Optional[int]:
    """The step along z a slab model records for prediction (None: 2D, or a model that records none)."""
    step = configuration_manager.configuration.get(SLAB_Z_STEP_KEY)
    return None if step is None or slab_marker(configuration_manager) is None else int(step)


def describe_slab(record: dict) -> str:
    """One log line."""
    channels = ("slices s-1, s, s+1 as the encoder's three channels" if record["neighbours"] == "rgb"
                else "each slice's own channels")
    fusion = "residual cross-slice convolutions at the declared decoder stages" if record["fusion"] == "conv" else "no fusion"
    start = f"; starts from the trainer's trained {record['start_from']} fold" if record.get("start_from") else ""
    return f"slabs of {record['slices']} slices, encoded slice by slice; {channels}; {fusion}{start}"


def recorded_slicers(configuration_manager: ConfigurationManager, image_size: Sequence[int],
                     tile_step_size: float) -> Optional[List[tuple]]:
    """The slicers of a (Z, H, W) case for a slab model that records its z step (None: nnU-Net's own)."""
    z_step = recorded_z_step(configuration_manager)
    if z_step is None or len(image_size) != 3:
        return None
    return slab_slicers(image_size, configuration_manager.patch_size, tile_step_size, z_step)


@contextlib.contextmanager
def validation_at_slab_steps() -> Iterator[None]:
    """Within this block nnU-Net's predictors (the trainer's final validation builds one) tile a slab model
    at its recorded z step, as `nnunet-dino predict` does."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    original = nnUNetPredictor._internal_get_sliding_window_slicers

    def slicers(predictor, image_size):
        ours = recorded_slicers(predictor.configuration_manager, image_size, predictor.tile_step_size)
        return original(predictor, image_size) if ours is None else ours

    nnUNetPredictor._internal_get_sliding_window_slicers = slicers
    try:
        yield
    finally:
        nnUNetPredictor._internal_get_sliding_window_slicers = original
