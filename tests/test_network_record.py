"""The network's arguments are recorded in the plans: a changed class attribute never rebuilds an
existing model with another network."""
import json
import os

import pytest
import torch

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


def test_a_rows_network_arguments_add_to_its_parents():
    assert trainers.nnUNetTrainerUDFA.network_kwargs == {"spa": "nnunet"}
    assert trainers.nnUNetTrainerUDFA_L.network_kwargs == {"spa": "nnunet", "checkpoint_backbone": True}
    assert trainers.nnUNetTrainerUDFA_LGFA6.network_kwargs == {"spa": "nnunet", "num_fusion_modules": 6}
    assert trainers.nnUNetTrainerUDFA_S_SPA3.network_kwargs == {"spa": "paper"}
    assert trainers.nnUNetTrainerDinoUNet_7B_paper.network_kwargs == {"gradient_checkpointing": True}


def test_the_recorded_arguments_build_the_network_whatever_the_class_says(nnunet_paths):
    assert _spa_strides(trainers.nnUNetTrainerUDFA_S, _plans(nnunet_paths)) == FIVE_STAGES  # fresh plans: the class
    assert _spa_strides(trainers.nnUNetTrainerUDFA_S_SPA3, _plans(nnunet_paths)) == THREE_SCALES
    recorded_three = _plans(nnunet_paths, **{NETWORK_RECORD_KEY: {"spa": "paper"}})
    recorded_five = _plans(nnunet_paths, **{NETWORK_RECORD_KEY: {"spa": "nnunet"}})
    assert _spa_strides(trainers.nnUNetTrainerUDFA_S, recorded_three) == THREE_SCALES
    assert _spa_strides(trainers.nnUNetTrainerUDFA_S_SPA3, recorded_five) == FIVE_STAGES
    assert network_kwargs_for(trainers.nnUNetTrainerSegDINO_HeadX4, {}) == {"head": "x4"}


def test_network_kwargs_must_be_json_to_be_recorded(tmp_path):
    class Unrecordable(trainers.nnUNetTrainerUDFA_S):
        network_kwargs = {"spa": "paper", "norm": torch.nn.BatchNorm2d}

    with pytest.raises(TypeError, match="network_kwargs must be JSON values"):
        network_record(Unrecordable, str(tmp_path), "2d")


def test_a_fold_trained_beside_existing_folds_keeps_their_network(nnunet_paths, monkeypatch):
    monkeypatch.setenv("nnUNet_dino_weights", "random")
    preprocessed, dataset = nnunet_paths["env"]["nnUNet_preprocessed"], nnunet_paths["dataset"]
    first = make_trainer(trainers.nnUNetTrainerUDFA_S_debug, preprocessed, dataset)
    assert first.configuration_manager.configuration[NETWORK_RECORD_KEY] == {"spa": "nnunet"}
    saved = json.loads(json.dumps(first.plans_manager.plans))
    model_plans = os.path.join(first.output_folder_base, "plans.json")

    # the folder's folds were trained when the class built the three-scale SPA (a changed default)
    saved["configurations"]["2d"][NETWORK_RECORD_KEY] = {"spa": "paper"}
    with open(model_plans, "w") as f:
        json.dump(saved, f)
    second = make_trainer(trainers.nnUNetTrainerUDFA_S_debug, preprocessed, dataset, fold=1)
    assert second.configuration_manager.configuration[NETWORK_RECORD_KEY] == {"spa": "paper"}
    second.initialize()
    assert second.unwrapped_network.spa_strides == THREE_SCALES
    assert "this model folder's plans.json builds the network with {'spa': 'paper'}" in open(second.log_file).read()

    # a folder trained before the record existed: the class's arguments, as then
    del saved["configurations"]["2d"][NETWORK_RECORD_KEY]
    with open(model_plans, "w") as f:
        json.dump(saved, f)
    third = make_trainer(trainers.nnUNetTrainerUDFA_S_debug, preprocessed, dataset, fold=2)
    assert third.configuration_manager.configuration[NETWORK_RECORD_KEY] == {"spa": "nnunet"}
    assert "builds the network with" not in open(third.log_file).read()
