"""`make demo` / `nnunet-dino demo`: the plugin's main job on real anatomy, offline, on a CPU.

1. Builds an nnU-Net raw dataset from Debian's mricron-data: the Colin27 T1 MRI with 13 structures
   grouped from the AAL atlas hand-traced on that brain, cut into axial slabs (2 mm voxels), some
   held out for testing. It is ONE subject: the demo shows the pipeline and fitting on real
   anatomy, not generalisation to new patients. Without mricron-data it says so and falls back to
   a synthetic dataset.
2. Runs nnU-Net's own commands: plan_and_preprocess, then trains one DINO trainer and nnU-Net's
   own `nnUNetTrainer` for the same wall-clock budget, predicts the held-out cases with both.
3. Evaluates (Dice, HD95, ASD in mm) and writes `report.md` with a per-structure table and PNG
   figures into the output folder.
"""
from __future__ import annotations

import json
import os
import shutil
import time

from nnunetv2.utilities.dataset_name_id_conversion import convert_dataset_name_to_id

from ..backbones import WEIGHTS_ENV_VAR, is_random_setting
from ..backbones.weights import RANDOM_SETTING
from ..nnunet import model_folder, nnunet_environment, plan_and_preprocess, predict, train
from ..nnunet.models import model_facts
from ..training.base import RANDOM_BACKBONE_BANNER

COLIN27_DEMO_ID, SYNTHETIC_DEMO_ID = 902, 990
DEFAULT_DINO_TRAINER, DEFAULT_BASELINE = "nnUNetTrainerUDFA_S_demo", "nnUNetTrainer_demo"


def build_demo_dataset(raw_root: str, dataset: str = "auto") -> tuple:
    """(dataset folder, description lines). `dataset`: 'auto' (real data if available), 'colin27', 'synthetic'."""
    from ..datasets.colin27 import find_mricron_templates, make_colin27_dataset
    from ..datasets.synthetic import make_synthetic_2d
    if dataset in ("auto", "colin27") and find_mricron_templates():
        built = make_colin27_dataset(raw_root, COLIN27_DEMO_ID, downsample=2, overwrite=True)
        return built.folder, [
            "**Data:** the Colin27 T1 MRI (Holmes et al. 1998) with 13 structures (lobes per hemisphere, "
            "limbic/insula, deep grey matter, cerebellum) grouped from the AAL atlas (Tzourio-Mazoyer et al. "
            "2002), which was hand-traced on this very brain. The brain is cut into axial slabs of 2 mm voxels; "
            f"{len(os.listdir(os.path.join(built.folder, 'labelsTs')))} slabs are held out for testing.",
            "**This is one subject.** The table shows that the pipeline runs and fits real anatomy; it says "
            "nothing about generalisation to new patients or scanners."]
    if dataset == "colin27":
        raise FileNotFoundError("mricron-data is not installed: `sudo apt-get install mricron-data`")
    print("!! mricron-data is not installed (Debian: `sudo apt-get install mricron-data`): "
          "the demo falls back to a SYNTHETIC dataset of disks and squares.", flush=True)
    folder = make_synthetic_2d(raw_root, SYNTHETIC_DEMO_ID)
    return folder, ["**Data:** a synthetic dataset (disks and squares, 10 training + 2 test images), "
                    "because Debian's mricron-data was not available. It shows the pipeline only."]


def run_demo(output: str, trainer: str = DEFAULT_DINO_TRAINER, baseline: str = DEFAULT_BASELINE,
             dataset: str = "auto", keep: bool = False) -> dict:
    from ..evaluation import evaluate_folders
    from .report import render_figures, write_report
    output = os.path.abspath(output)
    work = os.path.join(output, "nnunet")
    if os.path.isdir(work) and not keep:
        shutil.rmtree(work)
    os.makedirs(output, exist_ok=True)
    env = nnunet_environment(work)
    env.setdefault(WEIGHTS_ENV_VAR, RANDOM_SETTING)
    random_backbone = is_random_setting(env[WEIGHTS_ENV_VAR])
    if random_backbone:
        print(RANDOM_BACKBONE_BANNER, flush=True)
    log, timings, start = os.path.join(output, "demo_log.txt"), {}, time.time()

    folder, intro = build_demo_dataset(env["nnUNet_raw"], dataset)
    dataset_id = convert_dataset_name_to_id(os.path.basename(folder))
    print(f"demo dataset: {folder}", flush=True)
    timings["plan_and_preprocess"] = plan_and_preprocess(dataset_id, env, log)
    summaries, facts, predictions = {}, {}, {}
    dataset_json = os.path.join(folder, "dataset.json")
    for name in (trainer, baseline):
        timings[f"train {name}"] = train(dataset_id, name, env, log_path=log)
        predictions[name] = os.path.join(output, "predictions", name)
        timings[f"predict {name}"] = predict(dataset_id, name, os.path.join(folder, "imagesTs"), predictions[name],
                                             env, log_path=log)
        summaries[name] = evaluate_folders(os.path.join(folder, "labelsTs"), predictions[name], dataset_json)
        facts[name] = model_facts(model_folder(os.path.basename(folder), name, results=env["nnUNet_results"]))
    labels = json.load(open(dataset_json))["labels"]
    label_names = {str(v): k for k, v in labels.items() if k != "background"}
    figures = render_figures(os.path.join(folder, "imagesTs"), os.path.join(folder, "labelsTs"), predictions,
                             output, json.load(open(dataset_json))["file_ending"], len(labels))
    timings["total"] = time.time() - start
    weights = ("**Backbone weights: RANDOM** (`nnUNet_dino_weights=random`). The frozen DINO encoder is "
               "random, so the DINO model's numbers show the pipeline working and what its trainable "
               "adapter/decoder learn on their own, NOT what the method achieves with pretrained DINO "
               "features. Set `nnUNet_dino_weights` to real weights for a meaningful comparison."
               if random_backbone else f"**Backbone weights:** `{env[WEIGHTS_ENV_VAR]}`.")
    budget = (f"Both models trained for the same wall-clock budget on this machine's CPU "
              f"({os.cpu_count()} cores); `nnUNetTrainer_demo` is nnU-Net's own trainer and recipe with that budget.")
    report = os.path.join(output, "report.md")
    write_report(report, "nnunet-dino demo", intro + [weights, budget], summaries, label_names, facts, figures,
                 timings)
    means = {name: s["foreground_mean"]["Dice"] for name, s in summaries.items()}
    print("\n" + open(report).read().split("## Models")[0].split("## Results on the held-out test cases")[1].strip())
    print("\nmean foreground Dice: " + ", ".join(f"{k} {v:.3f}" for k, v in means.items()))
    print(f"total {timings['total'] / 60:.1f} min\nreport: {report}")
    result = {"dataset": folder, "weights": env[WEIGHTS_ENV_VAR], "mean_dice": means, "timings": timings,
              "report": report, "figures": figures}
    with open(os.path.join(output, "demo_result.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result
