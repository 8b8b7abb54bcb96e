"""Driving nnU-Net's own command line (plan -> train -> predict -> evaluate) from Python.

Used by `nnunet-dino demo` and the end-to-end tests: every step is the real nnU-Net console
script in its own process, exactly as a user would type it.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional


def nnunet_environment(workdir: str, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment with nnU-Net's three folders under `workdir`, sized for a small CPU machine."""
    env = dict(os.environ if base is None else base)
    for var, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"), ("nnUNet_results", "results")):
        env[var] = os.path.join(workdir, sub)
        os.makedirs(env[var], exist_ok=True)
    env.setdefault("nnUNet_def_n_proc", "1")   # validation export / metric pools
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def nnunet_command(name: str) -> str:
    """Path of an nnU-Net console script next to this interpreter (works without an activated venv)."""
    candidate = os.path.join(os.path.dirname(sys.executable), name)
    return candidate if os.path.exists(candidate) else (shutil.which(name) or name)


def run_step(args: List[str], env: Dict[str, str], log_path: Optional[str] = None, echo: bool = True,
             on_line: Optional[Callable[[str], None]] = None) -> float:
    """Run one command; raise with the tail of its output if it fails. Returns seconds taken.
    `on_line` sees each line of its output as it comes (progress)."""
    start = time.time()
    if echo:
        print("$", " ".join(args), flush=True)
    lines = []
    with subprocess.Popen([nnunet_command(args[0])] + args[1:], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            lines.append(line)
            if on_line:
                on_line(line)
    output = "".join(lines)
    if log_path:
        with open(log_path, "a") as f:
            f.write(f"$ {' '.join(args)}\n{output}\n")
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(args)}` failed (exit {proc.returncode}):\n{output[-6000:]}")
    return time.time() - start


def plan_and_preprocess(dataset_id: int, env: Dict[str, str], log_path: Optional[str] = None) -> float:
    env = dict(env)
    env.pop("nnUNet_n_proc_DA", None)  # 0 crashes nnU-Net's planner (set_num_threads(0))
    return run_step(["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", "2d", "-np", "1",
                     "-npfp", "1", "--verify_dataset_integrity"], env, log_path)


def train(dataset_id: int, trainer: str, env: Dict[str, str], fold=0, device: str = "cpu",
          log_path: Optional[str] = None, plans: str = "nnUNetPlans", extra: List[str] = (),
          on_line: Optional[Callable[[str], None]] = None) -> float:
    env = dict(env, nnUNet_n_proc_DA=env.get("nnUNet_n_proc_DA", "0"))
    return run_step(["nnUNetv2_train", str(dataset_id), "2d", str(fold), "-tr", trainer, "-p", plans,
                     "-device", device, *extra], env, log_path, on_line=on_line)


def predict(dataset_id: int, trainer: str, input_dir: str, output_dir: str, env: Dict[str, str],
            folds=(0,), device: str = "cpu", log_path: Optional[str] = None, plans: str = "nnUNetPlans",
            extra: List[str] = ()) -> float:
    return run_step(["nnUNetv2_predict", "-i", input_dir, "-o", output_dir, "-d", str(dataset_id), "-c", "2d",
                     "-tr", trainer, "-p", plans, "-f", *[str(f) for f in folds], "-device", device,
                     "-npp", "1", "-nps", "1", *extra], env, log_path)


def evaluate(gt_dir: str, pred_dir: str, dataset_json: str, plans_json: str, env: Dict[str, str],
             log_path: Optional[str] = None) -> dict:
    out = os.path.join(pred_dir, "summary.json")
    run_step(["nnUNetv2_evaluate_folder", gt_dir, pred_dir, "-djfile", dataset_json, "-pfile", plans_json,
              "-o", out, "-np", "1"], env, log_path)
    with open(out) as f:
        return json.load(f)


def results_folder(env: Dict[str, str], dataset_folder_name: str, trainer: str, plans: str = "nnUNetPlans") -> str:
    return os.path.join(env["nnUNet_results"], dataset_folder_name, f"{trainer}__{plans}__2d")
