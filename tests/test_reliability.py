"""Reliability: crash-resume after SIGKILL, determinism, the out-of-memory message, random-backbone
models used for prediction, edited plans, and the data catalogue (RGB, 4 channels, ignore label,
regions) -- each through nnU-Net's own command line."""
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2.utilities.dataset_name_id_conversion import convert_dataset_name_to_id
from skimage.io import imread, imsave

from nnunet_dino.datasets.synthetic import make_synthetic_2d, make_synthetic_3d
from nnunet_dino.nnunet import nnunet_command, nnunet_environment, plan_and_preprocess, predict, train
from nnunet_helpers import results_folder
from nnunet_dino.training.base import NotEnoughMemoryError, RANDOM_BACKBONE_WARNING_FILE
from nnunet_dino.training.trainers import nnUNetTrainerSegDINO_debug
from nnunet_helpers import clean_environment, make_trainer

TRAINER = "nnUNetTrainerSegDINO_debug"


def _fresh(tmp_path, name="nnunet"):
    return nnunet_environment(str(tmp_path / name), clean_environment(nnUNet_dino_weights="random"))


def test_sigkill_mid_epoch_then_resume_with_c(synthetic_2d, tmp_path):
    env = dict(synthetic_2d["env"], nnUNet_results=str(tmp_path / "results"), nnUNet_dino_weights="random",
               nnUNet_n_proc_DA="0")
    model = results_folder(env, synthetic_2d["dataset"], TRAINER)
    fold = os.path.join(model, "fold_0")
    proc = subprocess.Popen([nnunet_command("nnUNetv2_train"), "990", "2d", "0", "-tr", TRAINER, "-device", "cpu"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not os.path.isfile(os.path.join(fold, "checkpoint_latest.pth")):  # epoch 0 done, epoch 1 running
        assert proc.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not os.path.isfile(os.path.join(fold, "checkpoint_final.pth"))
    train(990, TRAINER, env, extra=["--c"])
    logs = [open(os.path.join(fold, f)).read() for f in sorted(os.listdir(fold)) if f.startswith("training_log")]
    assert any("Epoch 1" in log and "Epoch 0" not in log for log in logs[1:]), "the resumed run starts at epoch 1"
    out = str(tmp_path / "predictions")
    predict(990, TRAINER, os.path.join(synthetic_2d["raw_folder"], "imagesTs"), out, env)
    assert len([f for f in os.listdir(out) if f.endswith(".png")]) == 2


def test_fixed_seed_gives_identical_first_losses_and_predictions(synthetic_2d, tmp_path):
    runs = []
    for run in ("a", "b"):
        env = dict(synthetic_2d["env"], nnUNet_results=str(tmp_path / run), nnUNet_dino_weights="random")
        train(990, TRAINER, env)  # debug twins seed 0; nnUNet_n_proc_DA=0 (pipeline.train)
        fold = os.path.join(results_folder(env, synthetic_2d["dataset"], TRAINER), "fold_0")
        log = next(open(os.path.join(fold, f)).read() for f in os.listdir(fold) if f.startswith("training_log"))
        first = [line.split("first iteration loss")[1].strip() for line in log.splitlines() if "first iteration loss" in line]
        validation = os.path.join(fold, "validation")
        runs.append((first, {f: imread(os.path.join(validation, f)) for f in os.listdir(validation) if f.endswith(".png")}))
        assert os.path.isfile(os.path.join(fold, RANDOM_BACKBONE_WARNING_FILE))
    assert runs[0][0] == runs[1][0] and len(runs[0][0]) == 1
    assert runs[0][1].keys() == runs[1][1].keys() and runs[0][1]
    assert all(np.array_equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])

    # a random-backbone model predicts with a loud warning; plans edited to a patch that is not a
    # multiple of the ViT patch still predict (the network pads and crops)
    env = dict(synthetic_2d["env"], nnUNet_results=str(tmp_path / "a"))
    env.pop("nnUNet_dino_weights", None)
    model = results_folder(env, synthetic_2d["dataset"], TRAINER)
    plans = json.load(open(os.path.join(model, "plans.json")))
    plans["configurations"]["2d"]["patch_size"] = [60, 76]
    json.dump(plans, open(os.path.join(model, "plans.json"), "w"))
    out = str(tmp_path / "predictions")
    proc = subprocess.run([nnunet_command("nnUNetv2_predict"), "-i", os.path.join(synthetic_2d["raw_folder"], "imagesTs"),
                           "-o", out, "-d", "990", "-c", "2d", "-tr", TRAINER, "-f", "0", "-device", "cpu", "-npp", "1",
                           "-nps", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "RANDOM FROZEN BACKBONE" in proc.stdout
    assert all(imread(os.path.join(out, f)).shape == (64, 80) for f in os.listdir(out) if f.endswith(".png"))


def test_out_of_memory_gets_a_message_with_the_fix(nnunet_paths, monkeypatch):
    monkeypatch.setenv("nnUNet_dino_weights", "random")
    trainer = make_trainer(nnUNetTrainerSegDINO_debug, nnunet_paths["env"]["nnUNet_preprocessed"],
                           nnunet_paths["dataset"])
    trainer.on_train_start()

    def exhausted(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
    monkeypatch.setattr(trainer.network, "forward", exhausted)
    with pytest.raises(NotEnoughMemoryError, match="smaller backbone.*batch_size"):
        trainer.train_step(next(trainer.dataloader_train))


def _with_ignore_label(folder):
    meta = json.load(open(os.path.join(folder, "dataset.json")))
    meta["labels"]["ignore"] = 3
    json.dump(meta, open(os.path.join(folder, "dataset.json"), "w"))
    for f in os.listdir(os.path.join(folder, "labelsTr")):
        label = imread(os.path.join(folder, "labelsTr", f))
        label[:, :8] = 3  # an unannotated border stripe
        imsave(os.path.join(folder, "labelsTr", f), label, check_contrast=False)


def _as_regions(folder):
    meta = json.load(open(os.path.join(folder, "dataset.json")))
    meta["labels"] = {"background": 0, "any_shape": [1, 2], "square": 2}
    meta["regions_class_order"] = [1, 2]
    json.dump(meta, open(os.path.join(folder, "dataset.json"), "w"))


@pytest.mark.parametrize("kind", ["rgb_png", "four_channel_3d", "ignore_label", "regions"])
def test_data_catalogue_trains_and_validates(tmp_path, kind):
    env = _fresh(tmp_path)
    if kind == "four_channel_3d":
        folder = make_synthetic_3d(env["nnUNet_raw"], 991, num_train=5, num_channels=4)
    else:
        folder = make_synthetic_2d(env["nnUNet_raw"], 990, num_train=8, rgb=kind == "rgb_png")
        {"ignore_label": _with_ignore_label, "regions": _as_regions}.get(kind, lambda f: None)(folder)
    dataset_id = convert_dataset_name_to_id(os.path.basename(folder))
    plan_and_preprocess(dataset_id, env)
    train(dataset_id, TRAINER, env)  # ends with nnU-Net's own validation: prediction of held-out cases
    fold = os.path.join(results_folder(env, os.path.basename(folder), TRAINER), "fold_0", "validation")
    summary = json.load(open(os.path.join(fold, "summary.json")))
    assert summary["metric_per_case"] and 0 <= summary["foreground_mean"]["Dice"] <= 1
    if kind == "four_channel_3d":
        case = next(f for f in os.listdir(fold) if f.endswith(".nii.gz"))
        assert sitk.ReadImage(os.path.join(fold, case)).GetSize()[::-1] == (6, 48, 64)
