"""`nnunet-dino crossval`: the missing cross-validation folds of several models (`models`:
TRAINER[:CONFIGURATION[:PLANS]]), also trained on fractions of each fold's training cases
(`fractions`), through nnU-Net's own `nnUNetv2_train`, resumably; or (`scripts`) the same commands as a
shell script and a job-array script.

What a fold folder holds decides what runs (nnU-Net's own files, nothing of ours):

* `checkpoint_final.pth` + `validation/summary.json`  -> done, skipped;
* `checkpoint_final.pth` only (validation was interrupted) -> `--val` (validation only);
* `checkpoint_latest.pth` or `checkpoint_best.pth` -> `--c` (nnU-Net continues from final > latest >
  best; latest is written every `save_every` epochs, 50 for nnU-Net's trainers, 1 for our `_debug` ones);
* nothing -> trained from scratch.
A checkpoint cut short by a kill (not a complete zip) is renamed `*.incomplete` first: nnU-Net would
load it and crash. Works for any trainer nnU-Net can find, not only the plugin's.

A chained model (`TRAINER:2.5d+2d`, models.py) brings the model it starts from (`TRAINER:2d`) into the
selection, and each of its folds runs right after that model's same fold.
"""
from __future__ import annotations

import json
import os
import shlex
import time
import zipfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

from ..errors import OptionError
from ..nnunet import (dataset_id, dataset_name, fold_folder, plans_file, preprocessed_folder, require_plans,
                      require_trainers, results_root, run_nnunet)
from .fractions import FULL, Run, base_fold_count, check_fractions, fraction_folds
from .models import DEFAULT_CONFIGURATION, DEFAULT_PLANS, ModelSpec, parse_model, parse_models
from ..plans.slab import SLAB_FROM_2D_CONFIGURATION, add_chained_configuration

NNUNET_FOLDS = 5  # nnU-Net's default split when no splits_final.json exists

DONE, VALIDATE, RESUME, TRAIN = "done", "validate", "resume", "train"
FLAGS = {VALIDATE: ["--val"], RESUME: ["--c"], TRAIN: []}
LOG_FOLDER = "crossval_logs"


@dataclass
class FoldPlan:
    model: ModelSpec
    fold: Union[int, str]   # nnU-Net's fold number (a train-fraction run has its own), or 'all'
    folder: str
    action: str
    reason: str
    set_aside: List[str] = field(default_factory=list)   # incomplete checkpoints to move away first
    base_fold: Union[int, str, None] = None               # the dataset's fold; None: the same as `fold`
    fraction: float = FULL                                # of the base fold's training cases

    @property
    def trainer(self) -> str:
        return self.model.trainer

    @property
    def name(self) -> str:
        base = self.fold if self.base_fold is None else self.base_fold
        if self.fraction == FULL:
            return f"{self.model.label} fold {base}"
        return f"{self.model.label} fold {base} at {self.fraction:g} of its training cases (nnU-Net fold {self.fold})"

    @property
    def log_name(self) -> str:
        return f"{self.model.file_stem}_fold{self.fold}.log"

    def describe(self) -> str:
        verb = {DONE: "done, skipped", VALIDATE: "validate only (--val)", RESUME: "resume (--c)",
                TRAIN: "train from scratch" if self.model.start is None else
                f"train from {self.model.start.label} fold {self.fold}"}[self.action]
        return f"{self.name}: {verb}: {self.reason}"


def complete_checkpoint(path: str) -> bool:
    """torch.save writes a zip; a file cut short by a kill lacks the zip directory at its end."""
    return os.path.isfile(path) and zipfile.is_zipfile(path)


def fold_plan(model: Union[ModelSpec, str], fold: Union[int, str], folder: str, want_npz: bool = False,
              base_fold: Union[int, str, None] = None, fraction: float = FULL) -> FoldPlan:
    """What to do with one fold folder (see the module docstring)."""
    def plan(action: str, reason: str, set_aside: Sequence[str] = ()) -> FoldPlan:
        return FoldPlan(parse_model(model), fold, folder, action, reason, list(set_aside), base_fold, fraction)
    paths = {n: os.path.join(folder, f"checkpoint_{n}.pth") for n in ("final", "latest", "best")}
    # nnU-Net's --c loads the first *existing* of final, latest, best: a truncated one would crash it
    broken = [p for p in paths.values() if os.path.isfile(p) and not complete_checkpoint(p)]
    note = (f" ({', '.join(os.path.basename(p) for p in broken)} incomplete, killed while saving: set aside)"
            if broken else "")
    validation = os.path.join(folder, "validation")
    if complete_checkpoint(paths["final"]):
        if not os.path.isfile(os.path.join(validation, "summary.json")):
            return plan(VALIDATE, "trained (checkpoint_final.pth), validation unfinished")
        if want_npz and not any(f.endswith(".npz") for f in os.listdir(validation)):
            return plan(VALIDATE, "trained, but validation/ has no .npz and --npz asked")
        return plan(DONE, "checkpoint_final.pth and validation/summary.json present")
    for name in ("latest", "best"):
        if complete_checkpoint(paths[name]):
            return plan(RESUME, f"interrupted; continues from checkpoint_{name}.pth" + note, broken)
    return plan(TRAIN, ("not started" if not os.path.isdir(folder) else "no usable checkpoint") + note, broken)


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
    """How many numbered folds the dataset has, and why: its splits_final.json (less the entries added for
    train fractions), else nnU-Net's 5-fold split of the training cases (which needs at least 5 cases)."""
    count = base_fold_count(name)
    if count is not None:
        return count, f"{os.path.join(preprocessed_folder(name), 'splits_final.json')} defines {count} fold(s)"
    with open(os.path.join(preprocessed_folder(name), "dataset.json")) as f:
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


@dataclass
class Selection:
    """Which runs of which models of a dataset: every model x every (fold, fraction) -> nnU-Net fold."""
    name: str
    models: List[ModelSpec]
    runs: Dict[Run, Union[int, str]]
    fractions: List[float]

    def plans(self, want_npz: bool = False) -> List[FoldPlan]:
        """Model by model, run by run; a chained model's run right after its start model's same run."""
        def group(m: ModelSpec) -> int:  # a chained model runs in its start model's group
            return self.models.index(m.start) if m.start in self.models else self.models.index(m)
        order = sorted(((group(m), r, m.start is not None, self.models.index(m)), m, run) for m in self.models
                       for r, run in enumerate(sorted(self.runs.items(), key=_run_order)))
        return [fold_plan(m, nnunet_fold, fold_folder(self.name, m.trainer, m.plans, m.configuration, nnunet_fold),
                          want_npz, fold, fraction)
                for _, m, ((fold, fraction), nnunet_fold) in order]


def _run_order(item) -> tuple:
    (fold, fraction), _ = item
    return (-fraction, str(fold))  # full-data runs first (the report's main rows), then smaller fractions


def with_start_models(models: Sequence[ModelSpec]) -> List[ModelSpec]:
    """The models, each chained one preceded by the model it starts from (unless that is listed already)."""
    out: List[ModelSpec] = []
    for model in models:
        if model.start is not None and model.start not in models and model.start not in out:
            out.append(model.start)
        out.append(model)
    return out


def checked_selection(dataset: str, models: Sequence, plans: str = DEFAULT_PLANS,
                      configuration: str = DEFAULT_CONFIGURATION, folds: Sequence = (),
                      fractions: Sequence[float] = (FULL,), fraction_seed: int = 0) -> Selection:
    """After checking that the dataset, every model's plans and configuration, the folds and every trainer
    exist: the runs, with the train-fraction splits written where they are missing."""
    name = dataset_name(dataset)
    models = with_start_models(parse_models(models, configuration, plans))
    for plans_name, configuration_name in dict.fromkeys((m.plans, m.configuration) for m in models):
        chained = configuration_name == SLAB_FROM_2D_CONFIGURATION and os.path.isfile(plans_file(name, plans_name))
        if chained and add_chained_configuration(plans_file(name, plans_name)):  # plans made before it existed
            print(f"added configuration '{SLAB_FROM_2D_CONFIGURATION}' (the 2.5d one, started from the 2d model) "
                  f"to {plans_file(name, plans_name)}", flush=True)
        require_plans(name, plans_name, configuration_name)
    check_folds(name, folds)
    require_trainers(list(dict.fromkeys(m.trainer for m in models)))
    fractions = check_fractions(fractions)
    return Selection(name, models, fraction_folds(name, folds, fractions, fraction_seed, create=True), fractions)


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
    code, _, _ = run_nnunet(command, log_path=os.path.join(log_folder, plan.log_name), echo=False, stream=True)
    with open(os.path.join(log_folder, "commands.log"), "a") as commands:
        commands.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} exit {code}: {shlex.join(command)}\n")
    return code


def report_hint(dataset: str, selection: Selection, fraction_seed: int = 0) -> str:
    """The `nnunet-dino report` command for the runs of a selection."""
    folds = sorted({fold for fold, _ in selection.runs}, key=str)
    hint = (f"nnunet-dino report -d {dataset} -tr {' '.join(m.label for m in selection.models)} "
            f"--folds {' '.join(map(str, folds))}")
    if selection.fractions != [FULL]:
        hint += " --train-fractions " + " ".join(f"{f:g}" for f in selection.fractions)
        hint += f" --fraction-seed {fraction_seed}" if fraction_seed else ""
    return hint


def run_crossval(dataset: str, models: Sequence, folds: Sequence[int] = (0, 1, 2, 3, 4),
                 plans: str = DEFAULT_PLANS, configuration: str = DEFAULT_CONFIGURATION, device: Optional[str] = None,
                 npz: bool = False, num_gpus: int = 1, keep_going: bool = False, fractions: Sequence[float] = (FULL,),
                 fraction_seed: int = 0) -> int:
    """Run every fold that is not done; returns 0 when all requested folds are done afterwards. `models`:
    TRAINER[:CONFIGURATION[:PLANS]] (omitted parts: `configuration`, `plans`)."""
    selection = checked_selection(dataset, models, plans, configuration, folds, fractions, fraction_seed)
    if device is None:
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
    fold_plans = selection.plans(npz)
    todo = [p for p in fold_plans if p.action != DONE]
    print(f"crossval {selection.name}: {', '.join(m.label for m in selection.models)}; folds "
          f"{' '.join(map(str, folds))}" + (f"; train fractions {' '.join(f'{f:g}' for f in selection.fractions)}"
                                            if selection.fractions != [FULL] else "")
          + f"; device {device}: {len(fold_plans) - len(todo)} done, {len(todo)} to run", flush=True)
    for plan in fold_plans:
        print("  " + plan.describe(), flush=True)
    set_aside_incomplete(todo)
    log_folder = os.path.join(results_root(), selection.name, LOG_FOLDER)
    for i, plan in enumerate(todo, 1):
        command = fold_command(plan, dataset_id(selection.name), plan.model.configuration, plan.model.plans, device,
                               npz, num_gpus)
        print(f"==> [{i}/{len(todo)}] {plan.describe()}\n$ {shlex.join(command)}", flush=True)
        code = run_fold(command, log_folder, plan)
        after = fold_plan(plan.model, plan.fold, plan.folder, npz)
        if code != 0 or after.action != DONE:
            print(f"!! {plan.name} failed (exit {code}); output: {os.path.join(log_folder, plan.log_name)}", flush=True)
            if not keep_going:
                break
    remaining = [p for p in selection.plans(npz) if p.action != DONE]
    if remaining:
        print(f"{len(remaining)} fold(s) not done: " + ", ".join(p.name for p in remaining)
              + ". Fix the error above and run the same command again: finished folds are skipped.", flush=True)
        return 1
    print(f"all {len(fold_plans)} folds done. Next: {report_hint(dataset, selection, fraction_seed)}", flush=True)
    return 0
