"""Training for a wall-clock budget instead of a number of epochs (the demo compares methods at an
equal CPU budget, which is what a user with one machine and one afternoon cares about).

nnU-Net fixes the epoch loop at `range(current_epoch, num_epochs)` when training starts, so the
loop is restated here with one change: after every epoch, the number of epochs is refitted to what
still fits the budget at the recent epoch time (and the LR schedule is stretched to it, so poly
decay still ends at the budget). Refitting, rather than trusting the first epoch, matters: first
epochs run slow (kernel selection for each new shape, data-loader start-up; measured 10 s then
2.6 s per epoch for U-DFA-S under CPU bf16), and one slow epoch would waste most of the budget.
"""
from __future__ import annotations

import math
import statistics
import time

import torch


RECENT_EPOCHS = 5  # epoch times the refit uses (median): follows a slow start, ignores a single hiccup


class TimeBudgetMixin:
    """Mix in before an nnUNetTrainer subclass; set `time_budget_s` and short epochs."""

    time_budget_s: float = 300.0
    budget_iterations_per_epoch: int = 10

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 10_000  # an upper bound until the first epoch is timed
        self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = self.budget_iterations_per_epoch, 2

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

    def run_training(self):
        self.on_train_start()
        start, epoch_times = time.monotonic(), []
        while self.current_epoch < self.num_epochs:
            began = time.monotonic()
            self._run_epoch()
            epoch_times.append(time.monotonic() - began)
            elapsed = time.monotonic() - start
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
        self.on_train_end()
