"""`nnunet-dino bundle`: make a model folder's slim checkpoints self-contained, for sharing.

Training writes slim checkpoints (the frozen backbone is a record: name, weights source, sha256).
Bundling loads each one into its network -- which restores and verifies the backbone from
nnUNet_dino_weights -- and writes the full state dict back, so the folder predicts anywhere,
without the weights file. The rewrite is atomic (temporary file, then rename).
"""
from __future__ import annotations

import glob
import json
import os

import torch

from .networks.base import BACKBONE_RECORD_KEY


def network_for_model_folder(model_folder: str, checkpoint: dict):
    """The untrained network of a results folder, built as nnUNetv2_predict builds it (no weights)."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    plans = PlansManager(os.path.join(model_folder, "plans.json"))
    with open(os.path.join(model_folder, "dataset.json")) as f:
        dataset_json = json.load(f)
    config = plans.get_configuration(checkpoint["init_args"]["configuration"])
    trainer = recursive_find_trainer_class_by_name(checkpoint["trainer_name"])
    return trainer.build_network_architecture(plans, config, determine_num_input_channels(plans, config, dataset_json),
                                              plans.get_label_manager(dataset_json).num_segmentation_heads, False)


def bundle_model_folder(model_folder: str) -> list:
    """Rewrite every slim `fold_*/checkpoint_*.pth` of a results folder as self-contained. Returns
    the files rewritten (already self-contained ones are left alone)."""
    files = sorted(glob.glob(os.path.join(model_folder, "fold_*", "checkpoint_*.pth")))
    if not files:
        raise FileNotFoundError(f"no fold_*/checkpoint_*.pth in {model_folder}: give a trained model folder "
                                f"(<nnUNet_results>/<Dataset>/<Trainer>__<Plans>__<configuration>)")
    network, rewritten = None, []
    for path in files:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)  # nnU-Net's own format
        if BACKBONE_RECORD_KEY not in checkpoint["network_weights"]:
            continue
        network = network or network_for_model_folder(model_folder, checkpoint)
        network.load_state_dict(checkpoint["network_weights"])  # restores + verifies the backbone
        checkpoint["network_weights"] = network.state_dict()
        tmp = path + ".tmp"
        torch.save(checkpoint, tmp)
        os.replace(tmp, path)
        rewritten.append(path)
    return rewritten
