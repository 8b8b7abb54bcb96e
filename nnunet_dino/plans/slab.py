"""The `2.5d` preset: a slab configuration beside nnU-Net's `2d` one (`nnunet-dino plan --preset 2.5d`).

A slab is K neighbouring slices, so the configuration is nnU-Net's `2d` configuration with a 3D
patch `[K, H, W]`: the same in-plane spacing, normalisation and preprocessed data (the slices as
acquired: nnU-Net keeps the original out-of-plane spacing of a configuration whose spacing has two
entries), the 2D in-plane patch (a DINO trainer rounds H and W to its ViT multiple when it starts,
in the plans it saves), and about as many slices per step as the 2D batch (batch = 2D batch / K, at
least 2). nnU-Net then runs it with its own 3D machinery: 3D loader, its anisotropic "dummy 2D"
augmentation (the patch is flat: max(H, W) > 3 K), 3D sliding window with Gaussian weighting and
mirroring. The architecture entry is a 3D PlainConvUNet with kernels and pooling of 1 along z (never
downsampled: deep-supervision targets keep K slices), so nnU-Net's own trainer runs it slice-wise.

`configurations.2.5d.nnunet_dino_slab = {"slices": K}` marks it; a DINO trainer adds its neighbour
mode and fusion there (training/slab.py), in the plans saved with the model.

Beside it the preset writes `2.5d+2d`: the same slab configuration, whose record adds
`"start_from": "2d"`. A trainer run in it starts from its own trained `2d` fold (training/slab_start.py),
so `nnUNetv2_train DATASET 2.5d+2d FOLD -tr TRAINER` is the second stage of a chain whose first is
`nnUNetv2_train DATASET 2d FOLD -tr TRAINER`; its model folder, `TRAINER__PLANS__2.5d+2d`, keeps it
apart from a `2.5d` model trained from scratch.
"""
from __future__ import annotations

import copy
import os
from typing import Optional, Tuple

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import load_json, save_json

from ..errors import MissingInputError, OptionError
from ..nnunet.folders import dataset_name, preprocessed_folder

SLAB_PRESET = "2.5d"
SLAB_CONFIGURATION = "2.5d"
SLAB_RECORD_KEY = "nnunet_dino_slab"
START_SEPARATOR = "+"  # '<configuration>+<start>': trained from the start configuration's fold
SLAB_FROM_2D_CONFIGURATION = SLAB_CONFIGURATION + START_SEPARATOR + "2d"
DEFAULT_SLICES = 5
ANISOTROPY = 3  # nnU-Net's ANISO_THRESHOLD: patches flatter than this get its 2D ("dummy 2D") augmentation


def _three_d(op: str) -> str:
    """'torch.nn.modules.conv.Conv2d' -> '...Conv3d' (convolution, norm and dropout classes)."""
    return op[:-2] + "3d" if isinstance(op, str) and op.endswith("2d") else op


def slab_architecture(architecture: dict) -> dict:
    """The 2D U-Net entry as a 3D one that never mixes or pools along z."""
    arch = copy.deepcopy(architecture)
    kwargs = arch["arch_kwargs"]
    for key in ("conv_op", "norm_op", "dropout_op"):
        kwargs[key] = _three_d(kwargs.get(key))
    kwargs["kernel_sizes"] = [[1, *k] for k in kwargs["kernel_sizes"]]
    kwargs["strides"] = [[1, *s] for s in kwargs["strides"]]
    return arch


def _preprocessed(folder: str, data_identifier: str) -> bool:
    path = os.path.join(folder, data_identifier)
    return os.path.isdir(path) and bool(os.listdir(path))


def _data_source(plans: dict, folder: str, fingerprint: dict) -> Tuple[str, list]:
    """(data identifier, spacing): the 2d data if it is there, else 3d_fullres data holding the same
    voxels (same in-plane spacing, and no case resampled along z), else the 2d identifier (to be made)."""
    two_d = plans["configurations"]["2d"]
    full = plans["configurations"].get("3d_fullres")
    if not _preprocessed(folder, two_d["data_identifier"]) and full and _preprocessed(folder, full["data_identifier"]):
        z_axis = plans["transpose_forward"][0]
        same_plane = np.allclose(full["spacing"][1:], two_d["spacing"])
        same_z = all(np.isclose(s[z_axis], full["spacing"][0]) for s in fingerprint["spacings"])
        if same_plane and same_z:
            return full["data_identifier"], list(full["spacing"])
    return two_d["data_identifier"], list(two_d["spacing"])


def slab_configuration(plans: dict, slices: int, folder: str, fingerprint: dict) -> dict:
    """The `2.5d` configuration for these plans; OptionError if a slab of `slices` does not fit them."""
    if "2d" not in plans["configurations"]:
        raise MissingInputError("the plans have no 2d configuration to build the 2.5d one from: run "
                                "`nnUNetv2_plan_and_preprocess -d ID -c 2d` (or nnUNetv2_plan_experiment) first")
    two_d = plans["configurations"]["2d"]
    z_axis = plans["transpose_forward"][0]
    if max(shape[z_axis] for shape in fingerprint["shapes_after_crop"]) < 2:
        raise OptionError("the 2.5d preset needs volumes, but every image of this dataset is a single slice: "
                          "use the 2d configuration")
    h, w = two_d["patch_size"]
    if slices < 2 or max(h, w) <= ANISOTROPY * slices:
        raise OptionError(f"--slices {slices} does not fit the 2D patch {h}x{w}: use 2 <= K < {max(h, w) / ANISOTROPY:g} "
                          f"(nnU-Net augments a [K, H, W] patch slice-wise only while max(H, W) > {ANISOTROPY} K)")
    config = copy.deepcopy(two_d)
    config["data_identifier"], config["spacing"] = _data_source(plans, folder, fingerprint)
    config.update(patch_size=[slices, h, w], batch_size=max(2, int(round(two_d["batch_size"] / slices))),
                  architecture=slab_architecture(two_d["architecture"]), **{SLAB_RECORD_KEY: {"slices": slices}})
    return config


def start_configuration(configuration: str) -> Optional[str]:
    """'2.5d+2d' -> '2d': the configuration whose trained fold a chained configuration starts from (None: a
    configuration trained from scratch)."""
    return configuration.partition(START_SEPARATOR)[2] or None


def chained_configuration(slab: dict, start: str = "2d") -> dict:
    """The slab configuration `slab`, trained from the `start` configuration's fold of the same trainer."""
    config = copy.deepcopy(slab)
    config[SLAB_RECORD_KEY] = {"slices": int(slab[SLAB_RECORD_KEY]["slices"]), "start_from": start}
    return config


def add_chained_configuration(plans_file: str) -> bool:
    """Add `2.5d+2d` to plans that have a `2.5d` configuration but not it yet (plans made before it existed);
    True if it was written. The data are the 2.5d configuration's: nothing is preprocessed."""
    plans = load_json(plans_file)
    configurations = plans["configurations"]
    if SLAB_FROM_2D_CONFIGURATION in configurations:
        return False
    if SLAB_CONFIGURATION not in configurations:
        raise MissingInputError(f"{plans_file} has no '{SLAB_CONFIGURATION}' configuration to start "
                                f"'{SLAB_FROM_2D_CONFIGURATION}' from: run `nnunet-dino plan -d DATASET --preset "
                                f"{SLAB_PRESET}` first")
    configurations[SLAB_FROM_2D_CONFIGURATION] = chained_configuration(configurations[SLAB_CONFIGURATION])
    save_json(plans, plans_file, sort_keys=False)
    return True


def add_slab_configuration(dataset_id: int, slices: int = DEFAULT_SLICES, plans_identifier: str = "nnUNetPlans",
                           num_processes: int = 2) -> dict:
    """Write the `2.5d` configuration into the dataset's plans (planning them with nnU-Net's default
    planner first if they do not exist) and preprocess its data unless it is there. Returns it."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprints, plan_experiments,
                                                                      preprocess_dataset)
    from .preprocess import usable_augmentation_workers
    name = dataset_name(dataset_id)
    folder = preprocessed_folder(name)
    plans_file = os.path.join(folder, plans_identifier + ".json")
    with usable_augmentation_workers():
        if not os.path.isfile(os.path.join(folder, "dataset_fingerprint.json")):
            extract_fingerprints([dataset_id], num_processes=num_processes, check_dataset_integrity=True)
        if not os.path.isfile(plans_file):
            if plans_identifier != "nnUNetPlans":
                raise MissingInputError(f"no plans {plans_file}: plan them first, or leave out -p for nnUNetPlans")
            plan_experiments([dataset_id])
        plans = load_json(plans_file)
        config = slab_configuration(plans, slices, folder, load_json(os.path.join(folder, "dataset_fingerprint.json")))
        plans["configurations"][SLAB_CONFIGURATION] = config
        plans["configurations"][SLAB_FROM_2D_CONFIGURATION] = chained_configuration(config)
        save_json(plans, plans_file, sort_keys=False)
        if _preprocessed(folder, config["data_identifier"]):
            print(f"reusing preprocessed data {os.path.join(folder, config['data_identifier'])} (the same voxels)")
        else:
            preprocess_dataset(dataset_id, plans_identifier, [SLAB_CONFIGURATION], [num_processes])
    flag = "" if plans_identifier == "nnUNetPlans" else f" -p {plans_identifier}"
    print(f"configuration '{SLAB_CONFIGURATION}' in {plans_file}: patch {config['patch_size']}, spacing "
          f"{config['spacing']}, batch {config['batch_size']}, data {config['data_identifier']}\n"
          f"next: nnUNetv2_train {dataset_id} {SLAB_CONFIGURATION} FOLD -tr nnUNetTrainerUDFA{flag}\n"
          f"or from the trainer's trained 2d fold: nnUNetv2_train {dataset_id} {SLAB_FROM_2D_CONFIGURATION} FOLD "
          f"-tr nnUNetTrainerUDFA{flag}")
    return config
