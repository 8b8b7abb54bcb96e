"""Torch's CPU threads: no more than the cores this process may run on.

On the CPU, nnUNetv2_train and nnUNetv2_predict give torch `multiprocessing.cpu_count()` threads: every core
of the machine, also where the process may run on only some of them (taskset, a SLURM job's or a
container's cpuset). Threads beyond the usable cores wait on each other at every parallel region: a Dino U-Net
training step pinned to one core took five times as long with two threads as with one. The plugin's trainers
and networks cap the count at the usable cores; a lower count that a user chose stays."""
from __future__ import annotations

import os

import torch


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask), or the machine's where there is none."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no affinity masks on macOS and Windows
        return os.cpu_count() or 1


def cap_torch_threads() -> None:
    """At most one torch thread per usable core."""
    cores = usable_cores()
    if torch.get_num_threads() > cores:
        torch.set_num_threads(cores)
