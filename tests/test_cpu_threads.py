"""Torch's CPU threads are capped at the cores the process may run on (nnunet_dino/cpu_threads.py):
nnUNetv2_train / nnUNetv2_predict set `multiprocessing.cpu_count()` threads, which on a pinned core (taskset,
a cpuset) wait on each other at every parallel region."""
import os
import subprocess
import sys

import pytest
import torch

from nnunet_dino import cpu_threads
from nnunet_dino.training.trainers import nnUNetTrainer_debug, nnUNetTrainerSegDINO_debug
from nnunet_helpers import make_trainer

PINNED = """
import os, torch
from nnunet_dino.cpu_threads import cap_torch_threads, usable_cores
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
torch.set_num_threads(os.cpu_count())  # what nnUNetv2_train does on the CPU
cap_torch_threads()
print(usable_cores(), torch.get_num_threads())
"""


def test_a_process_pinned_to_one_core_gets_one_thread():
    done = subprocess.run([sys.executable, "-c", PINNED], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["1", "1"]


@pytest.fixture
def threads_restored():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_lower_count_stays(monkeypatch, threads_restored):
    monkeypatch.setattr(cpu_threads, "usable_cores", lambda: 4)
    torch.set_num_threads(2)
    cpu_threads.cap_torch_threads()
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("trainer_class", [nnUNetTrainerSegDINO_debug, nnUNetTrainer_debug])
def test_trainers_cap_what_nnunet_set(trainer_class, nnunet_paths, monkeypatch, threads_restored):
    monkeypatch.setenv("nnUNet_dino_weights", "random")
    monkeypatch.setattr(cpu_threads, "usable_cores", lambda: 1)
    torch.set_num_threads(2)
    trainer = make_trainer(trainer_class, nnunet_paths["env"]["nnUNet_preprocessed"], nnunet_paths["dataset"])
    assert torch.get_num_threads() == 1
    torch.set_num_threads(2)
    trainer.initialize()  # nnU-Net calls the network build by its parameters' names
    assert torch.get_num_threads() == 1


def test_the_predictors_network_build_caps_what_nnunet_set(nnunet_paths, monkeypatch, threads_restored):
    """nnUNetv2_predict builds the network through the trainer class, after setting cpu_count() threads."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    plans = PlansManager(os.path.join(nnunet_paths["env"]["nnUNet_preprocessed"], nnunet_paths["dataset"],
                                      "nnUNetPlans.json"))
    configuration = plans.get_configuration("2d")
    monkeypatch.setattr(cpu_threads, "usable_cores", lambda: 1)
    torch.set_num_threads(2)
    nnUNetTrainerSegDINO_debug.build_network_architecture(plans, configuration, 1, 3)
    assert torch.get_num_threads() == 1
    torch.set_num_threads(2)
    nnUNetTrainer_debug.build_network_architecture(plans, configuration, 1, 3)
    assert torch.get_num_threads() == 1
