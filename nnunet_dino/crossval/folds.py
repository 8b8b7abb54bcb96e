"""`nnunet-dino crossval`: the missing cross-validation folds of several trainers, through nnU-Net's own
`nnUNetv2_train`, resumably; or (`emit`) the same commands as a shell script and a job-array script.

What a fold folder holds decides what runs (nnU-Net's own files, nothing of ours):

* `checkpoint_final.pth` + `validation/summary.json`  -> done, skipped;
* `checkpoint_final.pth` only (validation was interrupted) -> `--val` (validation only);
* `checkpoint_latest.pth` or `checkpoint_best.pth` -> `--c` (nnU-Net continues from final > latest >
  best; latest is written every `save_every` epochs, 50 for nnU-Net's trainers, 1 for our `_debug` ones);
* nothing -> trained from scratch.
A checkpoint cut short by a kill (not a complete zip) is renamed `*.incomplete` first: nnU-Net would
load it and crash. Works for any trainer nnU-Net can find, not only the plugin's.
"""
from __future__ import annotations

import json
import os
import shlex
import time
import zipfile
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

from ..errors import OptionError
from ..nnunet import (dataset_id, dataset_name, fold_folder, plans_flags, preprocessed_folder, require_plans,
                      require_trainers, results_root, run_nnunet)

NNUNET_FOLDS = 5  # nnU-Net's default split when no splits_final.json exists

DONE, VALIDATE, RESUME, TRAIN = "done", "validate", "resume", "train"
FLAGS = {VALIDATE: ["--val"], RESUME: ["--c"], TRAIN: []}
LOG_FOLDER = "crossval_logs"


@dataclass
class FoldPlan:
    trainer: str
    fold: Union[int, str]   # a number, or 'all'
    folder: str
    action: str
    reason: str
    set_aside: List[str] = field(default_factory=list)   # incomplete checkpoints to move away first

    def describe(self) -> str:
        verb = {DONE: "done, skipped", VALIDATE: "validate only (--val)", RESUME: "resume (--c)",
                TRAIN: "train from scratch"}[self.action]
        return f"{self.trainer} fold {self.fold}: {verb}: {self.reason}"


def complete_checkpoint(path: str) -> bool:
    """torch.save writes a zip; a file cut short by a kill lacks the zip directory at its end."""
    return os.path.isfile(path) and zipfile.is_zipfile(path)


def fold_plan(trainer: str, fold: Union[int, str], folder: str, want_npz: bool = False) -> FoldPlan:
    """What to do with one fold folder (see the module docstring)."""
    paths = {n: os.path.join(folder, f"checkpoint_{n}.pth") for n in ("final", "latest", "best")}
    # nnU-Net's --c loads the first *existing* of final, latest, best: a truncated one would crash it
    broken = [p for p in paths.values() if os.path.isfile(p) and not complete_checkpoint(p)]
    note = (f" ({', '.join(os.path.basename(p) for p in broken)} incomplete, killed while saving: set aside)"
            if broken else "")
    validation = os.path.join(folder, "validation")
    if complete_checkpoint(paths["final"]):
        if not os.path.isfile(os.path.join(validation, "summary.json")):
            return FoldPlan(trainer, fold, folder, VALIDATE, "trained (checkpoint_final.pth), validation unfinished")
        if want_npz and not any(f.endswith(".npz") for f in os.listdir(validation)):
            return FoldPlan(trainer, fold, folder, VALIDATE, "trained, but validation/ has no .npz and --npz asked")
        return FoldPlan(trainer, fold, folder, DONE, "checkpoint_final.pth and validation/summary.json present")
    for name in ("latest", "best"):
        if complete_checkpoint(paths[name]):
            return FoldPlan(trainer, fold, folder, RESUME, f"interrupted; continues from checkpoint_{name}.pth"
                            + note, broken)
    why = "not started" if not os.path.isdir(folder) else "no usable checkpoint"
    return FoldPlan(trainer, fold, folder, TRAIN, why + note, broken)


def fold_command(plan: FoldPlan, dataset: str, configuration: str, plans: str, device: str, npz: bool = False,
                 num_gpus: int = 1, always_continue: bool = False) -> List[str]:
    """The nnUNetv2_train command for a fold. `always_continue`: `--c` for training folds too (nnU-Net
    starts fresh when there is nothing to continue), so a re-queued job resumes instead of restarting."""
    flags = list(FLAGS[plan.action])
    if always_continue and plan.action in (TRAIN, RESUME):
        flags = ["--c"]
    command = ["nnUNetv2_train", dataset, configuration, str(plan.fold), "-tr", plan.trainer, "-p", plans,
               "-device", device, *flags]
    if npz:
        command.append("--npz")
    if num_gpus > 1:
        command += ["-num_gpus", str(num_gpus)]
    return command


def available_folds(name: str) -> Tuple[int, str]:
    """How many numbered folds the dataset has, and why: its splits_final.json, else nnU-Net's 5-fold split
    of the training cases (which needs at least 5 cases)."""
    folder = preprocessed_folder(name)
    splits = os.path.join(folder, "splits_final.json")
    if os.path.isfile(splits):
        with open(splits) as f:
            count = len(json.load(f))
        return count, f"{splits} defines {count} fold(s)"
    with open(os.path.join(folder, "dataset.json")) as f:
        cases = int(json.load(f)["numTraining"])
    return (NNUNET_FOLDS if cases >= NNUNET_FOLDS else 0), f"the dataset has {cases} training case(s)"


def check_folds(name: str, folds: Sequence) -> None:
    """Refuse folds the dataset cannot have, before anything runs."""
    numbered = [f for f in folds if f != "all"]
    count, why = available_folds(name)
    bad = [f for f in numbered if not 0 <= f < count]
    if bad:
        raise OptionError(f"fold(s) {bad} do not exist: {why}; nnU-Net's {NNUNET_FOLDS}-fold split "
                          f"needs at least {NNUNET_FOLDS} cases. Use --folds all (one model on every case), fewer "
                          f"folds, or your own splits_final.json in {preprocessed_folder(name)}")


def checked_selection(dataset: str, trainers: Sequence[str], plans: str, configuration: str,
                      folds: Sequence = ()) -> str:
    """The dataset's folder name, after checking that its plans, the folds and every trainer exist."""
    name = dataset_name(dataset)
    require_plans(name, plans, configuration)
    check_folds(name, folds)
    require_trainers(trainers)
    return name


def plan_folds(name: str, trainers: Sequence[str], folds: Sequence[int], plans: str, configuration: str,
               want_npz: bool = False) -> List[FoldPlan]:
    return [fold_plan(t, f, fold_folder(name, t, plans, configuration, f), want_npz)
            for t in trainers for f in folds]


def set_aside_incomplete(plans: Sequence[FoldPlan]) -> None:
    """Move checkpoints cut short by a kill out of nnU-Net's way (it would load them first and crash)."""
    for plan in plans:
        for path in plan.set_aside:
            if os.path.isfile(path):
                os.replace(path, path + ".incomplete")
                print(f"  set aside {path} -> {os.path.basename(path)}.incomplete (cut short)", flush=True)


def run_fold(command: List[str], log_folder: str, plan: FoldPlan) -> int:
    """Run one nnUNetv2_train, streaming its output to the console and to a per-fold log."""
    os.makedirs(log_folder, exist_ok=True)
    with open(os.path.join(log_folder, "commands.log"), "a") as commands:
        commands.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} start {plan.action}: {shlex.join(command)}\n")
    code, _, _ = run_nnunet(command, log_path=os.path.join(log_folder, f"{plan.trainer}_fold{plan.fold}.log"),
                            echo=False, stream=True)
    with open(os.path.join(log_folder, "commands.log"), "a") as commands:
        commands.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} exit {code}: {shlex.join(command)}\n")
    return code


def run_crossval(dataset: str, trainers: Sequence[str], folds: Sequence[int] = (0, 1, 2, 3, 4),
                 plans: str = "nnUNetPlans", configuration: str = "2d", device: Optional[str] = None,
                 npz: bool = False, num_gpus: int = 1, keep_going: bool = False) -> int:
    """Run every fold that is not done; returns 0 when all requested folds are done afterwards."""
    name = checked_selection(dataset, trainers, plans, configuration, folds)
    if device is None:
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
    fold_plans = plan_folds(name, trainers, folds, plans, configuration, npz)
    todo = [p for p in fold_plans if p.action != DONE]
    print(f"crossval {name} ({configuration}, {plans}), folds {' '.join(map(str, folds))}, device "
          f"{device}: {len(fold_plans) - len(todo)} done, {len(todo)} to run", flush=True)
    for plan in fold_plans:
        print("  " + plan.describe(), flush=True)
    set_aside_incomplete(todo)
    log_folder = os.path.join(results_root(), name, LOG_FOLDER)
    failed: List[Tuple[FoldPlan, int]] = []
    for i, plan in enumerate(todo, 1):
        command = fold_command(plan, dataset_id(name), configuration, plans, device, npz, num_gpus)
        print(f"==> [{i}/{len(todo)}] {plan.describe()}\n$ {shlex.join(command)}", flush=True)
        code = run_fold(command, log_folder, plan)
        after = fold_plan(plan.trainer, plan.fold, plan.folder, npz)
        if code != 0 or after.action != DONE:
            failed.append((plan, code))
            print(f"!! {plan.trainer} fold {plan.fold} failed (exit {code}); output: "
                  f"{os.path.join(log_folder, f'{plan.trainer}_fold{plan.fold}.log')}", flush=True)
            if not keep_going:
                break
    remaining = [p for p in plan_folds(name, trainers, folds, plans, configuration, npz) if p.action != DONE]
    if remaining:
        print(f"{len(remaining)} fold(s) not done: " + ", ".join(f"{p.trainer} fold {p.fold}" for p in remaining)
              + ". Fix the error above and run the same command again: finished folds are skipped.", flush=True)
        return 1
    print(f"all {len(fold_plans)} folds done. Next: nnunet-dino report -d {dataset} -tr {' '.join(trainers)}"
          + plans_flags(plans, configuration), flush=True)
    return 0
