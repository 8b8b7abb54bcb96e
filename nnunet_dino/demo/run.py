"""`make demo` / `nnunet-dino demo`: the plugin's main job on real anatomy, offline, on a CPU.

1. Builds an nnU-Net raw dataset from Debian's mricron-data: the Colin27 T1 MRI with 2 structures
   grouped from the AAL atlas hand-traced on that brain, cut into axial slabs (2 mm voxels), some
   held out for testing. It is ONE subject: the demo shows the pipeline and fitting on real
   anatomy, not generalisation to new patients. Without mricron-data it says so and falls back to
   a synthetic dataset.
2. Runs nnU-Net's own commands: plan_and_preprocess, then trains one DINO trainer and nnU-Net's
   own `nnUNetTrainer` for the same budget (a number of training iterations, the trainers' class
   attributes; or `--budget-seconds` of wall clock each), predicts the held-out cases with both.
3. Evaluates (Dice, HD95, ASD in mm) and writes `report.md` with a per-structure table and PNG
   figures into the output folder.

The console shows the demo's own story: each step, the training progress and time left, the results.
nnU-Net's output goes to `demo_log.txt` in the output folder, shown (its end) only when a step fails.
"""
from __future__ import annotations

import json
import os
import shutil
import time

from nnunetv2.utilities.dataset_name_id_conversion import convert_dataset_name_to_id

from ..backbones import WEIGHTS_ENV_VAR, is_random_setting
from ..backbones.weights import RANDOM_BACKBONE_BANNER, RANDOM_SETTING
from ..errors import MissingInputError, OptionError
from ..nnunet import model_folder, nnunet_environment, plan_and_preprocess, predict, train
from ..nnunet.models import model_facts
from ..training.budget import BUDGET_SECONDS_ENV_VAR
from .console import DemoStepFailed, StepPrinter

__all__ = ["DemoStepFailed", "StepPrinter", "run_demo"]

COLIN27_DEMO_ID, SYNTHETIC_DEMO_ID = 902, 990
DEFAULT_DINO_TRAINER, DEFAULT_BASELINE = "nnUNetTrainerUDFA_S_demo", "nnUNetTrainer_demo"
LOG_NAME = "demo_log.txt"


def build_demo_dataset(raw_root: str, dataset: str = "auto", say=print) -> tuple:
    """(dataset folder, description lines). `dataset`: 'auto' (real data if available), 'colin27', 'synthetic'."""
    from ..datasets.colin27 import find_mricron_templates, make_colin27_dataset
    from ..datasets.synthetic import make_synthetic_2d
    if dataset in ("auto", "colin27") and find_mricron_templates():
        built = make_colin27_dataset(raw_root, COLIN27_DEMO_ID, downsample=2, overwrite=True, grouping="grey")
        return built.folder, [
            "**Data:** the Colin27 T1 MRI (Holmes et al. 1998) with 2 structures, the cerebral grey matter "
            "(cortex and deep nuclei, both sides) and the cerebellum, grouped from the AAL atlas (Tzourio-Mazoyer "
            "et al. 2002), which was hand-traced on this very brain. The brain is cut into axial slabs of 2 mm voxels; "
            f"{len(os.listdir(os.path.join(built.folder, 'labelsTs')))} slabs are held out for testing.",
            "**This is one subject.** The table shows that the pipeline runs and fits real anatomy; it says "
            "nothing about generalisation to new patients or scanners."]
    if dataset == "colin27":
        raise MissingInputError("mricron-data is not installed: `sudo apt-get install mricron-data`")
    if dataset == "auto":
        say("!! mricron-data is not installed (Debian: `sudo apt-get install mricron-data`): "
            "the demo falls back to a SYNTHETIC dataset of disks and squares.")
    folder = make_synthetic_2d(raw_root, SYNTHETIC_DEMO_ID)
    return folder, ["**Data:** a synthetic dataset (disks and squares, 10 training + 2 test images), "
                    "because Debian's mricron-data was not available. It shows the pipeline only."]


def train_and_predict(dataset_id: int, name: str, folder: str, output: str, env: dict, log: str,
                      steps: StepPrinter) -> dict:
    """Train `name`, then predict the held-out cases with it: the timings, the prediction folder and
    the training budget the trainer reported (its last progress line, read before prediction starts)."""
    steps.step(f"training {name}")
    timings = {f"train {name}": train(dataset_id, name, env, log_path=log, on_line=steps)}
    budget = steps.last
    steps.step(f"predicting the test slabs with {name}")
    predictions = os.path.join(output, "predictions", name)
    timings[f"predict {name}"] = predict(dataset_id, name, os.path.join(folder, "imagesTs"), predictions, env,
                                         log_path=log)
    return {"timings": timings, "predictions": predictions, "budget": budget}


def _demo_environment(output: str, keep: bool, budget_seconds) -> dict:
    """nnU-Net's folders under OUTPUT/nnunet (emptied unless `keep`), random weights unless set, the budget."""
    if budget_seconds is not None and not budget_seconds > 0:
        raise OptionError(f"--budget-seconds must be a positive number of seconds, got {budget_seconds:g}")
    work = os.path.join(output, "nnunet")
    if os.path.isdir(work) and not keep:
        shutil.rmtree(work)
    os.makedirs(output, exist_ok=True)
    env = nnunet_environment(work)
    env.setdefault(WEIGHTS_ENV_VAR, RANDOM_SETTING)
    env.pop(BUDGET_SECONDS_ENV_VAR, None)
    if budget_seconds is not None:
        env[BUDGET_SECONDS_ENV_VAR] = str(budget_seconds)
    return env


def run_demo(output: str, trainer: str = DEFAULT_DINO_TRAINER, baseline: str = DEFAULT_BASELINE,
             dataset: str = "auto", keep: bool = False, budget_seconds: float = None) -> dict:
    from ..evaluation import evaluate_folders
    output = os.path.abspath(output)
    env = _demo_environment(output, keep, budget_seconds)
    log = os.path.join(output, LOG_NAME)
    open(log, "w").close()  # this run's log only
    steps, timings, start = StepPrinter(7, log_path=log), {}, time.time()
    steps.say(f"nnunet-dino demo: {trainer} against {baseline}, trained and compared on a CPU")
    steps.say(f"nnU-Net's own commands and their output: {log}")
    random_backbone = is_random_setting(env[WEIGHTS_ENV_VAR])
    if random_backbone:
        steps.say(RANDOM_BACKBONE_BANNER)
    with steps.quiet():
        steps.step("building the dataset")
        folder, intro = build_demo_dataset(env["nnUNet_raw"], dataset, say=steps.say)
        dataset_id = convert_dataset_name_to_id(os.path.basename(folder))
        steps.done(f"{folder} ({len(os.listdir(os.path.join(folder, 'labelsTr')))} training and "
                   f"{len(os.listdir(os.path.join(folder, 'labelsTs')))} test cases)")
        steps.step("nnU-Net plan and preprocess")
        timings["plan_and_preprocess"] = plan_and_preprocess(dataset_id, env, log)
        steps.done()
        summaries, facts, predictions = {}, {}, {}
        dataset_json = os.path.join(folder, "dataset.json")
        for name in (trainer, baseline):
            run = train_and_predict(dataset_id, name, folder, output, env, log, steps)
            timings.update(run["timings"])
            predictions[name] = run["predictions"]
            summaries[name] = evaluate_folders(os.path.join(folder, "labelsTs"), predictions[name], dataset_json)
            steps.done(f"mean foreground Dice {summaries[name]['foreground_mean']['Dice']:.3f}")
            model = model_folder(os.path.basename(folder), name, results=env["nnUNet_results"])
            facts[name] = dict(model_facts(model), budget=run["budget"])
        steps.step("writing the report and figures")
        timings["total"] = time.time() - start
        result = _write_outputs(output, folder, intro, env, trainer,
                                dict(summaries=summaries, facts=facts, predictions=predictions, timings=timings))
        steps.done()
    _print_results(steps, result, log)
    return result


def _write_outputs(output: str, folder: str, intro: list, env: dict, trainer: str, runs: dict) -> dict:
    """report.md, the figures and demo_result.json; returns what demo_result.json holds. `runs`: the
    models' summaries, facts, prediction folders and the timings."""
    import torch
    from ..bench.run import machine_info
    from ..networks.base import cpu_has_native_bf16
    from .figures import render_figures
    from .report import reproducibility_statement, write_report
    with open(os.path.join(folder, "dataset.json")) as f:
        dataset_json = json.load(f)
    labels = dataset_json["labels"]
    random_backbone = is_random_setting(env[WEIGHTS_ENV_VAR])
    summaries, facts = runs["summaries"], runs["facts"]
    figures = render_figures(os.path.join(folder, "imagesTs"), os.path.join(folder, "labelsTs"), runs["predictions"],
                             output, dataset_json["file_ending"], {int(v): k for k, v in labels.items()},
                             captions={trainer: "RANDOM frozen backbone"} if random_backbone else None)
    weights = ("**Backbone weights: RANDOM** (`nnUNet_dino_weights=random`). The frozen DINO encoder is "
               "random, so the DINO model's numbers show the pipeline working and what its trainable "
               "adapter/decoder learn on their own, NOT what the method achieves with pretrained DINO "
               "features. Set `nnUNet_dino_weights` to real weights for a meaningful comparison."
               if random_backbone else f"**Backbone weights:** `{env[WEIGHTS_ENV_VAR]}`.")
    machine = machine_info(torch.device("cpu"))
    budget = budget_statement(facts)
    reproducibility = reproducibility_statement(machine, cpu_has_native_bf16(), BUDGET_SECONDS_ENV_VAR in env)
    report = os.path.join(output, "report.md")
    write_report(report, "nnunet-dino demo", intro + [weights, budget, reproducibility], summaries,
                 {str(v): k for k, v in labels.items() if k != "background"}, facts, figures, runs["timings"])
    result = {"dataset": folder, "weights": env[WEIGHTS_ENV_VAR], "machine": machine,
              "mean_dice": {name: s["foreground_mean"]["Dice"] for name, s in summaries.items()},
              "timings": runs["timings"],
              "budget": {n: f["budget"] and f["budget"]._asdict() for n, f in facts.items()},
              "report": report, "figures": figures, "budget_statement": budget}
    with open(os.path.join(output, "demo_result.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


def _print_results(steps: StepPrinter, result: dict, log: str) -> None:
    """The results table of report.md, each model's mean Dice and budget, and where everything is."""
    with open(result["report"]) as f:
        table = f.read().split("## Results on the held-out test cases")[1].split("## Models")[0].strip()
    steps.say("\n" + table)
    steps.say("\nmean foreground Dice: " + ", ".join(f"{k} {v:.3f}" for k, v in result["mean_dice"].items()))
    steps.say(result["budget_statement"].replace("**", ""))
    steps.say(f"total {result['timings']['total'] / 60:.1f} min on {result['machine']['cpu']} "
              f"({result['machine']['cores']} cores)")
    steps.say(f"report: {result['report']}")
    steps.say("figures: " + ", ".join(result["figures"]))
    steps.say(f"nnU-Net's log: {log}")


def budget_statement(facts: dict) -> str:
    """What each model's budget was, in iterations and in this machine's seconds."""
    runs = {name: f["budget"] for name, f in facts.items() if f.get("budget") is not None}
    if not runs:
        return "Training budget: not reported by these trainers."
    first = next(iter(runs.values()))
    kind = (f"the same budget of **{first.total} training iterations**" if first.unit == "iterations"
            else f"the same wall-clock budget of **{first.total} s**")
    each = "; ".join(f"`{n}` {p.seconds:.0f} s (about {p.seconds / max(p.done, 1):.2f} s per iteration)"
                     if p.unit == "iterations" else f"`{n}` {p.seconds:.0f} s" for n, p in runs.items())
    return (f"**Budget:** both models trained for {kind} (batch and patch of nnU-Net's plan, table below). "
            f"Training time on this machine's CPU ({os.cpu_count()} cores): {each}. "
            "`nnUNetTrainer_demo` is nnU-Net's own trainer, network and recipe with that budget.")
