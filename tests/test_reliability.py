"""Reliability: crash-resume after SIGKILL (mid-epoch, mid-checkpoint-write), determinism, the out-of-memory message, random-backbone
models used for prediction, edited plans, and the data catalogue (RGB, 4 channels, ignore label,
regions) -- each through nnU-Net's own command line."""
import glob
import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from nnunetv2.utilities.dataset_name_id_conversion import convert_dataset_name_to_id
from skimage.io import imread, imsave

from nnunet_dino.datasets.synthetic import make_synthetic_2d, make_synthetic_3d
from nnunet_dino.nnunet import nnunet_command, nnunet_environment, plan_and_preprocess, predict, train
from nnunet_dino.training.base import NotEnoughMemoryError, RANDOM_BACKBONE_WARNING_FILE, TEST_PAUSE_ENV_VAR
from nnunet_dino.training.trainers import nnUNetTrainerSegDINO_debug
from nnunet_helpers import clean_environment, foreground_dice_baseline, make_trainer, results_folder

TRAINER = "nnUNetTrainerSegDINO_debug"


def _fresh(tmp_path, name="nnunet"):
    return nnunet_environment(str(tmp_path / name), clean_environment(nnUNet_dino_weights="random"))


def _train_until_paused(env, pause_at: str, marker: str) -> None:
    """nnUNetv2_train with the trainer's test-only pause hook; SIGKILL once it has paused at `pause_at`
    (it wrote `marker`): the kill lands at that exact point, whatever the machine's load."""
    output = marker + ".out"
    with open(output, "w") as out:
        proc = subprocess.Popen([nnunet_command("nnUNetv2_train"), "990", "2d", "0", "-tr", TRAINER, "-device", "cpu"],
                                env=dict(env, **{TEST_PAUSE_ENV_VAR: f"{pause_at}={marker}"}), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while not os.path.isfile(marker):  # the trainer says where it is: no timing involved
            assert proc.poll() is None, "training ended before it paused:\n" + open(output).read()[-3000:]
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _logs(fold):
    return [open(os.path.join(fold, f)).read() for f in sorted(os.listdir(fold)) if f.startswith("training_log")]


def _kill_env(synthetic_2d, tmp_path):
    env = dict(synthetic_2d["env"], nnUNet_results=str(tmp_path / "results"), nnUNet_dino_weights="random",
               nnUNet_n_proc_DA="0")
    return env, os.path.join(results_folder(env, synthetic_2d["dataset"], TRAINER), "fold_0")


def test_sigkill_mid_epoch_then_resume_with_c_past_a_corrupt_checkpoint(synthetic_2d, tmp_path):
    env, fold = _kill_env(synthetic_2d, tmp_path)
    _train_until_paused(env, "epoch 1", str(tmp_path / "paused"))  # epoch 0 saved, epoch 1 running
    latest = os.path.join(fold, "checkpoint_latest.pth")
    assert torch.load(latest, weights_only=False)["current_epoch"] == 1
    assert not os.path.isfile(os.path.join(fold, "checkpoint_final.pth"))
    with open(latest, "r+b") as f:  # what a non-atomic writer killed mid-write leaves behind
        f.truncate(os.path.getsize(latest) // 2)
    train(990, TRAINER, env, extra=["--c"])
    logs = _logs(fold)
    assert "cannot read checkpoint_latest.pth" in logs[-1] and "Resuming from checkpoint_best.pth (epoch 1)" in logs[-1]
    assert "Epoch 1" in logs[-1] and "Epoch 0" not in logs[-1], "the resumed run starts at epoch 1"
    out = str(tmp_path / "predictions")
    predict(990, TRAINER, os.path.join(synthetic_2d["raw_folder"], "imagesTs"), out, env)
    assert len([f for f in os.listdir(out) if f.endswith(".png")]) == 2


def test_sigkill_during_a_checkpoint_write_keeps_the_previous_checkpoints(synthetic_2d, tmp_path):
    env, fold = _kill_env(synthetic_2d, tmp_path)
    # paused after the temporary file is written, before it replaces checkpoint_final.pth
    _train_until_paused(env, "checkpoint_final.pth", str(tmp_path / "paused"))
    assert not os.path.isfile(os.path.join(fold, "checkpoint_final.pth"))  # --c would pick a partial one first
    assert torch.load(os.path.join(fold, "checkpoint_latest.pth"), weights_only=False)["current_epoch"] == 1
    train(990, TRAINER, env, extra=["--c"])
    logs = _logs(fold)
    assert "Epoch 1" in logs[-1] and "Epoch 0" not in logs[-1] and "cannot read" not in logs[-1]
    assert torch.load(os.path.join(fold, "checkpoint_final.pth"), weights_only=False)["current_epoch"] == 2
    assert not [f for f in os.listdir(fold) if f.endswith(".partial")]


def test_fixed_seed_gives_identical_first_losses_and_predictions(synthetic_2d, trained_segdino_2d, tmp_path):
    runs = []
    for run in ("a", "b"):  # a: the suite's shared model, trained the same way in another process
        env = dict(synthetic_2d["env"], nnUNet_results=str(tmp_path / run), nnUNet_dino_weights="random")
        if run == "a":
            shutil.copytree(trained_segdino_2d["env"]["nnUNet_results"], env["nnUNet_results"])
        else:
            train(990, TRAINER, env)  # debug twins seed 0; nnUNet_n_proc_DA=0 (runner.train)
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
    assert "RANDOM FROZEN BACKBONE: this model was trained on a random backbone" in proc.stdout
    assert "nnUNet_dino_weights=random" not in proc.stdout  # the variable is unset here: the checkpoint says so
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


def _initialised_trainer(env, folder, monkeypatch):
    """The debug trainer of the planned dataset, initialised in-process (network, loss, label manager)."""
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, env[var])
    monkeypatch.setenv("nnUNet_dino_weights", "random")
    trainer = make_trainer(nnUNetTrainerSegDINO_debug, env["nnUNet_preprocessed"], os.path.basename(folder), fold=1)
    trainer.initialize()
    return trainer


def _check_ignored_pixels_leave_the_loss(trainer, validation_folder):
    """Logits under the ignore label change nothing in the loss; anywhere else they do; and validation never
    predicts the ignore label."""
    assert trainer.label_manager.ignore_label == 3
    torch.manual_seed(0)
    logits = torch.randn(2, trainer.label_manager.num_segmentation_heads, 32, 40)
    target = torch.randint(0, 3, (2, 1, 32, 40)).float()
    target[..., :8] = 3
    base = trainer.loss(logits, target)
    changed = logits.clone()
    changed[..., :8] += 5 * torch.randn_like(changed[..., :8])  # every class's logit inside the ignored stripe
    assert torch.allclose(trainer.loss(changed, target), base)
    changed[:, 1, :, 20] += 5  # one class's logit outside the stripe (a shift of all classes cancels in softmax)
    assert not torch.allclose(trainer.loss(changed, target), base)
    for f in os.listdir(validation_folder):
        if f.endswith(".png"):
            assert 3 not in np.unique(imread(os.path.join(validation_folder, f))), f


def _check_regions_are_predicted_as_nested_masks(trainer, summary):
    """One sigmoid output per region (DC + BCE), scored per region; the outer region is learned."""
    from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss
    assert trainer.label_manager.has_regions and isinstance(trainer.loss, DC_and_BCE_loss)
    with torch.no_grad():
        assert trainer.network(torch.zeros(1, 1, 64, 80)).shape[1] == 2
    assert set(summary["mean"]) == {"(1, 2)", "2"}
    assert summary["mean"]["(1, 2)"]["Dice"] > foreground_dice_baseline(summary)["(1, 2)"]


@pytest.mark.parametrize("kind", ["rgb_png", "four_channel_3d", "ignore_label", "regions"])
def test_data_catalogue_trains_and_validates(tmp_path, kind, monkeypatch):
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
    assert len(summary["metric_per_case"]) >= 1
    if kind == "ignore_label":
        _check_ignored_pixels_leave_the_loss(_initialised_trainer(env, folder, monkeypatch), fold)
    if kind == "regions":
        _check_regions_are_predicted_as_nested_masks(_initialised_trainer(env, folder, monkeypatch), summary)
    if kind == "four_channel_3d":
        case = next(f for f in os.listdir(fold) if f.endswith(".nii.gz"))
        assert sitk.ReadImage(os.path.join(fold, case)).GetSize()[::-1] == (6, 48, 64)
        log = open(glob.glob(os.path.join(os.path.dirname(fold), "training_log_*.txt"))[0]).read()
        assert "input channels: 4 channels mapped to 3 by a fixed rule: out0 = 0.5*in0 + 0.5*in3" in log
