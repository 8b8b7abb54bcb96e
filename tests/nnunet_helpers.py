"""Shared helpers for tests that drive nnU-Net (kept out of conftest so tests import them)."""
from __future__ import annotations

import json
import os
import shutil
import socket
from typing import Dict

import torch

SEGDINO_DEBUG = "nnUNetTrainerSegDINO_debug"
PLUGIN_ENV_VARS = ("nnUNet_extTrainer", "nnUNet_dino_weights", "nnUNet_raw", "nnUNet_preprocessed",
                   "nnUNet_results", "nnUNet_n_proc_DA", "nnUNet_compile")


#: A user's own trainers (documentation/adaptation.md), found through nnUNet_extTrainer: `_debug` twins on a
#: tiny DINOv3 (64 wide, 4 blocks), so an nnU-Net run whose subject is not the ViT's size stays cheap.
TINY_TRAINERS = '''
from nnunet_dino.backbones.adaptation import Adaptation
from nnunet_dino.backbones.registry import get_backbone_spec, register_backbone
from nnunet_dino.training.trainers import (nnUNetTrainerDinoUNet_debug, nnUNetTrainerSegDINO_debug,
                                           nnUNetTrainerSegDINO_FT_debug, nnUNetTrainerSegDINO_LoRA_debug)

TINY = register_backbone(get_backbone_spec("dinov3_vits16").variant("tiny_e2e_dinov3", embed_dim=64, depth=4,
                                                                    num_heads=4)).name


class nnUNetTrainerTinySegDINO_LoRA_debug(nnUNetTrainerSegDINO_LoRA_debug):
    backbone = TINY


class nnUNetTrainerTinySegDINO_Last2_debug(nnUNetTrainerSegDINO_debug):
    backbone = TINY
    adaptation = Adaptation("last_k", last_k=2)


class nnUNetTrainerTinySegDINO_FT_debug(nnUNetTrainerSegDINO_FT_debug):
    backbone = TINY


class nnUNetTrainerTinyDinoUNet_debug(nnUNetTrainerDinoUNet_debug):
    backbone = TINY
    network_kwargs = {"decoder_channels": [8, 16, 32, 32], "fapm_rank": 16}
'''


def tiny_trainers(folder) -> Dict[str, str]:
    """TINY_TRAINERS written under `folder`, registered in this process too (its tiny backbone, to compare a
    model's weights with): {'nnUNet_extTrainer': the folder to give nnU-Net, 'backbone': the tiny backbone}."""
    folder = os.path.join(str(folder), "tiny_trainers")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "tiny_trainers.py"), "w") as f:
        f.write(TINY_TRAINERS)
    namespace: dict = {}
    exec(compile(TINY_TRAINERS, "tiny_trainers.py", "exec"), namespace)
    return {"nnUNet_extTrainer": folder, "backbone": namespace["TINY"]}


def free_port() -> int:
    """A TCP port nobody listens on now: DDP tests in parallel pytest workers must not share one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def clean_environment(**extra: str) -> Dict[str, str]:
    """os.environ without anything nnU-Net/nnunet-dino specific: a user's fresh shell."""
    env = {k: v for k, v in os.environ.items() if k not in PLUGIN_ENV_VARS}
    env.update(extra)
    return env


def write_nnunet_splits(preprocessed: str) -> None:
    """splits_final.json as nnUNetTrainer.do_split writes it when missing (5 folds, seed 12345)."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split
    cases = sorted(f[:-len(".pkl")] for f in os.listdir(os.path.join(preprocessed, "nnUNetPlans_2d"))
                   if f.endswith(".pkl"))
    with open(os.path.join(preprocessed, "splits_final.json"), "w") as f:
        json.dump(generate_crossval_split(cases, seed=12345, n_splits=5), f)


def evaluate_in_process(gt_dir: str, pred_dir: str, dataset_json: str) -> dict:
    """The plugin's evaluator in this process: nnU-Net's summary layout and values (tests/test_evaluation.py
    holds it equal to nnU-Net's); nnUNetv2_evaluate_folder itself runs in tests/test_e2e.py. It spares a
    test an nnU-Net process and the evaluator's spawned worker."""
    from nnunet_dino.evaluation import evaluate_folders
    return evaluate_folders(gt_dir, pred_dir, dataset_json)


def make_trainer(trainer_class, preprocessed_root: str, dataset_name: str, fold: int = 0,
                 configuration: str = "2d"):
    """Instantiate a trainer in-process the way nnUNetv2_train does (plans + dataset.json).
    nnU-Net's paths are read lazily from the environment: set them (monkeypatch) first."""
    folder = os.path.join(preprocessed_root, dataset_name)
    plans = json.load(open(os.path.join(folder, "nnUNetPlans.json")))
    plans["continue_training"] = False
    dataset_json = json.load(open(os.path.join(folder, "dataset.json")))
    return trainer_class(plans=plans, configuration=configuration, fold=fold, dataset_json=dataset_json,
                         device=torch.device("cpu"))


def foreground_dice_baseline(summary: dict) -> Dict[str, float]:
    """Dice of the trivial 'everything is class c' prediction, per class: 2 n_c / (n_c + N)."""
    out = {}
    for label, m in summary["mean"].items():
        total = m["TP"] + m["FN"] + m["FP"] + m["TN"]
        n_ref = m["n_ref"]
        out[label] = 2 * n_ref / (n_ref + total) if total else 0.0
    return out


def results_folder(env: Dict[str, str], dataset: str, trainer: str, plans: str = "nnUNetPlans") -> str:
    """A 2d model folder under the results folder of a subprocess environment."""
    from nnunet_dino.nnunet import model_folder
    return model_folder(dataset, trainer, plans, "2d", results=env["nnUNet_results"])


def copy_of(trained: dict, tmp_path) -> dict:
    """A shared trained model (conftest's trained_* fixtures) copied into `tmp_path`, for a test that
    changes it: {'env' (the copy's results folder set), 'model'}."""
    results = str(tmp_path / "results")
    shutil.copytree(trained["env"]["nnUNet_results"], results)
    relative = os.path.relpath(trained["model"], trained["env"]["nnUNet_results"])
    return {"env": dict(trained["env"], nnUNet_results=results), "model": os.path.join(results, relative)}
