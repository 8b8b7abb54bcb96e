"""A user mistake in any command prints one clear line (no traceback) and exits with code 2."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from nnunet_dino.cli import main
from nnunet_dino.networks.base import BACKBONE_RECORD_KEY

CLI = os.path.join(os.path.dirname(sys.executable), "nnunet-dino")


@pytest.fixture
def empty_nnunet(tmp_path, monkeypatch):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.makedirs(tmp_path / var)
        monkeypatch.setenv(var, str(tmp_path / var))
    return tmp_path


def _one_line_error(capsys, argv, *expected):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith(f"nnunet-dino {argv[0]}: error: ") and "Traceback" not in err
    for text in expected:
        assert text in err, err
    return err


def test_missing_dataset(empty_nnunet, capsys):
    _one_line_error(capsys, ["crossval", "-d", "123", "-tr", "nnUNetTrainer"], "123")
    _one_line_error(capsys, ["report", "-d", "Dataset123_Nothing", "-tr", "nnUNetTrainer"], "Dataset123_Nothing")
    _one_line_error(capsys, ["select", "-d", "123", "-tr", "nnUNetTrainer:3d_fullres", "nnUNetTrainerSegDINO"], "123")


def test_select_needs_two_models_and_numbered_folds(empty_nnunet, capsys):
    _one_line_error(capsys, ["select", "-d", "123", "-tr", "nnUNetTrainerSegDINO"], "at least two models")
    _one_line_error(capsys, ["select", "-d", "123", "-tr", "nnUNetTrainer", "nnUNetTrainerSegDINO", "--folds", "all"],
                    "--folds all", "numbered folds")


def test_unset_nnunet_folders(monkeypatch, capsys):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(var, raising=False)
    _one_line_error(capsys, ["crossval", "-d", "1", "-tr", "nnUNetTrainer"], "nnUNet_preprocessed is not set")


def test_bad_onboarding_folder(empty_nnunet, capsys):
    missing = str(empty_nnunet / "no_such_folder")
    _one_line_error(capsys, ["onboard", missing, "-d", "5", "-n", "Mine", "--mask-pattern", "{case}_seg",
                             "--no-progress"], missing)
    assert not [d for d in os.listdir(empty_nnunet / "nnUNet_raw") if "005" in d]


def test_bundle_of_a_folder_that_is_not_a_model(empty_nnunet, capsys):
    _one_line_error(capsys, ["bundle", str(empty_nnunet)], "not a trained nnU-Net model folder")


def test_bad_weights_when_a_slim_model_needs_its_backbone(synthetic_2d, tmp_path, monkeypatch, capsys):
    """A slim checkpoint trained with a weights file, bundled while nnUNet_dino_weights holds garbage."""
    model = tmp_path / "Dataset990_Synth2D" / "nnUNetTrainerSegDINO_debug__nnUNetPlans__2d"
    os.makedirs(model / "fold_0")
    preprocessed = os.path.join(synthetic_2d["env"]["nnUNet_preprocessed"], synthetic_2d["dataset"])
    shutil.copy(os.path.join(preprocessed, "nnUNetPlans.json"), model / "plans.json")
    shutil.copy(os.path.join(preprocessed, "dataset.json"), model / "dataset.json")
    record = {"backbone": "dinov3_vits16", "sha256": "0" * 64,
              "weights": {"format": "meta", "path": "/elsewhere/dinov3_vits16_pretrain_lvd1689m-08c60483.pth"}}
    torch.save({"trainer_name": "nnUNetTrainerSegDINO_debug", "init_args": {"configuration": "2d"},
                "network_weights": {BACKBONE_RECORD_KEY: record}}, model / "fold_0" / "checkpoint_final.pth")
    garbage = tmp_path / "weights.pth"
    garbage.write_bytes(os.urandom(1000))
    monkeypatch.setenv("nnUNet_dino_weights", str(garbage))
    _one_line_error(capsys, ["bundle", str(model)], str(garbage))
    assert torch.load(model / "fold_0" / "checkpoint_final.pth", weights_only=False)["network_weights"] == \
        {BACKBONE_RECORD_KEY: record}  # nothing rewritten


def test_console_script_exit_code_and_no_traceback(tmp_path):
    env = dict(os.environ, nnUNet_raw=str(tmp_path), nnUNet_preprocessed=str(tmp_path), nnUNet_results=str(tmp_path))
    run = subprocess.run([CLI, "bundle", str(tmp_path)], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_help_lists_every_command():
    from nnunet_dino.commands import COMMANDS
    run = subprocess.run([CLI, "--help"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0
    for name in COMMANDS:
        assert f"    {name.replace('_', '-')}" in run.stdout, name


def test_evaluate_takes_the_folder_holding_dataset_json(tmp_path, capsys):
    from nnunet_dino.commands.evaluate import dataset_json_file
    (tmp_path / "dataset.json").write_text("{}")
    assert dataset_json_file(str(tmp_path)) == str(tmp_path / "dataset.json")
    _one_line_error(capsys, ["evaluate", str(tmp_path), str(tmp_path), "-d", str(tmp_path / "nothing")],
                    "no dataset.json there")


def test_crossval_refuses_folds_the_dataset_cannot_have(empty_nnunet, capsys):
    """Fewer cases than nnU-Net's 5 folds: refused before anything runs, suggesting --folds all."""
    name = "Dataset077_Tiny"
    folder = empty_nnunet / "nnUNet_preprocessed" / name
    os.makedirs(folder)
    (folder / "dataset.json").write_text(json.dumps({"numTraining": 3, "labels": {"background": 0, "a": 1},
                                                     "file_ending": ".png", "channel_names": {"0": "x"}}))
    (folder / "nnUNetPlans.json").write_text(json.dumps({"configurations": {"2d": {}}}))
    os.makedirs(empty_nnunet / "nnUNet_raw" / name)
    err = _one_line_error(capsys, ["crossval", "-d", "77", "-tr", "nnUNetTrainer"], "3 training case(s)",
                          "--folds all")
    assert "[0, 1, 2, 3, 4]" in err
    assert not os.listdir(empty_nnunet / "nnUNet_results")  # nothing ran, no fold_0 left behind
    (folder / "splits_final.json").write_text(json.dumps([{"train": ["a"], "val": ["b"]}] * 2))
    _one_line_error(capsys, ["crossval", "-d", "77", "-tr", "nnUNetTrainer", "--folds", "0", "2"],
                    "defines 2 fold(s)", "[2]")
