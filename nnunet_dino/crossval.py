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

import contextlib
import io
import os
import shlex
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from .pipeline import nnunet_command

DONE, VALIDATE, RESUME, TRAIN = "done", "validate", "resume", "train"
FLAGS = {VALIDATE: ["--val"], RESUME: ["--c"], TRAIN: []}
LOG_FOLDER = "crossval_logs"


@dataclass
class FoldPlan:
    trainer: str
    fold: int
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


def fold_plan(trainer: str, fold: int, folder: str, want_npz: bool = False) -> FoldPlan:
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


def resolve_dataset(dataset: str) -> str:
    """nnU-Net's dataset folder name (e.g. 'Dataset042_Liver') for an id or a name."""
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    for var in ("nnUNet_preprocessed", "nnUNet_results"):
        if not os.environ.get(var):
            raise ValueError(f"{var} is not set: export nnUNet_raw, nnUNet_preprocessed and nnUNet_results "
                             f"(nnU-Net's folders) first")
    try:
        return maybe_convert_to_dataset_name(dataset)
    except (RuntimeError, ValueError) as error:
        raise ValueError(str(error)) from error


def dataset_id(dataset_name: str) -> str:
    """'Dataset042_Liver' -> '42', as users type it."""
    from nnunetv2.utilities.dataset_name_id_conversion import convert_dataset_name_to_id
    return str(convert_dataset_name_to_id(dataset_name))


def plans_flags(plans: str, configuration: str) -> str:
    """The -p / -c options a suggested command needs (none for nnU-Net's defaults)."""
    return (f" -p {plans}" if plans != "nnUNetPlans" else "") + (f" -c {configuration}" if configuration != "2d" else "")


def check_trainers(trainers: Sequence[str]) -> None:
    """Every trainer must be findable by nnU-Net (else every fold would fail after minutes of startup)."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    missing = []
    for name in trainers:
        with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net prints its whole search
            try:
                recursive_find_trainer_class_by_name(name)
            except RuntimeError:
                missing.append(name)
    if missing:
        raise ValueError(f"nnU-Net cannot find trainer(s) {missing}: check the spelling (class names are "
                         f"case-sensitive) and, for trainers outside nnunetv2, nnUNet_extTrainer "
                         f"(now {os.environ.get('nnUNet_extTrainer', 'unset')!r})")


def check_plans(dataset_name: str, plans: str, configuration: str) -> None:
    import json
    path = os.path.join(os.environ["nnUNet_preprocessed"], dataset_name, plans + ".json")
    if not os.path.isfile(path):
        raise ValueError(f"no plans {path}: run `nnUNetv2_plan_and_preprocess -d {dataset_id(dataset_name)}` "
                         f"(or pass the plans you made with -p)")
    with open(path) as f:
        configurations = json.load(f).get("configurations", {})
    if configuration not in configurations:
        raise ValueError(f"configuration {configuration!r} is not in {path}; it has {sorted(configurations)}")


def plan_folds(dataset_name: str, trainers: Sequence[str], folds: Sequence[int], plans: str, configuration: str,
               want_npz: bool = False) -> List[FoldPlan]:
    from nnunetv2.utilities.file_path_utilities import get_output_folder
    return [fold_plan(t, f, get_output_folder(dataset_name, t, plans, configuration, f), want_npz)
            for t in trainers for f in folds]


def set_aside_incomplete(plans: Sequence[FoldPlan]) -> None:
    """Move checkpoints cut short by a kill out of nnU-Net's way (it would load them first and crash)."""
    for plan in plans:
        for path in plan.set_aside:
            if os.path.isfile(path):
                os.replace(path, path + ".incomplete")
                print(f"  set aside {path} -> {os.path.basename(path)}.incomplete (cut short)", flush=True)


def _stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def run_fold(command: List[str], log_folder: str, plan: FoldPlan) -> int:
    """Run one nnUNetv2_train, streaming its output to the console and to a per-fold log."""
    os.makedirs(log_folder, exist_ok=True)
    log_path = os.path.join(log_folder, f"{plan.trainer}_fold{plan.fold}.log")
    with open(os.path.join(log_folder, "commands.log"), "a") as commands:
        commands.write(f"{_stamp()} start {plan.action}: {shlex.join(command)}\n")
    process = subprocess.Popen([nnunet_command(command[0])] + command[1:], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, bufsize=1)
    with open(log_path, "a") as log:
        log.write(f"\n{_stamp()} $ {shlex.join(command)}\n")
        for line in process.stdout:
            log.write(line)
            sys.stdout.write(line)
            sys.stdout.flush()
    code = process.wait()
    with open(os.path.join(log_folder, "commands.log"), "a") as commands:
        commands.write(f"{_stamp()} exit {code}: {shlex.join(command)}\n")
    return code


def run_crossval(dataset: str, trainers: Sequence[str], folds: Sequence[int] = (0, 1, 2, 3, 4),
                 plans: str = "nnUNetPlans", configuration: str = "2d", device: Optional[str] = None,
                 npz: bool = False, num_gpus: int = 1, keep_going: bool = False) -> int:
    """Run every fold that is not done; returns 0 when all requested folds are done afterwards."""
    dataset_name = resolve_dataset(dataset)
    check_plans(dataset_name, plans, configuration)
    check_trainers(trainers)
    if device is None:
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
    fold_plans = plan_folds(dataset_name, trainers, folds, plans, configuration, npz)
    todo = [p for p in fold_plans if p.action != DONE]
    print(f"crossval {dataset_name} ({configuration}, {plans}), folds {' '.join(map(str, folds))}, device "
          f"{device}: {len(fold_plans) - len(todo)} done, {len(todo)} to run", flush=True)
    for plan in fold_plans:
        print("  " + plan.describe(), flush=True)
    set_aside_incomplete(todo)
    log_folder = os.path.join(os.environ["nnUNet_results"], dataset_name, LOG_FOLDER)
    failed: List[Tuple[FoldPlan, int]] = []
    for i, plan in enumerate(todo, 1):
        command = fold_command(plan, dataset_id(dataset_name), configuration, plans, device, npz, num_gpus)
        print(f"==> [{i}/{len(todo)}] {plan.describe()}\n$ {shlex.join(command)}", flush=True)
        code = run_fold(command, log_folder, plan)
        after = fold_plan(plan.trainer, plan.fold, plan.folder, npz)
        if code != 0 or after.action != DONE:
            failed.append((plan, code))
            print(f"!! {plan.trainer} fold {plan.fold} failed (exit {code}); output: "
                  f"{os.path.join(log_folder, f'{plan.trainer}_fold{plan.fold}.log')}", flush=True)
            if not keep_going:
                break
    remaining = [p for p in plan_folds(dataset_name, trainers, folds, plans, configuration, npz) if p.action != DONE]
    if remaining:
        print(f"{len(remaining)} fold(s) not done: " + ", ".join(f"{p.trainer} fold {p.fold}" for p in remaining)
              + ". Fix the error above and run the same command again: finished folds are skipped.", flush=True)
        return 1
    print(f"all {len(fold_plans)} folds done. Next: nnunet-dino report -d {dataset} -tr {' '.join(trainers)}"
          + plans_flags(plans, configuration), flush=True)
    return 0


def emit_scripts(dataset: str, trainers: Sequence[str], output: str, folds: Sequence[int] = (0, 1, 2, 3, 4),
                 plans: str = "nnUNetPlans", configuration: str = "2d", device: str = "cuda", npz: bool = False,
                 num_gpus: int = 1) -> Dict[str, object]:
    """Write `run_folds.sh` (one nnUNetv2_train line per missing fold) and `job_array.sh` (SLURM array)."""
    from .crossval_scripts import write_scripts
    dataset_name = resolve_dataset(dataset)
    check_plans(dataset_name, plans, configuration)
    check_trainers(trainers)
    fold_plans = plan_folds(dataset_name, trainers, folds, plans, configuration, npz)
    todo = [p for p in fold_plans if p.action != DONE]
    set_aside_incomplete(todo)
    commands = [(p, fold_command(p, dataset_id(dataset_name), configuration, plans, device, npz, num_gpus,
                                 always_continue=True)) for p in todo]
    paths = write_scripts(output, dataset_name, commands, num_gpus)
    for plan in fold_plans:
        print("  " + plan.describe())
    print(f"{len(todo)} fold command(s) written: {paths['run_folds']} and {paths['job_array']}")
    return {"plans": fold_plans, "commands": commands, **paths}
