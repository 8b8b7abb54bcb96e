"""Run a planning preset (`nnunet-dino plan`), then preprocess only if its data is not there yet."""
from __future__ import annotations

import contextlib
import os
from typing import Sequence

from ..nnunet.folders import dataset_name, preprocessed_folder
from .presets import plan_preset


@contextlib.contextmanager
def usable_augmentation_workers():
    """nnU-Net's planner calls torch.set_num_threads(nnUNet_n_proc_DA), which fails for 0 (the value users
    set for deterministic training); planning does not augment, so the variable is set aside meanwhile."""
    saved = os.environ.get("nnUNet_n_proc_DA")
    if saved is not None and saved.strip() in ("0", ""):
        del os.environ["nnUNet_n_proc_DA"]
    try:
        yield
    finally:
        if saved is not None:
            os.environ["nnUNet_n_proc_DA"] = saved


def plan_with_preset(dataset_id: int, preset: str, target_shape: Sequence[int] = (512, 512),
                     num_processes: int = 2) -> str:
    """Plan with `preset`; preprocess the 2d data unless an identical copy exists. Returns the plans
    identifier to pass as `-p` to nnUNetv2_train / nnUNetv2_predict."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, preprocess_dataset
    name = dataset_name(dataset_id)
    with usable_augmentation_workers():
        if not os.path.isfile(os.path.join(preprocessed_folder(name), "dataset_fingerprint.json")):
            extract_fingerprints([dataset_id], num_processes=num_processes, check_dataset_integrity=True)
        identifier, plans = plan_preset(dataset_id, preset, target_shape)
        data = plans["configurations"]["2d"]["data_identifier"]
        data_folder = os.path.join(preprocessed_folder(name), data)
        if os.path.isdir(data_folder) and os.listdir(data_folder):
            print(f"reusing preprocessed data {data_folder} (same spacing as nnU-Net's 2d plans)")
        else:
            preprocess_dataset(dataset_id, identifier, ["2d"], [num_processes])
    cfg = plans["configurations"]["2d"]
    print(f"plans '{identifier}': patch {cfg['patch_size']}, spacing {cfg['spacing']}, batch {cfg['batch_size']}, "
          f"data {data}\nnext: nnUNetv2_train {dataset_id} 2d FOLD -tr nnUNetTrainerDinoUNet -p {identifier}")
    return identifier
