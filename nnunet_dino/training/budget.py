"""Training budgets for the demo trainers: a number of iterations (the default: the same result on
any machine, only the time changes) or a wall-clock budget (equal CPU time for each model).

nnU-Net fixes the epoch loop at `range(current_epoch, num_epochs)` when training starts, so the
loop is restated here. Iterations: `budget_iterations` training steps in epochs of
`budget_iterations_per_epoch` (the last one shorter if they do not divide), the LR schedule
(warm-up, poly) stretched to those epochs. Wall clock: after every epoch the number of epochs is
refitted to what still fits the budget at the recent epoch time, and the schedule stretched with
it, so poly decay still ends at the budget. Refitting, rather than trusting the first epoch,
matters: first epochs run slow (kernel selection for each new shape, data-loader start-up), and
one slow epoch would waste most of the budget.

After every epoch the trainer logs one progress line (`PROGRESS_PREFIX done/total unit, ... s`),
which the demo reads from nnU-Net's output to show progress and time left.
"""
from __future__ import annotations

import math
import os
import re
import statistics
import time
from typing import NamedTuple, Optional

import torch

from .. import environment

BUDGET_SECONDS_ENV_VAR = environment.BUDGET_SECONDS  # set: wall-clock mode with that many seconds
PROGRESS_PREFIX = "nnunet-dino budget:"
PROGRESS_LINE = re.compile(re.escape(PROGRESS_PREFIX) + r" (\d+)/(\d+) (iterations|s), ([\d.]+) s")
RECENT_EPOCHS = 5  # epoch times the wall-clock refit uses (median): follows a slow start, ignores a hiccup


class Progress(NamedTuple):
    done: int
    total: int
    unit: str  # "iterations" or "s"
    seconds: float  # of training so far

    @property
    def seconds_left(self) -> float:
        if self.unit == "s":
            return max(self.total - self.done, 0)
        return self.seconds / max(self.done, 1) * (self.total - self.done)


def parse_progress(line: str) -> Optional[Progress]:
    """The progress a budget trainer logged on this line of its output, or None."""
    match = PROGRESS_LINE.search(line)
    return match and Progress(int(match[1]), int(match[2]), match[3], float(match[4]))


class BudgetMixin:
    """Mix in before an nnUNetTrainer subclass. The budget is data: `budget_iterations` training
    iterations in epochs of `budget_iterations_per_epoch`, or, when `time_budget_s` is set (class
    attribute or the `nnUNet_dino_budget_seconds` environment variable), that many seconds."""

    budget_iterations: int = 800
    budget_iterations_per_epoch: int = 50
    budget_val_iterations_per_epoch: int = 2
    time_budget_s: Optional[float] = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        seconds = os.environ.get(BUDGET_SECONDS_ENV_VAR, "").strip()
        if seconds:
            self.time_budget_s = float(seconds)
        if self.time_budget_s is not None:
            self.num_epochs = 10_000  # an upper bound until the first epoch is timed
        else:
            self.num_epochs = math.ceil(self.budget_iterations / self.budget_iterations_per_epoch)
        self.num_iterations_per_epoch = self.budget_iterations_per_epoch
        self.num_val_iterations_per_epoch = self.budget_val_iterations_per_epoch

    def _run_epoch(self) -> None:  # the body of nnUNetTrainer.run_training's loop, unchanged
        self.on_epoch_start()
        self.on_train_epoch_start()
        outputs = [self.train_step(next(self.dataloader_train)) for _ in range(self.num_iterations_per_epoch)]
        self.on_train_epoch_end(outputs)
        with torch.no_grad():
            self.on_validation_epoch_start()
            outputs = [self.validation_step(next(self.dataloader_val)) for _ in range(self.num_val_iterations_per_epoch)]
            self.on_validation_epoch_end(outputs)
        self.on_epoch_end()

    def _fit_epochs_to_budget(self, epochs: int) -> None:
        epochs = max(self.current_epoch, epochs)
        self.num_epochs = epochs
        for attr in ("num_epochs", "max_steps"):  # ours (EpochLRSchedule) and nnU-Net's PolyLRScheduler
            if hasattr(self.lr_scheduler, attr):
                setattr(self.lr_scheduler, attr, epochs)

    def _log_progress(self, done: float, total: float, unit: str, seconds: float) -> None:
        self.print_to_log_file(f"{PROGRESS_PREFIX} {done:.0f}/{total:.0f} {unit}, {seconds:.1f} s")

    def run_training(self):
        self.on_train_start()
        if self.time_budget_s is not None:
            self._train_for_seconds()
        else:
            self._train_for_iterations()
        self.on_train_end()

    def _train_for_iterations(self) -> None:
        """Exactly `budget_iterations` training steps, whatever the clock says."""
        total, per_epoch = self.budget_iterations, self.budget_iterations_per_epoch
        self._fit_epochs_to_budget(math.ceil(total / per_epoch))
        done, start = min(self.current_epoch * per_epoch, total), time.monotonic()
        while done < total:
            self.num_iterations_per_epoch = min(per_epoch, total - done)
            self._run_epoch()
            done += self.num_iterations_per_epoch
            self._log_progress(done, total, "iterations", time.monotonic() - start)
        self.num_iterations_per_epoch = per_epoch

    def _train_for_seconds(self) -> None:
        start, epoch_times = time.monotonic(), []
        while self.current_epoch < self.num_epochs:
            began = time.monotonic()
            self._run_epoch()
            epoch_times.append(time.monotonic() - began)
            elapsed = time.monotonic() - start
            self._log_progress(min(elapsed, self.time_budget_s), self.time_budget_s, "s", elapsed)
            recent = statistics.median(epoch_times[-RECENT_EPOCHS:])
            if elapsed + recent > self.time_budget_s:  # the budget is a hard limit: the next epoch would not fit
                self.print_to_log_file(f"time budget {self.time_budget_s:.0f} s reached after "
                                       f"{len(epoch_times)} epochs ({elapsed:.0f} s)")
                self._fit_epochs_to_budget(self.current_epoch)  # the schedule and the logs end here
                break
            fitted = self.current_epoch + math.floor((self.time_budget_s - elapsed) / max(recent, 1e-6))
            if len(epoch_times) == 1:
                self.print_to_log_file(f"time budget {self.time_budget_s:.0f} s: {recent:.1f} s per epoch so far "
                                       f"-> about {fitted} epochs of {self.num_iterations_per_epoch} iterations "
                                       f"(refitted after every epoch)")
            self._fit_epochs_to_budget(fitted)
