"""2.5D through the rest of nnU-Net, each step its own process: SegDINO and Dino U-Net train and predict
in `2.5d` (U-DFA: tests/test_slab_e2e.py); then, for one trainer in `2d` and `2.5d`, `--val --npz`,
`--c`, `nnUNetv2_find_best_configuration -c 2d 2.5d`, `nnUNetv2_ensemble` of the two, export to zip
and install into a fresh results folder, and `nnunet-dino crossval` / `report` over both; and
`nnunet-dino select` over both beside nnU-Net's own `3d_fullres` model; and the encoder adaptation modes
(LoRA, full fine-tuning) in `2.5d`."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_dino.backbones import FrozenDinoBackbone, get_backbone_spec, load_backbone_weights, locate_weights
from nnunet_dino.nnunet import model_folder, predict, train
from nnunet_dino.nnunet.runner import run_step
from nnunet_helpers import tiny_trainers

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
def slabs(synthetic_slabs, tmp_path_factory):
    """The suite's columns-and-flakes volumes (planned in 2d, 3d_fullres and with the 2.5d preset), with
    a results folder and a work folder of this module's own."""
    work = tmp_path_factory.mktemp("slab_downstream")
    env = dict(synthetic_slabs["env"], nnUNet_results=str(work / "results"))
    return {**synthetic_slabs, "env": env, "work": work}


@pytest.fixture(scope="module")
def trained(slabs):
    """Fold 0 of one trainer in 2d and 2.5d, with validation softmax (.npz)."""
    for configuration in ("2d", "2.5d"):
        train(DATASET, TRAINER, slabs["env"], configuration=configuration, extra=["--npz"])
    return {c: model_folder(slabs["name"], TRAINER, "nnUNetPlans", c, results=slabs["env"]["nnUNet_results"])
            for c in ("2d", "2.5d")}


@pytest.mark.parametrize("trainer", ["nnUNetTrainerSegDINO_debug", "nnUNetTrainerTinyDinoUNet_debug"])
def test_each_family_trains_and_predicts_in_2_5d(slabs, trainer, tmp_path, request):
    """Dino U-Net on a tiny DINOv3 (nnunet_helpers.TINY_TRAINERS): the family's 2.5d path, not the ViT's size."""
    if trainer == TRAINER:  # the module's shared model, trained by nnUNetv2_train in 2.5d
        env = slabs["env"]
        request.getfixturevalue("trained")
    else:
        env = dict(slabs["env"], nnUNet_results=str(tmp_path / "results"),
                   nnUNet_extTrainer=tiny_trainers(tmp_path)["nnUNet_extTrainer"])
        train(DATASET, trainer, env, configuration="2.5d")
    model = model_folder(slabs["name"], trainer, "nnUNetPlans", "2.5d", results=env["nnUNet_results"])
    saved = json.load(open(os.path.join(model, "plans.json")))["configurations"]["2.5d"]
    in_plane = {"nnUNetTrainerSegDINO_debug": 32, "nnUNetTrainerTinyDinoUNet_debug": 64}[trainer]  # its smallest
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


def test_2d_and_2_5d_models_validate_resume_select_ensemble_export_and_compare(slabs, trained):
    env, name, work, models = slabs["env"], slabs["name"], slabs["work"], trained
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


def test_select_weighs_nnunets_own_3d_fullres_against_the_2d_and_2_5d_models(slabs, trained):
    env, name = slabs["env"], slabs["name"]
    models = ["nnUNetTrainer_debug:3d_fullres", f"{TRAINER}:2d", f"{TRAINER}:2.5d"]
    select = _cli("select", "-d", str(DATASET), "-tr", *models, "--folds", "0")
    refused = subprocess.run(select, env=env, capture_output=True, text=True)  # nnU-Net's model is not trained
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "nnUNetTrainer_debug:3d_fullres fold 0: train from scratch" in refused.stderr
    labels = f"nnUNetTrainer_debug:3d_fullres {TRAINER} {TRAINER}:2.5d"  # a model's label omits the default 2d
    assert f"nnunet-dino crossval -d {name} -tr {labels} --folds 0 --npz" in refused.stderr

    train(DATASET, "nnUNetTrainer_debug", env, configuration="3d_fullres", extra=["--npz"])
    chosen = subprocess.run(select, env=env, capture_output=True, text=True)
    assert chosen.returncode == 0, chosen.stdout + chosen.stderr
    record = json.load(open(os.path.join(env["nnUNet_results"], name, "inference_information.json")))
    results = record["all_results"]
    singles = {k for k in results if not k.startswith("ensemble___")}
    assert singles == {"nnUNetTrainer_debug__nnUNetPlans__3d_fullres", f"{TRAINER}__nnUNetPlans__2d",
                       f"{TRAINER}__nnUNetPlans__2.5d"}
    assert len(results) == 6  # and the three pairwise ensembles, the 3D U-Net with each DINO model among them
    assert sum("3d_fullres" in k and "2.5d" in k for k in results if k.startswith("ensemble___")) == 1
    best = record["best_model_or_ensemble"]
    assert results[max(results, key=results.get)] == best["result_on_crossval_pre_pp"]
    picked = " + ".join(f"{m['trainer']}:{m['configuration']}:{m['plans_identifier']}"
                        for m in best["selected_model_or_models"])
    assert f"best: {picked} (cross-validation mean foreground Dice" in chosen.stdout


@pytest.mark.parametrize("trainer,mode", [("nnUNetTrainerTinySegDINO_LoRA_debug", "lora"),
                                          ("nnUNetTrainerTinySegDINO_FT_debug", "full")])
def test_adapted_encoders_train_on_slabs_and_predict_in_a_new_process(slabs, trainer, mode, tmp_path):
    """On a tiny DINOv3 (nnunet_helpers.TINY_TRAINERS): what is asserted is which tensors train and are kept."""
    tiny = tiny_trainers(tmp_path)
    env = dict(slabs["env"], nnUNet_results=str(tmp_path / "results"), nnUNet_extTrainer=tiny["nnUNet_extTrainer"])
    train(DATASET, trainer, env, configuration="2.5d")
    model = model_folder(slabs["name"], trainer, "nnUNetPlans", "2.5d", results=env["nnUNet_results"])
    saved = json.load(open(os.path.join(model, "plans.json")))["configurations"]["2.5d"]
    record = json.load(open(os.path.join(model, "fold_0", "backbone_weights.json")))
    assert saved["nnunet_dino_slab"]["slices"] == 5 and record["adaptation"]["mode"] == mode
    weights = torch.load(os.path.join(model, "fold_0", "checkpoint_final.pth"), map_location="cpu",
                         weights_only=False)["network_weights"]
    encoder = {k.split(".", 1)[1]: v for k, v in weights.items() if k.startswith("backbone.")}
    if mode == "lora":  # only the low-rank factors are stored, and they have left their zero start
        assert encoder and all(k.startswith("lora.") for k in encoder)
        assert any(float(v.abs().sum()) > 0 for k, v in encoder.items() if k.endswith("up"))
    else:  # the whole encoder is stored, and it moved away from the backbone it started from
        start = FrozenDinoBackbone(get_backbone_spec(tiny["backbone"]))
        load_backbone_weights(start, locate_weights(start.spec, "random"))
        initial = start.state_dict()
        assert initial.keys() <= set(encoder)
        assert not torch.equal(encoder["vit.blocks.3.attn.qkv.weight"], initial["vit.blocks.3.attn.qkv.weight"])
    predictions = str(tmp_path / "predictions")
    images = os.path.join(slabs["raw"], "imagesTs")
    predict(DATASET, trainer, images, predictions, env, configuration="2.5d")
    for case in _labels(predictions):
        assert _geometry(os.path.join(predictions, case)) == _geometry(
            os.path.join(images, case.replace(".nii.gz", "_0000.nii.gz")))
