"""The whole nnU-Net pipeline with plugin trainers, exactly as with nnU-Net's own: 5 folds with
--npz, find_best_configuration across two plugin trainers and nnUNetTrainer, ensembling,
post-processing, model export to zip and install into a fresh results folder, prediction from it."""
import os

import pytest

from nnunet_dino.datasets.synthetic import make_synthetic_2d
from nnunet_dino.pipeline import nnunet_environment, plan_and_preprocess, predict, run_step, train
from nnunet_helpers import clean_environment

TRAINERS = ("nnUNetTrainerSegDINO_debug", "nnUNetTrainerDinoUNet_debug", "nnUNetTrainer_debug")


@pytest.fixture(scope="module")
def cross_validated(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("pipeline"))
    env = nnunet_environment(work, clean_environment(nnUNet_dino_weights="random"))
    raw = make_synthetic_2d(env["nnUNet_raw"], 990)
    plan_and_preprocess(990, env)
    for trainer in TRAINERS:
        for fold in range(5):
            train(990, trainer, env, fold=fold, extra=["--npz"])
    return {"env": env, "raw": raw, "work": work}


def test_all_folds_validated_with_softmax_exports(cross_validated):
    results = os.path.join(cross_validated["env"]["nnUNet_results"], "Dataset990_Synth2D")
    for trainer in TRAINERS:
        for fold in range(5):
            validation = os.path.join(results, f"{trainer}__nnUNetPlans__2d", f"fold_{fold}", "validation")
            assert os.path.isfile(os.path.join(validation, "summary.json"))
            assert any(f.endswith(".npz") for f in os.listdir(validation)), (trainer, fold)


def test_best_configuration_ensemble_and_postprocessing(cross_validated, tmp_path):
    env = cross_validated["env"]
    run_step(["nnUNetv2_find_best_configuration", "990", "-c", "2d", "-tr", *TRAINERS, "-f", "0", "1", "2", "3", "4",
              "-np", "1"], env)
    results = os.path.join(env["nnUNet_results"], "Dataset990_Synth2D")
    assert os.path.isfile(os.path.join(results, "inference_information.json"))
    ensembles = [d for d in os.listdir(results) if d.startswith("ensemble_")]
    assert ensembles, "find_best_configuration evaluates the pairwise ensembles"
    members = []
    for trainer in TRAINERS[:2]:
        out = str(tmp_path / trainer)
        predict(990, trainer, os.path.join(cross_validated["raw"], "imagesTs"), out, env,
                folds=range(5), extra=["--save_probabilities"])
        members.append(out)
    ensemble = str(tmp_path / "ensemble")
    run_step(["nnUNetv2_ensemble", "-i", *members, "-o", ensemble, "-np", "1"], env)
    model = os.path.join(results, f"{TRAINERS[0]}__nnUNetPlans__2d")
    processed = str(tmp_path / "postprocessed")
    run_step(["nnUNetv2_apply_postprocessing", "-i", ensemble, "-o", processed, "-pp_pkl_file",
              os.path.join(model, "crossval_results_folds_0_1_2_3_4", "postprocessing.pkl"), "-np", "1",
              "-plans_json", os.path.join(model, "plans.json"), "-dataset_json", os.path.join(model, "dataset.json")], env)
    cases = sorted(os.listdir(os.path.join(cross_validated["raw"], "labelsTs")))
    for folder in (ensemble, processed):
        assert sorted(f for f in os.listdir(folder) if f.endswith(".png")) == cases


def test_export_install_and_predict_from_a_fresh_results_folder(cross_validated, tmp_path):
    env = cross_validated["env"]
    archive = str(tmp_path / "model.zip")
    run_step(["nnUNetv2_export_model_to_zip", "-d", "990", "-o", archive, "-c", "2d", "-tr", TRAINERS[0],
              "-f", "0", "1", "2", "3", "4"], env)
    fresh = dict(env, nnUNet_results=str(tmp_path / "fresh_results"))
    os.makedirs(fresh["nnUNet_results"])
    run_step(["nnUNetv2_install_pretrained_model_from_zip", archive], fresh)
    out = str(tmp_path / "predictions")
    predict(990, TRAINERS[0], os.path.join(cross_validated["raw"], "imagesTs"), out, fresh, folds=range(5))
    assert len([f for f in os.listdir(out) if f.endswith(".png")]) == 2
