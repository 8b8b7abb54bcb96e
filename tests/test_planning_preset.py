"""`nnunet-dino plan --preset dinounet512`: Dino U-Net's planning recipe outside nnU-Net's -pl."""
import json
import os
import subprocess
import sys

from nnunet_dino.plans import rounded_patch_size


def _plan(env, *args):
    cli = os.path.join(os.path.dirname(sys.executable), "nnunet-dino")
    proc = subprocess.run([cli, "plan", "-d", "990", "-np", "1", *args], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return proc.stdout


def test_rounding_is_to_the_nearest_multiple_with_halves_up():
    assert rounded_patch_size((64, 80), 14) == (70, 84)
    assert rounded_patch_size((64, 80), 32) == (64, 96)
    assert rounded_patch_size((5, 512), 16) == (16, 512)


def test_same_spacing_reuses_nnunets_preprocessed_data(synthetic_2d):
    out = _plan(synthetic_2d["env"], "--target", "64", "80")
    assert "reusing preprocessed data" in out
    folder = os.path.join(synthetic_2d["env"]["nnUNet_preprocessed"], synthetic_2d["dataset"])
    plans = json.load(open(os.path.join(folder, "nnUNetPlansDinoUNet64x80.json")))
    cfg = plans["configurations"]["2d"]
    assert list(plans["configurations"]) == ["2d"] and plans["plans_name"] == "nnUNetPlansDinoUNet64x80"
    assert cfg["data_identifier"] == "nnUNetPlans_2d" and cfg["patch_size"] == [64, 80]
    assert cfg["architecture"]["arch_kwargs"]["n_stages"] == 4
    assert cfg["architecture"]["arch_kwargs"]["features_per_stage"] == [32, 64, 128, 256]


def test_new_spacing_gets_its_own_identifier_and_preprocessed_data(synthetic_2d):
    # nnUNet_n_proc_DA=0 (deterministic training) breaks nnU-Net's own planner; the plugin's command copes
    out = _plan(dict(synthetic_2d["env"], nnUNet_n_proc_DA="0"), "--target", "48", "48")
    folder = os.path.join(synthetic_2d["env"]["nnUNet_preprocessed"], synthetic_2d["dataset"])
    cfg = json.load(open(os.path.join(folder, "nnUNetPlansDinoUNet48x48.json")))["configurations"]["2d"]
    assert cfg["data_identifier"] == "nnUNetPlansDinoUNet48x48_2d" and cfg["patch_size"] == [48, 48]
    # the median 64x80 slice maps to 48x48: spacing grows by 64/48 and 80/48
    assert abs(cfg["spacing"][0] - 64 / 48) < 1e-6 and abs(cfg["spacing"][1] - 80 / 48) < 1e-6
    data = os.path.join(folder, "nnUNetPlansDinoUNet48x48_2d")
    assert len([f for f in os.listdir(data) if f.endswith(".b2nd") and not f.endswith("_seg.b2nd")]) == 10
    assert "-p nnUNetPlansDinoUNet48x48" in out
