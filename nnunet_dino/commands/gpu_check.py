"""`nnunet-dino gpu-check`: eager vs compiled AMP training, gradients, fp16 vs fp32 logits, memory,
speed and (with two GPUs) DDP for every family; a pass/fail table, exit code 1 if a check failed."""
from __future__ import annotations

import argparse
import json

import torch

from ..errors import OptionError


EXAMPLE = "example: nnunet-dino gpu-check --device cuda --json gpu_check.json"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "gpu-check", help="check the CUDA training path of every family (run it first on a GPU machine)",
        description="For SegDINO, U-DFA and Dino U-Net at their smallest size (random frozen backbones): a few "
                    "training steps eager vs torch.compile under nnU-Net's fp16 autocast + GradScaler, a gradient "
                    "for every trainable parameter, fp16 vs fp32 logits, peak memory, steps/s, and a 2-GPU DDP run "
                    "where two GPUs exist. Prints a pass/fail table; exits 1 if any check failed.", epilog=EXAMPLE)
    p.add_argument("--device", choices=("cuda", "cpu"), default=None,
                   help="default: cuda if available, else cpu")
    p.add_argument("--steps", type=int, default=5, help="training steps per run (default 5)")
    p.add_argument("--patch", type=int, nargs=2, metavar=("H", "W"), default=(256, 256),
                   help="patch size (default 256 256)")
    p.add_argument("--batch", type=int, default=2, help="batch size (default 2)")
    p.add_argument("--tiny", action="store_true", help="tiny backbones and CNNs (CPU smoke runs)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..bench.gpu_check import CheckSettings, all_passed, format_table, results_json, run_checks
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise OptionError("--device cuda, but torch sees no CUDA GPU; run on a GPU machine or pass --device cpu")
    if args.steps < 1 or args.batch < 1 or min(args.patch) < 64:
        raise OptionError("--steps and --batch must be >= 1 and --patch at least 64 64 (Dino U-Net's coarsest "
                          "level, /32, needs 2 x 2 cells)")
    settings = CheckSettings(device=device, steps=args.steps, patch=tuple(args.patch), batch=args.batch,
                             tiny=args.tiny)
    rows = run_checks(settings)
    print(format_table(rows, settings), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results_json(rows, settings), f, indent=2)
    return 0 if all_passed(rows) else 1
