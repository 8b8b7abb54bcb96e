"""`make demo` / `nnunet-dino demo`: the plugin's main job on an embedded default dataset.

Builds a synthetic 2D dataset in nnU-Net raw format, then runs nnU-Net's own commands:
plan_and_preprocess -> train (a plugin trainer, CPU) -> predict the held-out cases -> evaluate,
and prints the Dice per class. Without real weights the frozen backbone is random, which is
said loudly: the numbers then show the pipeline works, not what the method can do.
"""
from __future__ import annotations

import json
import os
import shutil
import time

from .backbones import WEIGHTS_ENV_VAR
from .datasets.synthetic import make_synthetic_2d
from .pipeline import evaluate, nnunet_environment, plan_and_preprocess, predict, results_folder, train
from .training.base import RANDOM_BACKBONE_BANNER

DEMO_DATASET_ID = 990


def run_demo(output: str, trainer: str = "nnUNetTrainerSegDINO_debug", keep: bool = False) -> dict:
    output = os.path.abspath(output)
    work = os.path.join(output, "nnunet")
    if os.path.isdir(work) and not keep:
        shutil.rmtree(work)
    env = nnunet_environment(work)
    if not env.get(WEIGHTS_ENV_VAR):
        env[WEIGHTS_ENV_VAR] = "random"
    if env[WEIGHTS_ENV_VAR].strip().lower() == "random":
        print(RANDOM_BACKBONE_BANNER, flush=True)
    log = os.path.join(output, "demo_log.txt")
    timings = {}
    start = time.time()
    dataset = make_synthetic_2d(env["nnUNet_raw"], DEMO_DATASET_ID)
    print(f"demo dataset: {dataset} (synthetic disks and squares, 10 training + 2 test cases)", flush=True)
    timings["plan_and_preprocess_s"] = plan_and_preprocess(DEMO_DATASET_ID, env, log)
    timings["train_s"] = train(DEMO_DATASET_ID, trainer, env, log_path=log)
    predictions = os.path.join(output, "predictions", trainer)
    timings["predict_s"] = predict(DEMO_DATASET_ID, trainer, os.path.join(dataset, "imagesTs"), predictions, env, log_path=log)
    model = results_folder(env, os.path.basename(dataset), trainer)
    summary = evaluate(os.path.join(dataset, "labelsTs"), predictions, os.path.join(model, "dataset.json"),
                       os.path.join(model, "plans.json"), env, log)
    timings["total_s"] = time.time() - start
    labels = {str(v): k for k, v in json.load(open(os.path.join(dataset, "dataset.json")))["labels"].items()}
    print(f"\nDice on the {len(summary['metric_per_case'])} held-out cases ({trainer}, weights: {env[WEIGHTS_ENV_VAR]}):")
    for label, metrics in summary["mean"].items():
        print(f"  {labels.get(label, label):<10} {metrics['Dice']:.3f}")
    print(f"  {'mean':<10} {summary['foreground_mean']['Dice']:.3f}")
    print("timings: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    print(f"model: {model}\npredictions: {predictions}\nlog: {log}")
    result = {"trainer": trainer, "weights": env[WEIGHTS_ENV_VAR], "dice": summary["mean"],
              "foreground_mean_dice": summary["foreground_mean"]["Dice"], "timings": timings}
    with open(os.path.join(output, "demo_result.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result
