"""End to end through nnU-Net's own command line, each step its own process, in a fresh shell:
plan_and_preprocess -> nnUNetv2_train -> nnUNetv2_predict -> nnUNetv2_evaluate_folder (the two first
tests; the others score with the plugin's evaluator in-process, which gives nnU-Net's numbers)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from skimage.io import imread
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

from nnunet_dino.datasets.synthetic import make_synthetic_3d
from nnunet_dino.nnunet import evaluate, nnunet_environment, plan_and_preprocess, predict, train
from nnunet_helpers import clean_environment, evaluate_in_process, foreground_dice_baseline, results_folder

TRAINER = "nnUNetTrainerSegDINO_debug"  # default; U-DFA below


def _train_predict_evaluate(env, dataset_id, raw_folder, tmp_path, trainer=TRAINER, nnunet_evaluator=False):
    env = dict(env, nnUNet_dino_weights="random")
    train(dataset_id, trainer, env)
    return _predict_evaluate(env, dataset_id, raw_folder, tmp_path, trainer, nnunet_evaluator)


def _predict_evaluate(env, dataset_id, raw_folder, tmp_path, trainer=TRAINER, nnunet_evaluator=False):
    model = results_folder(env, os.path.basename(raw_folder), trainer)
    assert os.path.isfile(os.path.join(model, "fold_0", "checkpoint_final.pth"))
    assert os.path.isfile(os.path.join(model, "fold_0", "validation", "summary.json"))
    out = str(tmp_path / "predictions")
    predict(dataset_id, trainer, os.path.join(raw_folder, "imagesTs"), out, env)
    cases = sorted(f for f in os.listdir(os.path.join(raw_folder, "labelsTs")))
    assert sorted(f for f in os.listdir(out) if f.startswith("case_")) == cases
    if not nnunet_evaluator:
        return evaluate_in_process(os.path.join(raw_folder, "labelsTs"), out, os.path.join(model, "dataset.json"))
    return evaluate(os.path.join(raw_folder, "labelsTs"), out, os.path.join(model, "dataset.json"),
                    os.path.join(model, "plans.json"), env)


def test_2d_png_dataset_learns_the_easy_task(synthetic_2d, trained_segdino_2d, tmp_path):
    summary = _predict_evaluate(trained_segdino_2d["env"], 990, synthetic_2d["raw_folder"], tmp_path,
                                nnunet_evaluator=True)
    baseline = foreground_dice_baseline(summary)
    disk = summary["mean"]["1"]["Dice"]
    # 30 AdamW steps at the paper's lr on a RANDOM frozen backbone: the large bright disk is learned
    # well above the trivial "all disk" prediction (~0.3) even at the head's 1/16 resolution.
    assert disk > max(0.45, 1.4 * baseline["1"]), (summary["mean"], baseline)


def test_3d_two_channel_volumes_train_slice_wise_and_predict(tmp_path):
    env = nnunet_environment(str(tmp_path / "nnunet"), clean_environment())
    raw = make_synthetic_3d(env["nnUNet_raw"], 991, num_channels=2)
    plan_and_preprocess(991, env)
    summary = _train_predict_evaluate(env, 991, raw, tmp_path, nnunet_evaluator=True)
    assert summary["mean"]["1"]["Dice"] > foreground_dice_baseline(summary)["1"]


def test_udfa_rounds_the_patch_in_saved_plans_and_prediction_tiles_with_it(synthetic_2d, tmp_path):
    trainer = "nnUNetTrainerUDFA_S_debug"
    summary = _train_predict_evaluate(synthetic_2d["env"], 990, synthetic_2d["raw_folder"], tmp_path, trainer)
    assert summary["mean"]["1"]["Dice"] > foreground_dice_baseline(summary)["1"]
    model = results_folder(synthetic_2d["env"], synthetic_2d["dataset"], trainer)
    plans = json.load(open(os.path.join(model, "plans.json")))
    assert plans["configurations"]["2d"]["patch_size"] == [70, 84]  # 64x80 rounded to multiples of 14
    predictor = nnUNetPredictor(device=torch.device("cpu"), perform_everything_on_device=False)
    with pytest.warns(UserWarning, match="RANDOM FROZEN BACKBONE"):
        predictor.initialize_from_trained_model_folder(model, (0,), "checkpoint_final.pth")
    assert list(predictor.configuration_manager.patch_size) == [70, 84]


def test_dino_unet_with_its_planning_preset(synthetic_2d, tmp_path):
    """`nnunet-dino plan --preset dinounet512` (here at the data's own 64x80, so nnU-Net's data is
    reused), then train / predict with `-p` as the README says."""
    env = dict(synthetic_2d["env"], nnUNet_dino_weights="random")
    cli = os.path.join(os.path.dirname(sys.executable), "nnunet-dino")
    subprocess.run([cli, "plan", "-d", "990", "--target", "64", "80", "-np", "1"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    trainer, plans = "nnUNetTrainerDinoUNet_debug", "nnUNetPlansDinoUNet64x80"
    train(990, trainer, env, plans=plans)
    model = results_folder(env, synthetic_2d["dataset"], trainer, plans)
    saved = json.load(open(os.path.join(model, "plans.json")))
    assert saved["configurations"]["2d"]["patch_size"] == [64, 96]  # rounded to a multiple of 32
    out = str(tmp_path / "predictions")
    predict(990, trainer, os.path.join(synthetic_2d["raw_folder"], "imagesTs"), out, env, plans=plans)
    summary = evaluate_in_process(os.path.join(synthetic_2d["raw_folder"], "labelsTs"), out,
                                  os.path.join(model, "dataset.json"))
    # 30 SGD steps at the official lr 1e-3 barely move a fresh decoder: learning is asserted for the
    # AdamW trainers above; here every test case is predicted on its own grid with the dataset's labels.
    assert len(summary["metric_per_case"]) == len(os.listdir(os.path.join(synthetic_2d["raw_folder"], "labelsTs")))
    for case in summary["metric_per_case"]:
        reference, prediction = (imread(case[f]) for f in ("reference_file", "prediction_file"))
        assert prediction.shape == reference.shape and set(np.unique(prediction)) <= {0, 1, 2}
    assert len(summary["metric_per_case"]) == 2


def test_segdino_v2_with_the_authors_recipe_trains_and_predicts_without_mirroring(synthetic_2d, tmp_path):
    """SegDINO v2 under its `_paper` recipe: batch 4 in the saved plans, the official channel rule, RoPE
    rescaling in training, and a checkpoint that tells nnUNetv2_predict not to mirror."""
    trainer = "nnUNetTrainerSegDINOv2_paper_debug"
    summary = _train_predict_evaluate(synthetic_2d["env"], 990, synthetic_2d["raw_folder"], tmp_path, trainer)
    assert summary["mean"]["1"]["Dice"] > foreground_dice_baseline(summary)["1"]
    model = results_folder(synthetic_2d["env"], synthetic_2d["dataset"], trainer)
    plans = json.load(open(os.path.join(model, "plans.json")))["configurations"]["2d"]
    assert plans["batch_size"] == 4 and plans["nnunet_dino_input"]["recipe"] == "official"
    checkpoint = torch.load(os.path.join(model, "fold_0", "checkpoint_final.pth"), map_location="cpu",
                            weights_only=False)
    assert checkpoint["inference_allowed_mirroring_axes"] is None
    assert checkpoint["network_weights"]["nnunet_dino.backbone"]["train_augmentation"] == {"rope_rescale": 2.0}


def test_segdino_x4_head_trains_and_a_fresh_predictor_rebuilds_it(synthetic_2d, tmp_path):
    """The authors' current head (first level upsampled x4 by a transposed convolution) as a selectable
    head: nnUNetv2_predict in a new process, and a predictor built from the folder, rebuild it."""
    trainer = "nnUNetTrainerSegDINO_HeadX4_debug"
    summary = _train_predict_evaluate(synthetic_2d["env"], 990, synthetic_2d["raw_folder"], tmp_path, trainer)
    assert summary["mean"]["1"]["Dice"] > foreground_dice_baseline(summary)["1"]
    model = results_folder(synthetic_2d["env"], synthetic_2d["dataset"], trainer)
    predictor = nnUNetPredictor(device=torch.device("cpu"), perform_everything_on_device=False)
    with pytest.warns(UserWarning, match="RANDOM FROZEN BACKBONE"):
        predictor.initialize_from_trained_model_folder(model, (0,), "checkpoint_final.pth")
    upsamplers = [m for m in predictor.network.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(upsamplers) == 1 and upsamplers[0].stride == (4, 4)
