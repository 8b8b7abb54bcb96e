"""2.5D end to end through nnU-Net's command line, each step its own process: nnUNetv2_plan_and_preprocess
-> `nnunet-dino plan --preset 2.5d` -> nnUNetv2_train 2.5d -> nnUNetv2_predict -c 2.5d (a new process
rebuilds the slab network from the saved plans) -> nnUNetv2_evaluate_folder.

The data (datasets/slab_synthetic.py) are columns and flakes: identical disks that only the slices
above and below tell apart, so no slice-wise model can exceed a mean foreground Dice of 0.5 in
expectation (the in-process comparison with the 2D network is in tests/test_slab.py)."""
import json
import os

import numpy as np
import SimpleITK as sitk

from nnunet_dino.nnunet import evaluate, model_folder, predict, train

TRAINER = "nnUNetTrainerUDFA_S_debug"
DATASET = 993
SLICES = 5


def _geometry(path):
    image = sitk.ReadImage(path)
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def test_2_5d_trains_and_predicts_through_nnunet_and_keeps_the_geometry(synthetic_slabs, tmp_path):
    # planned by the shared fixture: nnUNetv2_plan_and_preprocess, then `nnunet-dino plan --preset 2.5d`
    env = dict(synthetic_slabs["env"], nnUNet_results=str(tmp_path / "results"))
    raw, name = synthetic_slabs["raw"], synthetic_slabs["name"]
    assert "reusing preprocessed data" in synthetic_slabs["plan_output"]  # the 2d data: the same voxels
    plans = json.load(open(os.path.join(env["nnUNet_preprocessed"], name, "nnUNetPlans.json")))
    assert plans["configurations"]["2.5d"]["patch_size"] == [SLICES, 32, 32]

    train(DATASET, TRAINER, env, configuration="2.5d")
    model = model_folder(name, TRAINER, "nnUNetPlans", "2.5d", results=env["nnUNet_results"])
    saved = json.load(open(os.path.join(model, "plans.json")))["configurations"]["2.5d"]
    assert saved["patch_size"] == [SLICES, 28, 28]  # in-plane rounded to the ViT patch (14)
    assert saved["nnunet_dino_slab"] == {"slices": SLICES, "neighbours": "rgb", "fusion": "conv"}
    assert os.path.isfile(os.path.join(model, "fold_0", "validation", "summary.json"))

    images, labels = os.path.join(raw, "imagesTs"), os.path.join(raw, "labelsTs")
    predictions = str(tmp_path / "predictions")
    predict(DATASET, TRAINER, images, predictions, env, configuration="2.5d")
    for case in sorted(os.listdir(labels)):
        image = os.path.join(images, case.replace(".nii.gz", "_0000.nii.gz"))
        assert _geometry(os.path.join(predictions, case)) == _geometry(image)
    summary = evaluate(labels, predictions, os.path.join(model, "dataset.json"), os.path.join(model, "plans.json"), env)
    dice = [summary["mean"][c]["Dice"] for c in ("1", "2")]
    assert float(np.mean(dice)) > 0.5, dice  # above what any slice-wise model reaches in expectation
