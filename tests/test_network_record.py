"""The network's arguments are recorded in the plans: a changed class default (U-DFA's SPA) never
rebuilds an existing model with another network."""
import json
import os

import pytest
import torch

from nnunet_dino.plans import PLANS_RECORD_KEY
from nnunet_dino.training import trainers
from nnunet_dino.training.network_record import NETWORK_RECORD_KEY, network_kwargs_for, network_record
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from nnunet_helpers import make_trainer

FIVE_STAGES, THREE_SCALES = (1, 2, 4, 8, 16), (4, 8, 16)


def _plans(nnunet_paths, **configuration_entries) -> PlansManager:
    folder = os.path.join(nnunet_paths["env"]["nnUNet_preprocessed"], nnunet_paths["dataset"])
    plans = json.load(open(os.path.join(folder, "nnUNetPlans.json")))
    plans["configurations"]["2d"].update(configuration_entries)
    return PlansManager(plans)


def _spa_strides(trainer_cls, plans: PlansManager) -> tuple:
    return trainer_cls.build_network_architecture(plans, plans.get_configuration("2d"), 1, 3, False).spa_strides


def test_the_default_spa_is_three_scales_and_a_row_adds_to_its_parents_arguments():
    assert trainers.nnUNetTrainerUDFA.network_kwargs == {"spa": "paper"}
    assert trainers.nnUNetTrainerUDFA_L.network_kwargs == {"spa": "paper", "checkpoint_backbone": True}
    assert trainers.nnUNetTrainerUDFA_LGFA6.network_kwargs == {"spa": "paper", "num_fusion_modules": 6}
    assert trainers.nnUNetTrainerUDFA_S_SPA5.network_kwargs == {"spa": "nnunet"}
    assert trainers.nnUNetTrainerUDFA_S_LoRA.network_kwargs == {"spa": "paper"}


def test_plans_decide_the_network_fresh_recorded_and_trained_before_the_record(nnunet_paths):
    legacy = {PLANS_RECORD_KEY: {"backbone": "dinov2_vits14"}}  # a model folder from before the record
    assert _spa_strides(trainers.nnUNetTrainerUDFA_S, _plans(nnunet_paths)) == THREE_SCALES  # fresh plans
    assert _spa_strides(trainers.nnUNetTrainerUDFA_S, _plans(nnunet_paths, **legacy)) == FIVE_STAGES
    assert _spa_strides(trainers.nnUNetTrainerUDFA_S_SPA3, _plans(nnunet_paths, **legacy)) == THREE_SCALES
    assert _spa_strides(trainers.nnUNetTrainerUDFA_S_LoRA, _plans(nnunet_paths, **legacy)) == FIVE_STAGES
    # a record wins over the class, both ways
    recorded_five = _plans(nnunet_paths, **legacy, **{NETWORK_RECORD_KEY: {"spa": "nnunet"}})
    recorded_three = _plans(nnunet_paths, **{NETWORK_RECORD_KEY: {"spa": "paper"}})
    assert _spa_strides(trainers.nnUNetTrainerUDFA_S, recorded_five) == FIVE_STAGES
    assert _spa_strides(trainers.nnUNetTrainerUDFA_S_SPA5, recorded_three) == THREE_SCALES
    # other families have nothing unrecorded: legacy plans give their class's arguments
    assert network_kwargs_for(trainers.nnUNetTrainerSegDINO_HeadX4, legacy) == {"head": "x4"}


def test_network_kwargs_must_be_json_to_be_recorded(tmp_path):
    class Unrecordable(trainers.nnUNetTrainerUDFA_S):
        network_kwargs = {"spa": "paper", "norm": torch.nn.BatchNorm2d}

    with pytest.raises(TypeError, match="network_kwargs must be JSON values"):
        network_record(Unrecordable, str(tmp_path), "2d")


def test_a_fold_trained_beside_older_folds_keeps_their_network(nnunet_paths, monkeypatch):
    monkeypatch.setenv("nnUNet_dino_weights", "random")
    preprocessed, dataset = nnunet_paths["env"]["nnUNet_preprocessed"], nnunet_paths["dataset"]
    first = make_trainer(trainers.nnUNetTrainerUDFA_S_debug, preprocessed, dataset)
    assert first.configuration_manager.configuration[NETWORK_RECORD_KEY] == {"spa": "paper"}

    # the model folder holds folds trained before the record: its plans.json has the training record only
    saved = json.loads(json.dumps(first.plans_manager.plans))
    del saved["configurations"]["2d"][NETWORK_RECORD_KEY]
    saved["configurations"]["2d"][PLANS_RECORD_KEY] = {"backbone": "dinov2_vits14"}
    with open(os.path.join(first.output_folder_base, "plans.json"), "w") as f:
        json.dump(saved, f)
    second = make_trainer(trainers.nnUNetTrainerUDFA_S_debug, preprocessed, dataset, fold=1)
    assert second.configuration_manager.configuration[NETWORK_RECORD_KEY] == {"spa": "nnunet"}
    second.initialize()
    assert second.unwrapped_network.spa_strides == FIVE_STAGES
    log = open(second.log_file).read()
    assert "this model folder's plans.json builds the network with {'spa': 'nnunet'}" in log

    # a folder whose plans.json was written with the record: its arguments, whatever the class says now
    saved["configurations"]["2d"][NETWORK_RECORD_KEY] = {"spa": "paper"}
    with open(os.path.join(first.output_folder_base, "plans.json"), "w") as f:
        json.dump(saved, f)
    third = make_trainer(trainers.nnUNetTrainerUDFA_S_debug, preprocessed, dataset, fold=2)
    assert third.configuration_manager.configuration[NETWORK_RECORD_KEY] == {"spa": "paper"}
    assert "builds the network with" not in open(third.log_file).read()
