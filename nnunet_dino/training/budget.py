"""Training for a wall-clock budget instead of a number of epochs (the demo compares methods at an
equal CPU budget, which is what a user with one machine and one afternoon cares about).

nnU-Net fixes the epoch loop at `range(current_epoch, num_epochs)` when training starts, so the
loop is restated here with one change: after the first epoch, the number of epochs is set to what
fits the budget (and the LR schedule is stretched to it, so poly decay still ends at the budget).
"""
from __future__ import annotations

import math
import time

import torch


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

    def _fit_epochs_to_budget(self, seconds_per_epoch: float) -> None:
        epochs = max(self.current_epoch, math.floor(self.time_budget_s / max(seconds_per_epoch, 1e-6)))
        self.num_epochs = epochs
        for attr in ("num_epochs", "max_steps"):  # ours (EpochLRSchedule) and nnU-Net's PolyLRScheduler
            if hasattr(self.lr_scheduler, attr):
                setattr(self.lr_scheduler, attr, epochs)
        self.print_to_log_file(f"time budget {self.time_budget_s:.0f} s: {seconds_per_epoch:.1f} s per epoch "
                               f"-> {epochs} epochs of {self.num_iterations_per_epoch} iterations")

    def run_training(self):
        self.on_train_start()
        start, first_epoch = time.monotonic(), self.current_epoch
        while self.current_epoch < self.num_epochs:
            self._run_epoch()
            elapsed, done = time.monotonic() - start, self.current_epoch - first_epoch
            if done == 1:
                self._fit_epochs_to_budget(elapsed)
            elif elapsed + elapsed / done > self.time_budget_s:  # the budget is a hard limit: the next
                self.print_to_log_file(f"time budget reached after {done} epochs")  # epoch would not fit
                break
        self.on_train_end()
