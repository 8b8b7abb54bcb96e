"""nnU-Net's console commands (plan -> train -> predict -> evaluate), each in a fresh process with the
arguments a user types. One runner serves the demo, cross-validation and the end-to-end tests."""
from __future__ import annotations

import collections
import contextlib
import functools
import importlib.metadata
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

TAIL_LINES = 120  # of a failed command's output, quoted in its error


class NnUNetCommandError(RuntimeError):
    """An nnU-Net command exited non-zero; the message holds the end of its output."""


def nnunet_command(name: str) -> str:
    """Path of an nnU-Net console script next to this interpreter (works without an activated venv)."""
    candidate = os.path.join(os.path.dirname(sys.executable), name)
    return candidate if os.path.exists(candidate) else (shutil.which(name) or name)


@functools.lru_cache(maxsize=None)
def _entry_point(name: str) -> Optional[Tuple[str, str]]:
    """(module, function) of an installed console script `name`, or None (not a plain function entry)."""
    for entry in importlib.metadata.entry_points(group="console_scripts", name=name):
        module, _, function = entry.value.partition(":")
        if function.isidentifier():
            return module.strip(), function
    return None


def launch_command(name: str) -> List[str]:
    """How a console command starts. A Python entry point (nnUNetv2_train is
    nnunetv2.run.run_training:run_training_entry) runs as `python -c`, calling the function its console
    script calls: the same code and arguments, but the workers nnU-Net spawns (validation export,
    metrics) then import only what they run instead of re-running the script's imports, several seconds
    of CPU each. Anything else runs as found on the PATH."""
    entry = _entry_point(name)
    if entry is None:
        return [nnunet_command(name)]
    module, function = entry
    return [sys.executable, "-c", f"import sys; sys.argv[0] = {name!r}; from {module} import {function} as main; "
                                  "sys.exit(main())"]


def run_nnunet(args: Sequence[str], env: Optional[Dict[str, str]] = None, log_path: Optional[str] = None,
               echo: bool = True, stream: bool = False, on_line: Optional[Callable[[str], None]] = None,
               own_session: bool = False) -> Tuple[int, float, str]:
    """Run one command; its output is appended to `log_path` and, with `stream`, copied to the console
    line by line (`on_line` sees every line). Returns (exit code, seconds, the end of its output).
    `own_session`: the child leads a session of its own, out of the terminal's Ctrl-C, and stopping it
    ends its whole process group (for children with worker pools that do not stop on SIGINT)."""
    start = time.time()
    if echo:
        print("$", shlex.join(args), flush=True)
    tail = collections.deque(maxlen=TAIL_LINES)
    log = open(log_path, "a") if log_path else None
    try:
        if log:
            log.write(f"\n{time.strftime('%Y-%m-%d %H:%M:%S')} $ {shlex.join(args)}\n")
        process = subprocess.Popen([*launch_command(args[0]), *args[1:]], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=own_session)
        try:
            for line in process.stdout:
                tail.append(line)
                if log:
                    log.write(line)
                if stream:
                    sys.stdout.write(line)
                    sys.stdout.flush()
                if on_line:
                    on_line(line)
            code = process.wait()
        except BaseException:  # Ctrl-C (or an error here) must not leave the nnU-Net process running
            _stop(process, group=own_session)
            raise
    finally:
        if log:
            log.close()
    return code, time.time() - start, "".join(tail)


def _stop(process: subprocess.Popen, grace_s: float = 10.0, group: bool = False) -> None:
    """Ask a child to stop (SIGTERM: nnU-Net's trainers and their workers end), then kill it; a `group`
    leader is killed at once with its whole group."""
    if group:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_step(args: List[str], env: Optional[Dict[str, str]] = None, log_path: Optional[str] = None,
             echo: bool = True, on_line: Optional[Callable[[str], None]] = None) -> float:
    """Run one command; raise NnUNetCommandError with the end of its output if it fails. Returns seconds."""
    code, seconds, tail = run_nnunet(args, env, log_path, echo, on_line=on_line)
    if code != 0:
        raise NnUNetCommandError(f"`{shlex.join(args)}` failed (exit {code}):\n{tail}")
    return seconds


def plan_and_preprocess(dataset_id: int, env: Dict[str, str], log_path: Optional[str] = None,
                        configurations: Sequence[str] = ("2d",)) -> float:
    env = dict(env)
    env.pop("nnUNet_n_proc_DA", None)  # 0 crashes nnU-Net's planner (set_num_threads(0))
    return run_step(["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", *configurations,
                     "-np", *["1"] * len(configurations), "-npfp", "1", "--verify_dataset_integrity"], env, log_path)


def train(dataset_id: int, trainer: str, env: Dict[str, str], fold=0, device: str = "cpu",
          log_path: Optional[str] = None, plans: str = "nnUNetPlans", extra: Sequence[str] = (),
          on_line: Optional[Callable[[str], None]] = None, configuration: str = "2d") -> float:
    env = dict(env, nnUNet_n_proc_DA=env.get("nnUNet_n_proc_DA", "0"))
    return run_step(["nnUNetv2_train", str(dataset_id), configuration, str(fold), "-tr", trainer, "-p", plans,
                     "-device", device, *extra], env, log_path, on_line=on_line)


def predict(dataset_id: int, trainer: str, input_dir: str, output_dir: str, env: Dict[str, str],
            folds=(0,), device: str = "cpu", log_path: Optional[str] = None, plans: str = "nnUNetPlans",
            extra: Sequence[str] = (), configuration: str = "2d") -> float:
    """`-npp 0 -nps 0` is nnU-Net's sequential path: the plugin predicts a few cases per call, and each
    spawned preprocessing or export worker would cost a whole nnU-Net import, more than it saves."""
    return run_step(["nnUNetv2_predict", "-i", input_dir, "-o", output_dir, "-d", str(dataset_id), "-c", configuration,
                     "-tr", trainer, "-p", plans, "-f", *[str(f) for f in folds], "-device", device,
                     "-npp", "0", "-nps", "0", *extra], env, log_path)


def evaluate(gt_dir: str, pred_dir: str, dataset_json: str, plans_json: str, env: Dict[str, str],
             log_path: Optional[str] = None) -> dict:
    """nnU-Net's own evaluator (nnUNetv2_evaluate_folder); returns its summary.json."""
    out = os.path.join(pred_dir, "summary.json")
    run_step(["nnUNetv2_evaluate_folder", gt_dir, pred_dir, "-djfile", dataset_json, "-pfile", plans_json,
              "-o", out, "-np", "1"], env, log_path)
    with open(out) as f:
        return json.load(f)
