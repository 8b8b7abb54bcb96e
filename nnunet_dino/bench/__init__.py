"""`nnunet-dino bench`: nnU-Net's 2D PlainConvUNet and every plugin family side by side.

One process, one machine, one patch and batch for all: train step time (nnU-Net's `train_step`:
forward, loss, backward, gradient clipping, optimiser step), inference tiles per second (batch 1, as
nnU-Net's predictor feeds its tiles), peak memory in training and inference (each in a fresh child
process: the RSS high-water mark on CPU is monotonic; the allocator peak on CUDA), parameters, the
frozen backbone's share of the step and its achieved GFLOP/s over a measured matmul ceiling,
checkpoint size on disk (slim vs self-contained, also for ViT-B), and nnU-Net's own sliding-window
prediction of one synthetic case. Medians over repetitions after warm-up, the repetitions of all
models taken in turn, so ratios against `nnUNetTrainer` stay meaningful when the machine's load
changes during the run (CPU timings still suffer when other jobs oversubscribe the cores: the load
average at start and end is reported). No goal is asserted.

Precision: every model as its trainer runs it -- nnUNetTrainer with nnU-Net's fp16 step autocast on
CUDA and fp32 on a CPU; the plugin networks under the same CUDA autocast (the backbone by
FrozenDinoBackbone's precision rule) and, on a CPU, with their `cpu_precision` (default auto: bf16
autocast where the CPU has native bf16).
`--cpu-precision fp32` compares like for like; the matmul ceiling is measured in the backbone's dtype.

Networks, optimisers and the loss come from the trainer classes' own hooks
(`build_network_architecture`, `configure_optimizers`, `_build_loss`), run on a stand-in that carries
just what those hooks read, so no dataset or results folder is needed.
"""

from .contenders import bench_plans
from .report import format_report, write_json
from .run import run_benchmark
from .settings import FAMILIES, GOALS, BenchSettings

__all__ = ["BenchSettings", "FAMILIES", "GOALS", "bench_plans", "format_report", "run_benchmark", "write_json"]
