"""End to end with a MedDINOv3-layout weights file and the `ct_windows` recipe on a small CT dataset:
nnU-Net's own commands, each in its own process; prediction in a fresh process rebuilds the recipe
from the saved plans and the backbone from the training checkpoint file."""
import json
import os
import subprocess
import sys

import torch

from dino_weights_helpers import randomize_
from nnunet_dino.datasets.synthetic import make_synthetic_3d
from nnunet_dino.nnunet import nnunet_environment, plan_and_preprocess, predict, train
from nnunet_helpers import clean_environment, evaluate_in_process, results_folder

TRAINER = "nnUNetTrainerSegDINO_TinyMedCT_debug"
#: a trainer module nnU-Net finds through nnUNet_extTrainer in every process (train, predict)
TRAINER_MODULE = '''
from nnunet_dino.backbones import get_backbone_spec, register_backbone
from nnunet_dino.training.trainers import nnUNetTrainerSegDINO

register_backbone(get_backbone_spec("meddinov3_vitb16").variant("tiny_meddinov3", embed_dim=64, depth=4, num_heads=4))


class nnUNetTrainerSegDINO_TinyMedCT_debug(nnUNetTrainerSegDINO):
    backbone = "tiny_meddinov3"
    input_recipe = "ct_windows"
    input_recipe_options = {"windows": [(600, 700), (300, 550), (300, 850)]}  # inside the CT clip range
    debug_run = True
'''
PROBE = '''
import sys, torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
p = nnUNetPredictor(device=torch.device("cpu"), perform_everything_on_device=False)
p.initialize_from_trained_model_folder(sys.argv[1], (0,), "checkpoint_final.pth")
a = p.network.input_adapter
print(type(a).__name__, a.low.flatten().tolist(), a.high.flatten().tolist())
'''


def _meddinov3_checkpoint(path):
    """A random tiny MedDINOv3-like backbone as MedDINOv3 publishes it: {'teacher': backbone.* + heads}."""
    from nnunet_dino.backbones import FrozenDinoBackbone, get_backbone_spec
    spec = get_backbone_spec("meddinov3_vitb16").variant("tiny_meddinov3", embed_dim=64, depth=4, num_heads=4)
    vit = randomize_(FrozenDinoBackbone(spec).vit, seed=11)
    meta = spec.family_ops.timm_to_meta(vit.state_dict(), vit)
    assert not any("qkv.bias" in k for k in meta)
    teacher = {f"backbone.{k}": v for k, v in meta.items()}
    teacher.update({"dino_head.mlp.0.weight": torch.randn(16, 64), "ibot_head.mlp.0.weight": torch.randn(16, 64)})
    torch.save({"teacher": teacher}, path)


def test_meddinov3_file_and_ct_windows_train_and_predict_in_fresh_processes(tmp_path):
    trainers = tmp_path / "trainers"
    trainers.mkdir()
    (trainers / "tiny_med_ct.py").write_text(TRAINER_MODULE)
    _meddinov3_checkpoint(tmp_path / "model.pth")
    env = nnunet_environment(str(tmp_path / "nnunet"), clean_environment(
        nnUNet_dino_weights=str(tmp_path / "model.pth"), nnUNet_extTrainer=str(trainers)))
    raw = make_synthetic_3d(env["nnUNet_raw"], 993, num_train=5, shape=(4, 48, 64))
    dataset_json = os.path.join(raw, "dataset.json")
    meta = json.load(open(dataset_json))
    json.dump(dict(meta, channel_names={"0": "CT"}), open(dataset_json, "w"))  # -> nnU-Net's CTNormalization
    plan_and_preprocess(993, env)
    train(993, TRAINER, env)
    model = results_folder(env, os.path.basename(raw), TRAINER)
    config = json.load(open(os.path.join(model, "plans.json")))["configurations"]["2d"]
    recipe, weights = config["nnunet_dino_input"], config["nnunet_dino"]["weights"]
    assert recipe["recipe"] == "ct_windows" and recipe["normalization"]["origin"] == "MedDINOv3 CT recipe"
    assert weights["variant"] == {"qkv_bias": False} and "dropped dino_head.*" in weights["notes"][0]
    log = open(next(os.path.join(model, "fold_0", f) for f in os.listdir(os.path.join(model, "fold_0"))
                    if f.startswith("training_log"))).read()
    assert "input recipe ct_windows" in log and "dropped dino_head.* (1 tensors), ibot_head.* (1 tensors)" in log
    out = str(tmp_path / "predictions")
    predict(993, TRAINER, os.path.join(raw, "imagesTs"), out, env)
    summary = evaluate_in_process(os.path.join(raw, "labelsTs"), out, os.path.join(model, "dataset.json"))
    assert len(summary["metric_per_case"]) == 2
    probe = subprocess.run([sys.executable, "-c", PROBE, model], env=env, capture_output=True, text=True, check=True)
    adapter = probe.stdout.strip().splitlines()[-1]  # nnU-Net prints its own lines before
    assert adapter == "CTWindowsInput [400.0, 400.0, 700.0] [1000.0, 700.0, 1000.0]"
