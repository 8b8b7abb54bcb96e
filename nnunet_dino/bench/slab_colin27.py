"""`python -m nnunet_dino.bench.slab_colin27 WORKDIR [--iterations N] [--families udfa_s segdino]`: issue 34's
evidence on Colin27 -- 2d alone against 2d followed by `2.5d+2d` at an equal total number of iterations.

In WORKDIR's own nnU-Net folders (never the caller's): builds dataset 903 of crossval.md's "On Colin27" (12
slabs of 6 slices at 2 mm, grey matter / cerebellum), plans `2d` and `2.5d` (`nnunet-dino plan --preset
2.5d`), and per family, on a RANDOM frozen backbone (`nnUNet_dino_weights=random`), fold 0:
(a) the family's `_demo` trainer at 2N iterations in `2d`; (b) the same at N iterations in `2d`, then that
trainer in `2.5d+2d` (it starts from its own N-iteration 2d fold) for N more. The two budgets are trainer
classes that differ only in `budget_iterations`, declared in an `nnUNet_extTrainer` file in WORKDIR/trainers.
Each final model predicts the fold's validation slabs with `nnUNetv2_predict` (a process per model, timed),
the plugin's evaluator scores Dice and HD95 per structure, and slab_colin27_analysis.py says where the
errors lie. Writes WORKDIR/slab_colin27.md, .json and .png; nnU-Net's output goes to WORKDIR/slab_colin27.log.
Finished steps are skipped when run again (a fold's state decides, as in `nnunet-dino crossval`).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from typing import Dict, List

from .. import environment
from ..backbones.weights import RANDOM_SETTING
from ..crossval.folds import DONE, fold_command, fold_plan, set_aside_incomplete
from ..errors import UserError
from ..evaluation import evaluate_folders
from ..nnunet import (NnUNetCommandError, dataset_name, fold_folder, gt_folder, model_folder, nnunet_environment,
                      plan_and_preprocess, plans_file, preprocessed_folder, run_step)
from ..nnunet.logs import epoch_times
from ..plans.slab import DEFAULT_SLICES, SLAB_FROM_2D_CONFIGURATION

DATASET_ID, FOLD, PLANS = 903, 0, "nnUNetPlans"
#: crossval.md's "On Colin27" dataset: `nnunet-dino make-dataset colin27 --id 903 --downsample 2 --structures grey
#: --slab 12 --test-slabs 0`
DATASET_OPTIONS = {"slab": 12, "test_slabs": 0, "downsample": 2, "grouping": "grey"}
FAMILIES = {"udfa_s": "nnUNetTrainerUDFA_S_demo", "segdino": "nnUNetTrainerSegDINO_demo"}
LOG_FILE, TRAINER_FOLDER = "slab_colin27.log", "trainers"
BANNER = ("RANDOM backbone: the frozen DINO encoders have random weights (nnUNet_dino_weights=random); these "
          "figures show the mechanism, not what pretrained DINO features can do")
TRAINER_FILE = '''"""Written by nnunet_dino.bench.slab_colin27: the `_demo` trainers at {n} and {n2} training iterations
(the budget is data: these classes differ from their parent only in `budget_iterations`)."""
from nnunet_dino.training.trainers import {bases}
{classes}'''

#: the line nnU-Net's sequential prediction prints for each case once it is preprocessed (the colon tells it from
#: the predictor's start-up notice "perform_everything_on_device=True is only supported ...")
CASE_LINE = "perform_everything_on_device:"
NNUNET_STEP = 0.5  # nnUNetv2_predict's default -step_size, along every axis (z included)
_STARTED = time.monotonic()


def say(message: str) -> None:
    print(f"[slab_colin27 {time.monotonic() - _STARTED:7.1f} s] {message}", flush=True)


def trainer_name(base: str, iterations: int) -> str:
    return f"{base}_it{iterations}"


def write_trainers(work: str, families: List[str], n: int) -> str:
    """The N- and 2N-iteration twins of each family's `_demo` trainer, in a file nnU-Net finds through
    `nnUNet_extTrainer` (one file per N, so models of an earlier N stay loadable)."""
    folder = os.path.join(work, TRAINER_FOLDER)
    os.makedirs(folder, exist_ok=True)
    bases = [FAMILIES[f] for f in families]
    classes = "".join(f"\n\nclass {trainer_name(base, it)}({base}):\n    budget_iterations = {it}\n"
                      for base in bases for it in (n, 2 * n))
    with open(os.path.join(folder, f"slab_colin27_it{n}.py"), "w") as f:
        f.write(TRAINER_FILE.format(n=n, n2=2 * n, bases=", ".join(bases), classes=classes))
    return folder


def work_environment(work: str) -> Dict[str, str]:
    """nnU-Net's folders under WORKDIR, the random backbone, our trainer folder, no wall-clock budget; also set
    in this process, whose own nnU-Net calls (folder names, the evaluator) read them."""
    env = nnunet_environment(work)
    env[environment.WEIGHTS] = RANDOM_SETTING
    env.pop(environment.BUDGET_SECONDS, None)  # the budget is iterations here, never the clock
    ours = os.path.join(work, TRAINER_FOLDER)
    env["nnUNet_extTrainer"] = os.pathsep.join(p for p in (ours, env.get("nnUNet_extTrainer", "")) if p)
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results",
                                           "nnUNet_extTrainer", environment.WEIGHTS)})
    os.environ.pop(environment.BUDGET_SECONDS, None)
    return env


def prepare_dataset(env: Dict[str, str], log: str, slices: int) -> str:
    """Dataset 903, its 2d plans and preprocessed data, and the `2.5d` / `2.5d+2d` configurations."""
    from ..datasets.colin27 import make_colin27_dataset
    raw = env["nnUNet_raw"]
    if not any(d.startswith(f"Dataset{DATASET_ID}_") for d in os.listdir(raw)):
        make_colin27_dataset(raw, DATASET_ID, **DATASET_OPTIONS)
        say(f"dataset {DATASET_ID} built in {raw}")
    name = dataset_name(DATASET_ID)
    configurations = {}
    if os.path.isfile(plans_file(name, PLANS)):
        with open(plans_file(name, PLANS)) as f:
            configurations = json.load(f)["configurations"]
    if "2d" not in configurations or not os.path.isdir(os.path.join(preprocessed_folder(name), "gt_segmentations")):
        say(f"planning and preprocessing {name} (2d) ...")
        plan_and_preprocess(DATASET_ID, env, log)
    if SLAB_FROM_2D_CONFIGURATION not in configurations:
        say(f"adding the 2.5d configurations ({slices} slices) ...")
        run_step(["nnunet-dino", "plan", "-d", str(DATASET_ID), "--preset", "2.5d", "--slices", str(slices),
                  "-np", "1"], env, log, echo=False)
    return name


def train_fold(name: str, trainer: str, configuration: str, iterations: int, env: Dict[str, str], log: str,
               device: str) -> dict:
    """nnUNetv2_train for fold 0 unless it is done (crossval's rule: a finished fold is skipped, an interrupted
    one continues). Its process seconds (None when skipped) and, from nnU-Net's own log (so also for a fold
    trained by an earlier run), the seconds of its epochs and per training iteration (validation steps included)."""
    folder = fold_folder(name, trainer, PLANS, configuration, FOLD)
    plan = fold_plan(f"{trainer}:{configuration}", FOLD, folder)
    seconds = None
    if plan.action == DONE:
        say(f"{plan.name}: done before, skipped")
    else:
        set_aside_incomplete([plan])
        say(f"{plan.describe()} ...")
        seconds = round(run_step(fold_command(plan, str(DATASET_ID), configuration, PLANS, device), env, log,
                                 echo=False), 1)
        say(f"{plan.name}: trained in {seconds:.0f} s")
    epochs = sum(epoch_times(folder))
    return {"seconds": seconds, "skipped": seconds is None, "epochs_s": round(epochs, 1),
            "s_per_iteration": round(epochs / iterations, 3)}


def validation_inputs(work: str, name: str, env: Dict[str, str]) -> List[str]:
    """The fold's validation cases (nnU-Net's splits_final.json), their images linked into one input folder."""
    with open(os.path.join(preprocessed_folder(name), "splits_final.json")) as f:
        cases = sorted(json.load(f)[FOLD]["val"])
    folder = os.path.join(work, "validation_images")
    os.makedirs(folder, exist_ok=True)
    raw_images = os.path.join(env["nnUNet_raw"], name, "imagesTr")
    for case in cases:
        for image in (f for f in os.listdir(raw_images) if f.startswith(case + "_")):
            link = os.path.join(folder, image)
            if not os.path.lexists(link):
                os.symlink(os.path.join(raw_images, image), link)
    return cases


def predict_timed(trainer: str, configuration: str, inputs: str, out: str, env: Dict[str, str], log: str,
                  device: str) -> dict:
    """`nnUNetv2_predict` of the validation images in a process of its own, with the runner's arguments
    (sequential: no worker pools). `wall_s` includes the process start-up and the model's loading; the time
    per case is the mean interval between consecutive cases' first line (nnU-Net prints one per case when
    it has preprocessed it), which leaves them out; with one case, its time to the end of the process."""
    record = os.path.join(out, "timing.json")  # written last: it exists only for a finished prediction
    if os.path.isfile(record):
        with open(record) as f:
            return json.load(f)
    stamps: List[float] = []

    def on_line(line: str) -> None:
        if line.startswith(CASE_LINE):
            stamps.append(time.monotonic())
    start = time.monotonic()
    run_step(["nnUNetv2_predict", "-i", inputs, "-o", out, "-d", str(DATASET_ID), "-c", configuration, "-tr", trainer,
              "-p", PLANS, "-f", str(FOLD), "-device", device, "-npp", "0", "-nps", "0"], env, log, echo=False,
             on_line=on_line)
    end = time.monotonic()
    # the last case's time to the end also holds the process's exit: only a lone case is timed that way
    intervals = [b - a for a, b in zip(stamps, stamps[1:])] or [end - s for s in stamps]
    timing = {"wall_s": round(end - start, 2), "cases": len(stamps),
              "per_case_s": round(statistics.mean(intervals), 3) if intervals else None,
              "intervals_s": [round(x, 3) for x in intervals], "last_case_to_exit_s": round(end - stamps[-1], 3)
              if stamps else None}
    with open(record, "w") as f:
        json.dump(timing, f, indent=1)
    return timing


def read_case(path: str):
    """(z, y, x) label array and its spacing (z, y, x) in mm."""
    import SimpleITK as sitk
    image = sitk.ReadImage(path)
    return sitk.GetArrayFromImage(image), tuple(float(s) for s in image.GetSpacing()[::-1])


def analyse(summary: dict, windows_for) -> Dict[str, dict]:
    """Per structure: the error locations of every case (slab_colin27_analysis.py) and their sum."""
    from .slab_colin27_analysis import add_up, error_locations
    per_class: Dict[str, dict] = {key: {"cases": {}} for key in summary["label_names"]}
    for case in summary["metric_per_case"]:
        prediction, spacing = read_case(case["prediction_file"])
        reference, _ = read_case(case["reference_file"])
        windows = windows_for(reference.shape[0])
        stem = os.path.basename(case["reference_file"]).split(".")[0]
        for key in per_class:
            value = int(key)  # the Colin27 dataset has labels, no regions
            per_class[key]["cases"][stem] = error_locations(prediction == value, reference == value, spacing, windows)
    for key, entry in per_class.items():
        entry["total"] = add_up(list(entry["cases"].values()))
    return per_class


def slab_geometry(name: str, trainer: str) -> dict:
    """The slab's slices, recorded z step and batch sizes (the 2.5d+2d model's saved plans) and the z windows of
    a 6-slice case on nnU-Net's step (`nnUNetv2_predict`) and on the recorded one (`nnunet-dino predict`)."""
    from .slab_colin27_analysis import slab_windows
    with open(os.path.join(model_folder(name, trainer, PLANS, SLAB_FROM_2D_CONFIGURATION), "plans.json")) as f:
        configurations = json.load(f)["configurations"]
    configuration = configurations[SLAB_FROM_2D_CONFIGURATION]
    slices, z_step = int(configuration["patch_size"][0]), configuration.get("nnunet_dino_slab_z_step")
    depth = DATASET_OPTIONS["slab"] // DATASET_OPTIONS["downsample"]
    # an iteration's slices: equal iterations are not equal slices when the slab batch is rounded up to 2
    batches = {"2d": configurations["2d"]["batch_size"], SLAB_FROM_2D_CONFIGURATION: configuration["batch_size"]}
    return {"slices": slices, "z_step": z_step, "case_depth": depth, "batch_size": batches,
            "windows_nnUNetv2_predict": slab_windows(depth, slices, NNUNET_STEP),
            "windows_recorded_step": slab_windows(depth, slices, z_step / slices) if z_step else None}


def run_family(work: str, name: str, family: str, n: int, env: Dict[str, str], log: str, device: str) -> dict:
    """Train the three folds of one family, predict and time the validation slabs, score, locate the errors."""
    from .slab_colin27_analysis import slab_windows
    base = FAMILIES[family]
    runs = {"2d": (trainer_name(base, 2 * n), "2d", 2 * n), "2d start": (trainer_name(base, n), "2d", n),
            "2.5d+2d": (trainer_name(base, n), SLAB_FROM_2D_CONFIGURATION, n)}
    models = {key: {"trainer": t, "configuration": c, "iterations": it,
                    "train": train_fold(name, t, c, it, env, log, device)} for key, (t, c, it) in runs.items()}
    cases = validation_inputs(work, name, env)
    geometry = slab_geometry(name, runs["2.5d+2d"][0])
    windows_for = lambda depth: slab_windows(depth, geometry["slices"], NNUNET_STEP)  # noqa: E731 (the tiles predicted)
    dataset_json = os.path.join(env["nnUNet_raw"], name, "dataset.json")
    for key, model in models.items():
        out = os.path.join(work, "predictions", f"{family}_{key.replace(' ', '_').replace('+', '_from_')}")
        cached = os.path.isfile(os.path.join(out, "timing.json"))
        say(f"{family} {key}: " + ("predicted before (timing.json), scoring" if cached else
                                    f"nnUNetv2_predict of the {len(cases)} validation slabs ..."))
        model["prediction"] = predict_timed(model["trainer"], model["configuration"],
                                            os.path.join(work, "validation_images"), out, env, log, device)
        summary = evaluate_folders(gt_folder(name), out, dataset_json, allow_missing_predictions=True)
        model["folder"], model["validation_cases"] = out, cases
        model["mean"] = {k: {m: summary["mean"][k][m] for m in ("Dice", "HD95")} for k in summary["label_names"]}
        model["per_case"] = {os.path.basename(c["reference_file"]).split(".")[0]:
                             {k: {m: c["metrics"][k][m] for m in ("Dice", "HD95")} for k in summary["label_names"]}
                             for c in summary["metric_per_case"]}
        model["errors"] = analyse(summary, windows_for)
        say(f"{family} {key}: Dice " + " / ".join(f"{summary['mean'][k]['Dice']:.3f}" for k in summary["label_names"])
            + f", {model['prediction']['per_case_s']} s per case")
    return {"trainer_base": base, "models": models, "geometry": geometry, "label_names": summary["label_names"]}


def run(work: str, n: int, families: List[str], device: str, slices: int, command: str) -> dict:
    from .run import machine_info
    import torch
    work = os.path.abspath(work)
    os.makedirs(work, exist_ok=True)
    log = os.path.join(work, LOG_FILE)
    say(f"!! {BANNER}")
    say(f"nnU-Net's output goes to {log}")
    env = work_environment(work)
    write_trainers(work, families, n)
    started = time.monotonic()
    name = prepare_dataset(env, log, slices)
    result = {"backbone": BANNER, "command": command, "machine": machine_info(torch.device(device)),
              "dataset": name, "fold": FOLD, "iterations": n, "device": device,
              "stages_s": {"dataset and plans": round(time.monotonic() - started, 1)}, "families": {}}
    for family in families:
        started = time.monotonic()
        result["families"][family] = run_family(work, name, family, n, env, log, device)
        result["stages_s"][family] = round(time.monotonic() - started, 1)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", help="working folder (its own nnUNet_raw/preprocessed/results)")
    parser.add_argument("--iterations", type=int, default=300, metavar="N",
                        help="N: 2d alone trains 2N iterations, the chain N in 2d then N in 2.5d+2d (default 300)")
    parser.add_argument("--families", nargs="+", choices=sorted(FAMILIES), default=["udfa_s", "segdino"])
    parser.add_argument("--slices", type=int, default=DEFAULT_SLICES, help="slices per slab (default 5)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "nnunet_dino.bench.slab_colin27", *(sys.argv[1:] if argv is None else argv)])
    from .slab_colin27_report import write_report
    try:
        result = run(args.work, args.iterations, args.families, args.device, args.slices, command)
        paths = write_report(result, os.path.abspath(args.work))
    except UserError as error:
        print(f"slab_colin27: error: {error}", file=sys.stderr)
        return 2
    except NnUNetCommandError as error:  # the end of its output is in the message; all of it in the log
        print(f"slab_colin27: {error}\nfull output: {os.path.join(os.path.abspath(args.work), LOG_FILE)}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("slab_colin27: interrupted; finished folds and predictions are kept and skipped when run again",
              file=sys.stderr)
        return 130
    say(f"!! RANDOM backbone. Report: {', '.join(paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
