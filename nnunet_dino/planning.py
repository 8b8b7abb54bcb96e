"""`nnunet-dino plan`: run a planning preset, then preprocess only if its data is not there yet."""
from __future__ import annotations

import os
from typing import Sequence

from .plans import plan_preset


def plan_with_preset(dataset_id: int, preset: str, target_shape: Sequence[int] = (512, 512),
                     num_processes: int = 2) -> str:
    """Plan with `preset`; preprocess the 2d data unless an identical copy exists. Returns the plans
    identifier to pass as `-p` to nnUNetv2_train / nnUNetv2_predict."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, preprocess_dataset
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    name = maybe_convert_to_dataset_name(dataset_id)
    if not os.path.isfile(os.path.join(nnUNet_preprocessed, name, "dataset_fingerprint.json")):
        extract_fingerprints([dataset_id], num_processes=num_processes, check_dataset_integrity=True)
    identifier, plans = plan_preset(dataset_id, preset, target_shape)
    data = plans["configurations"]["2d"]["data_identifier"]
    data_folder = os.path.join(nnUNet_preprocessed, name, data)
    if os.path.isdir(data_folder) and os.listdir(data_folder):
        print(f"reusing preprocessed data {data_folder} (same spacing as nnU-Net's 2d plans)")
    else:
        preprocess_dataset(dataset_id, identifier, ["2d"], [num_processes])
    cfg = plans["configurations"]["2d"]
    print(f"plans '{identifier}': patch {cfg['patch_size']}, spacing {cfg['spacing']}, batch {cfg['batch_size']}, "
          f"data {data}\nnext: nnUNetv2_train {dataset_id} 2d FOLD -tr nnUNetTrainerDinoUNet -p {identifier}")
    return identifier
