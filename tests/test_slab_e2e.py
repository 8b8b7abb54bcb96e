"""2.5D end to end through nnU-Net's command line, each step its own process: nnUNetv2_plan_and_preprocess
-> `nnunet-dino plan --preset 2.5d` -> nnUNetv2_train 2d and 2.5d (--npz) -> nnUNetv2_predict -c 2.5d
-> nnUNetv2_evaluate_folder, nnUNetv2_find_best_configuration -c 2d 2.5d and nnUNetv2_ensemble.

The data (datasets/slab_synthetic.py) are columns and flakes: identical disks that only the slices
above and below tell apart, so no slice-wise model can exceed a mean foreground Dice of 0.5 (in
expectation); the same trainer at the same budget (iterations and slices per step) in 2.5d must."""
import json
import os
import subprocess
import sys

import numpy as np
import SimpleITK as sitk

from nnunet_dino.datasets.slab_synthetic import make_synthetic_slabs
from nnunet_dino.nnunet import evaluate, model_folder, nnunet_environment, plan_and_preprocess, predict, train
from nnunet_dino.nnunet.runner import run_step
from nnunet_helpers import clean_environment

TRAINER = "nnUNetTrainerUDFA_S_debug"
DATASET = 992
SLICES = 5
SLAB_BATCH = 2


def _geometry(path):
    image = sitk.ReadImage(path)
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def _mean_foreground_dice(summary):
    return float(np.mean([summary["mean"][c]["Dice"] for c in ("1", "2")]))


def test_2_5d_beats_2d_where_one_slice_cannot_tell(tmp_path):
    env = dict(nnunet_environment(str(tmp_path / "nnunet"), clean_environment()), nnUNet_dino_weights="random")
    raw = make_synthetic_slabs(env["nnUNet_raw"], DATASET)
    name = os.path.basename(raw)
    plan_and_preprocess(DATASET, env)
    plans_file = os.path.join(env["nnUNet_preprocessed"], name, "nnUNetPlans.json")
    plans = json.load(open(plans_file))
    plans["configurations"]["2d"]["batch_size"] = SLICES * SLAB_BATCH  # the same slices per step as the slabs
    json.dump(plans, open(plans_file, "w"), indent=2)
    cli = os.path.join(os.path.dirname(sys.executable), "nnunet-dino")
    out = subprocess.run([cli, "plan", "-d", str(DATASET), "--preset", "2.5d", "-np", "1"], env=env, check=True,
                         capture_output=True, text=True).stdout
    assert "reusing preprocessed data" in out  # the 2d data: same voxels
    slab = json.load(open(plans_file))["configurations"]["2.5d"]
    assert slab["patch_size"][0] == SLICES and slab["batch_size"] == SLAB_BATCH

    images, labels = os.path.join(raw, "imagesTs"), os.path.join(raw, "labelsTs")
    dice, predictions = {}, {}
    for configuration in ("2d", "2.5d"):
        train(DATASET, TRAINER, env, configuration=configuration, extra=["--npz"])
        model = model_folder(name, TRAINER, "nnUNetPlans", configuration, results=env["nnUNet_results"])
        predictions[configuration] = str(tmp_path / f"pred_{configuration}")
        predict(DATASET, TRAINER, images, predictions[configuration], env, configuration=configuration,
                extra=["--save_probabilities"])
        summary = evaluate(labels, predictions[configuration], os.path.join(model, "dataset.json"),
                           os.path.join(model, "plans.json"), env)
        dice[configuration] = _mean_foreground_dice(summary)
    saved = json.load(open(os.path.join(model, "plans.json")))["configurations"]["2.5d"]
    assert saved["nnunet_dino_slab"] == {"slices": SLICES, "neighbours": "rgb", "fusion": "conv"}

    for case in sorted(f for f in os.listdir(labels)):
        image = os.path.join(images, case.replace(".nii.gz", "_0000.nii.gz"))
        assert _geometry(os.path.join(predictions["2.5d"], case)) == _geometry(image)
    assert dice["2.5d"] > max(0.6, dice["2d"] + 0.15), dice

    run_step(["nnUNetv2_find_best_configuration", str(DATASET), "-c", "2d", "2.5d", "-tr", TRAINER, "-f", "0",
              "-np", "1"], env)
    ensemble = str(tmp_path / "ensemble")
    run_step(["nnUNetv2_ensemble", "-i", predictions["2d"], predictions["2.5d"], "-o", ensemble, "-np", "1"], env)
    assert sorted(f for f in os.listdir(ensemble) if f.endswith(".nii.gz")) == sorted(os.listdir(labels))
