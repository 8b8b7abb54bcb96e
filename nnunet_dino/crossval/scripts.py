"""The two scripts `nnunet-dino crossval --emit DIR` writes: the missing folds as plain commands, and as a
SLURM-style job array (one array task per model x fold x train fraction) for running folds in parallel on
many GPUs. A chained model's fold (`TRAINER:2.5d+2d`) shares its line and array task with the missing fold
it starts from, `A && B`, so no parallel task waits for another."""
from __future__ import annotations

import os
import shlex
import stat
from typing import Dict, List, Sequence, Tuple, Union

from .folds import DONE, checked_selection, fold_command, report_hint
from .fractions import FULL
from .models import DEFAULT_CONFIGURATION, DEFAULT_PLANS
from ..nnunet import dataset_id

RUN_SCRIPT = "run_folds.sh"
ARRAY_SCRIPT = "job_array.sh"
ENV_GUARD = ('for v in nnUNet_raw nnUNet_preprocessed nnUNet_results; do\n'
             '  [ -n "${!v:-}" ] || { echo "set $v (nnU-Net\'s folders) before running this script" >&2; exit 2; }\n'
             'done')
RESUME_NOTE = ("# Every training line uses --c: nnU-Net continues from the fold's newest checkpoint, or starts\n"
               "# fresh when there is none, so re-running a line (or a re-queued job) never loses work.")


Command = Union[List[str], List[List[str]]]  # one nnUNetv2_train, or a chain of them run in turn


def shell_line(command: Command) -> str:
    """One command, or a chain of commands each run only after the one before succeeded."""
    chain = command if command and isinstance(command[0], list) else [command]
    return " && ".join(shlex.join(c) for c in chain)


def chained_commands(commands: Sequence[Tuple[object, List[str]]]) -> List[Tuple[object, Command]]:
    """Each chained model's fold joined with the missing fold it starts from (same fold, same train fraction)."""
    index = {(plan.model, plan.fold): i for i, (plan, _) in enumerate(commands)}
    starts = {index[plan.model.start, plan.fold]: i for i, (plan, _) in enumerate(commands)
              if plan.model.start is not None and (plan.model.start, plan.fold) in index}
    out = []
    for i, (plan, command) in enumerate(commands):
        if i in starts:
            continue  # runs in its chained model's line
        first = [j for j, k in starts.items() if k == i]
        out.append((plan, [commands[first[0]][1], command] if first else command))
    return out


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def run_script(dataset_name: str, commands: Sequence[Tuple[object, List[str]]]) -> str:
    lines = ["#!/usr/bin/env bash",
             f"# Missing cross-validation folds of {dataset_name}, written by `nnunet-dino crossval --emit`.",
             "# One nnUNetv2_train per line: run the script, or hand lines to different machines/GPUs.",
             RESUME_NOTE, "set -euo pipefail", ENV_GUARD, ""]
    lines += [f"{shell_line(command)}  # {plan.name}: {plan.reason}" for plan, command in commands]
    if not commands:
        lines.append("echo 'nothing to do: every requested fold is done'")
    return "\n".join(lines) + "\n"


def array_script(dataset_name: str, commands: Sequence[Tuple[object, List[str]]], num_gpus: int = 1) -> str:
    last = max(len(commands) - 1, 0)
    lines = ["#!/usr/bin/env bash",
             f"#SBATCH --job-name=cv_{dataset_name}",
             f"#SBATCH --array=0-{last}",
             f"#SBATCH --gres=gpu:{num_gpus}",
             "#SBATCH --cpus-per-task=12          # nnU-Net's data augmentation workers (nnUNet_n_proc_DA)",
             "#SBATCH --output=crossval_%A_%a.log",
             f"# {dataset_name}: one array task per missing model x fold (x fraction), written by `nnunet-dino crossval --emit`.",
             "# Submit with `sbatch job_array.sh` (other schedulers: run task i with SLURM_ARRAY_TASK_ID=i).",
             "# nnU-Net's own multi-GPU training stays available inside a fold: add `-num_gpus N` to a command",
             "# (or pass --num-gpus N to crossval --emit) and request N GPUs per task; it runs DDP on them.",
             RESUME_NOTE, "set -euo pipefail", ENV_GUARD,
             'case "${SLURM_ARRAY_TASK_ID:?run as a job array (sbatch) or set SLURM_ARRAY_TASK_ID}" in']
    lines += [f"  {i}) {shell_line(command)} ;;  # {plan.name}"
              for i, (plan, command) in enumerate(commands)]
    lines += ['  *) echo "no fold for array index $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;', "esac"]
    if not commands:
        lines.insert(1, "# nothing to do: every requested fold is done")
    return "\n".join(lines) + "\n"


def write_scripts(output: str, dataset_name: str, commands: Sequence[Tuple[object, List[str]]],
                  num_gpus: int = 1) -> Dict[str, str]:
    os.makedirs(output, exist_ok=True)
    paths = {"run_folds": os.path.join(output, RUN_SCRIPT), "job_array": os.path.join(output, ARRAY_SCRIPT)}
    _write(paths["run_folds"], run_script(dataset_name, commands))
    _write(paths["job_array"], array_script(dataset_name, commands, num_gpus))
    return paths


def emit_scripts(dataset: str, models: Sequence, output: str, folds: Sequence[int] = (0, 1, 2, 3, 4),
                 plans: str = DEFAULT_PLANS, configuration: str = DEFAULT_CONFIGURATION, device: str = "cuda",
                 npz: bool = False, num_gpus: int = 1, fractions: Sequence[float] = (FULL,),
                 fraction_seed: int = 0) -> Dict[str, object]:
    """Write `run_folds.sh` (one nnUNetv2_train line per missing fold) and `job_array.sh` (SLURM array).
    Writes the scripts and, for train fractions, their entries in splits_final.json (the commands train
    them); a checkpoint cut short by a kill is named, not moved (`nnunet-dino crossval` without --emit
    sets it aside before it runs)."""
    selection = checked_selection(dataset, models, plans, configuration, folds, fractions, fraction_seed)
    fold_plans = selection.plans(npz)
    todo = [p for p in fold_plans if p.action != DONE]
    commands = chained_commands([(p, fold_command(p, dataset_id(selection.name), p.model.configuration, p.model.plans,
                                                  device, npz, num_gpus, always_continue=True)) for p in todo])
    paths = write_scripts(output, selection.name, commands, num_gpus)
    for plan in fold_plans:
        print("  " + plan.describe())
    broken = [path for plan in todo for path in plan.set_aside]
    if broken:
        print(f"!! {len(broken)} checkpoint(s) cut short by a kill: {', '.join(broken)}. nnUNetv2_train --c would "
              f"load them and fail: run `nnunet-dino crossval` once (it sets them aside), or delete them.")
    print(f"{len(todo)} fold command(s) written: {paths['run_folds']} and {paths['job_array']}. "
          f"Afterwards: {report_hint(dataset, selection, fraction_seed)}")
    return {"plans": fold_plans, "commands": commands, **paths}
