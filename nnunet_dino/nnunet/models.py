"""A trained nnU-Net model folder (<nnUNet_results>/<Dataset>/<Trainer>__<Plans>__<configuration>):
its network rebuilt as nnUNetv2_predict rebuilds it, its facts (epochs, parameters), and
`nnunet-dino bundle`, which makes its slim checkpoints self-contained for sharing.

Training writes slim checkpoints (the frozen backbone is a record: name, weights source, sha256).
Bundling loads each one into its network -- which restores and verifies the backbone from
nnUNet_dino_weights -- and writes the full state dict back, so the folder predicts anywhere,
without the weights file. The rewrite is atomic (temporary file, then rename).
"""
from __future__ import annotations

import glob
import json
import os

from ..errors import MissingInputError
from ..files import write_atomically


def _require_model_folder(model_folder: str) -> None:
    missing = [f for f in ("plans.json", "dataset.json") if not os.path.isfile(os.path.join(model_folder, f))]
    if missing or not glob.glob(os.path.join(model_folder, "fold_*")):
        raise MissingInputError(f"{model_folder} is not a trained nnU-Net model folder (no "
                                 f"{', '.join(missing) or 'fold_* folder'}): give "
                                 f"<nnUNet_results>/<Dataset>/<Trainer>__<Plans>__<configuration>")


def load_checkpoint(path: str) -> dict:
    import torch
    return torch.load(path, map_location="cpu", weights_only=False)  # nnU-Net's own checkpoint format


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


def model_facts(model_folder: str, fold: int = 0) -> dict:
    """Epochs trained, trainable/total parameters, patch size and adaptation mode of a trained model folder."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from ..networks.base import count_parameters
    checkpoint = load_checkpoint(os.path.join(model_folder, f"fold_{fold}", "checkpoint_final.pth"))
    network = network_for_model_folder(model_folder, checkpoint)
    plans = PlansManager(os.path.join(model_folder, "plans.json"))
    name = checkpoint["init_args"]["configuration"]
    config = plans.get_configuration(name)
    trainable, total = count_parameters(network)
    backbone = getattr(network, "backbone", None)
    return {"trainer": checkpoint["trainer_name"], "epochs": int(checkpoint["current_epoch"]),
            "trainable_params": trainable, "total_params": total, "patch_size": list(config.patch_size),
            "adaptation": backbone.adaptation.label if hasattr(backbone, "adaptation") else None}


def bundle_model_folder(model_folder: str) -> list:
    """Rewrite every slim `fold_*/checkpoint_*.pth` of a results folder as self-contained. Returns
    the files rewritten (already self-contained ones are left alone)."""
    import torch
    from ..networks.base import BACKBONE_RECORD_KEY
    _require_model_folder(model_folder)
    files = sorted(glob.glob(os.path.join(model_folder, "fold_*", "checkpoint_*.pth")))
    if not files:
        raise MissingInputError(f"no fold_*/checkpoint_*.pth in {model_folder}: train a fold first")
    network, rewritten = None, []
    for path in files:
        checkpoint = load_checkpoint(path)
        record = checkpoint["network_weights"].get(BACKBONE_RECORD_KEY)
        if record is None or record.get("weights_included"):
            continue  # not a plugin model, or self-contained already
        network = network or network_for_model_folder(model_folder, checkpoint)
        network.load_state_dict(checkpoint["network_weights"])  # restores + verifies the backbone
        checkpoint["network_weights"] = network.bundled_state_dict()
        write_atomically(path, lambda temporary: torch.save(checkpoint, temporary))
        rewritten.append(path)
    return rewritten
