"""Learning-rate schedules stepped per epoch, as nnU-Net does (`lr_scheduler.step(epoch)`)."""
from __future__ import annotations

from torch.optim.lr_scheduler import _LRScheduler


class EpochLRSchedule(_LRScheduler):
    """Linear warm-up over `warmup_epochs`, then 'poly' (nnU-Net's (1 - e/E)^0.9) or 'constant'. A group's
    `lr_scale` (an adapted encoder's layer groups) multiplies its rate."""

    def __init__(self, optimizer, initial_lr: float, num_epochs: int, kind: str = "poly",
                 warmup_epochs: int = 0, exponent: float = 0.9):
        if kind not in ("poly", "constant"):
            raise ValueError(f"lr schedule must be 'poly' or 'constant', got {kind!r}")
        self.initial_lr, self.num_epochs, self.kind = initial_lr, num_epochs, kind
        self.warmup_epochs, self.exponent, self.ctr = warmup_epochs, exponent, 0
        super().__init__(optimizer, -1)

    def lr_at(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return self.initial_lr * (epoch + 1) / (self.warmup_epochs + 1)
        if self.kind == "constant":
            return self.initial_lr
        return self.initial_lr * (1 - epoch / self.num_epochs) ** self.exponent

    def step(self, current_step=None):
        if current_step is None or current_step == -1:
            current_step, self.ctr = self.ctr, self.ctr + 1
        lr = self.lr_at(current_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"] if "lr_scale" in group else lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self):
        return self._last_lr
