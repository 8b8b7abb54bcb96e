"""2.5D through the rest of nnU-Net, each step its own process: SegDINO and Dino U-Net train and predict
in `2.5d` (U-DFA: tests/test_slab_e2e.py); then, for one trainer in `2d` and `2.5d`, `--val --npz`,
`--c`, `nnUNetv2_find_best_configuration -c 2d 2.5d`, `nnUNetv2_ensemble` of the two, export to zip
and install into a fresh results folder, and `nnunet-dino crossval` / `report` over both."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_dino.datasets.slab_synthetic import make_synthetic_slabs
from nnunet_dino.nnunet import model_folder, nnunet_environment, plan_and_preprocess, predict, train
from nnunet_dino.nnunet.runner import run_step
from nnunet_helpers import clean_environment

DATASET = 993
TRAINER = "nnUNetTrainerSegDINO_debug"


def _cli(*args) -> list:
    return [os.path.join(os.path.dirname(sys.executable), "nnunet-dino"), *args]


def _geometry(path):
    image = sitk.ReadImage(path)
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def _labels(folder) -> dict:
    return {case: sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(folder, case)))
            for case in sorted(os.listdir(folder)) if case.endswith(".nii.gz")}


@pytest.fixture(scope="module")
def slabs(tmp_path_factory):
    """The columns-and-flakes volumes, planned in 2d and with the 2.5d preset."""
    work = tmp_path_factory.mktemp("slab_downstream")
    env = dict(nnunet_environment(str(work / "nnunet"), clean_environment()), nnUNet_dino_weights="random")
    raw = make_synthetic_slabs(env["nnUNet_raw"], DATASET, num_train=6, shape=(10, 32, 32))
    plan_and_preprocess(DATASET, env)
    subprocess.run(_cli("plan", "-d", str(DATASET), "--preset", "2.5d", "-np", "1"), env=env, check=True,
                   capture_output=True)
    return {"env": env, "raw": raw, "name": os.path.basename(raw), "work": work}


@pytest.mark.parametrize("trainer", ["nnUNetTrainerSegDINO_debug", "nnUNetTrainerDinoUNet_debug"])
def test_each_family_trains_and_predicts_in_2_5d(slabs, trainer, tmp_path):
    env = dict(slabs["env"], nnUNet_results=str(tmp_path / "results"))
    train(DATASET, trainer, env, configuration="2.5d")
    model = model_folder(slabs["name"], trainer, "nnUNetPlans", "2.5d", results=env["nnUNet_results"])
    saved = json.load(open(os.path.join(model, "plans.json")))["configurations"]["2.5d"]
    in_plane = {"nnUNetTrainerSegDINO_debug": 32, "nnUNetTrainerDinoUNet_debug": 64}[trainer]  # its smallest
    assert saved["nnunet_dino_slab"]["slices"] == 5 and saved["patch_size"] == [5, in_plane, in_plane]
    images = os.path.join(slabs["raw"], "imagesTs")
    predictions = str(tmp_path / "predictions")
    predict(DATASET, trainer, images, predictions, env, configuration="2.5d")
    labels = _labels(predictions)
    assert len(labels) == 2
    for case, label in labels.items():
        assert _geometry(os.path.join(predictions, case)) == _geometry(
            os.path.join(images, case.replace(".nii.gz", "_0000.nii.gz")))
        assert set(np.unique(label)) <= {0, 1, 2}


def test_2d_and_2_5d_models_validate_resume_select_ensemble_export_and_compare(slabs):
    env, name, work = slabs["env"], slabs["name"], slabs["work"]
    models = {c: model_folder(name, TRAINER, "nnUNetPlans", c, results=env["nnUNet_results"]) for c in ("2d", "2.5d")}
    for configuration in ("2d", "2.5d"):
        train(DATASET, TRAINER, env, configuration=configuration, extra=["--npz"])
    validation = os.path.join(models["2.5d"], "fold_0", "validation")
    os.remove(os.path.join(validation, "summary.json"))
    for npz in [f for f in os.listdir(validation) if f.endswith(".npz")]:
        os.remove(os.path.join(validation, npz))
    train(DATASET, TRAINER, env, configuration="2.5d", extra=["--val", "--npz"])  # from the slim checkpoint
    assert os.path.isfile(os.path.join(validation, "summary.json"))
    assert len([f for f in os.listdir(validation) if f.endswith(".npz")]) == 2  # fold 0 of the 6 training volumes: 2
    final = os.path.join(models["2.5d"], "fold_0", "checkpoint_final.pth")
    before = os.path.getmtime(final)
    train(DATASET, TRAINER, env, configuration="2.5d", extra=["--c"])  # a finished run resumes and ends again
    assert os.path.getmtime(final) >= before

    # nnU-Net's model selection over both configurations, their ensemble included
    run_step(["nnUNetv2_find_best_configuration", str(DATASET), "-c", "2d", "2.5d", "-tr", TRAINER, "-f", "0",
              "-np", "1"], env)
    chosen = json.load(open(os.path.join(env["nnUNet_results"], name, "inference_information.json")))
    assert {m["configuration"] for m in chosen["best_model_or_ensemble"]["selected_model_or_models"]} <= {"2d", "2.5d"}
    evaluated = json.dumps(chosen["all_results"])
    assert "2.5d" in evaluated and "ensemble" in evaluated.lower()

    # nnUNetv2_ensemble of a 2d and a 2.5d prediction of the same volumes
    images = os.path.join(slabs["raw"], "imagesTs")
    outputs = {c: str(work / f"predicted_{c}") for c in ("2d", "2.5d")}
    for configuration, out in outputs.items():
        predict(DATASET, TRAINER, images, out, env, configuration=configuration, extra=["--save_probabilities"])
    ensemble = str(work / "ensemble")
    run_step(["nnUNetv2_ensemble", "-i", outputs["2d"], outputs["2.5d"], "-o", ensemble, "-np", "1"], env)
    assert _labels(ensemble).keys() == _labels(outputs["2.5d"]).keys()
    for case in _labels(ensemble):
        assert _geometry(os.path.join(ensemble, case)) == _geometry(os.path.join(outputs["2.5d"], case))

    # export the 2.5d model, install it elsewhere: the same predictions from a fresh results folder
    archive = str(work / "slab_model.zip")
    run_step(["nnUNetv2_export_model_to_zip", "-d", str(DATASET), "-o", archive, "-c", "2.5d", "-tr", TRAINER,
              "-f", "0"], env)
    installed = dict(env, nnUNet_results=str(work / "installed_results"))
    os.makedirs(installed["nnUNet_results"])
    run_step(["nnUNetv2_install_pretrained_model_from_zip", archive], installed)
    again = str(work / "predicted_installed")
    predict(DATASET, TRAINER, images, again, installed, configuration="2.5d")
    first, second = _labels(outputs["2.5d"]), _labels(again)
    assert first.keys() == second.keys() and all(np.array_equal(first[c], second[c]) for c in first)

    # the comparison commands over both configurations: the folds are found done, nothing retrains
    specs = [f"{TRAINER}:2d", f"{TRAINER}:2.5d"]
    crossval = subprocess.run(_cli("crossval", "-d", str(DATASET), "-tr", *specs, "--folds", "0", "--device", "cpu"),
                              env=env, capture_output=True, text=True)
    assert crossval.returncode == 0, crossval.stdout + crossval.stderr
    assert "2 done, 0 to run" in crossval.stdout
    report_folder = str(work / "report")
    report = subprocess.run(_cli("report", "-d", str(DATASET), "-tr", *specs, "--folds", "0", "--resamples", "200",
                                 "-o", report_folder), env=env, capture_output=True, text=True)
    assert report.returncode == 0, report.stdout + report.stderr
    models = json.load(open(os.path.join(report_folder, "report.json")))["models"]  # 2d's spec omits ':2d'
    assert models[f"{TRAINER}:2.5d"]["patch_size"][0] == 5 and len(models[TRAINER]["patch_size"]) == 2
