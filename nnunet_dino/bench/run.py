"""One benchmark run: every model measured in turn, ratios against nnUNetTrainer, goals."""
from __future__ import annotations

import contextlib
import gc
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from typing import Dict, List, Sequence

import torch

from .settings import BenchSettings, FAMILIES, FAMILY_NAMES, GOALS, MATMUL_SIZE, MIRROR_AXES_2D
from .contenders import (Contender, bench_plans, build_contender, plugin_cpu_bf16, set_inference_mode, step_autocast,
                         train_step)
from .measure import (checkpoint_sizes, count_flops, frozen_backbone_call, init_optimizer_state, matmul_call,
                      memory_in_children, sliding_window_call, timed_round_robin)

# --- the run -----------------------------------------------------------------------------------------
def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    info = {"cpu": cpu, "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # ATen's kernels: AVX2, AVX512..
            "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version(), "platform": platform.platform(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def backbone_label(name: str) -> str:
    """'dinov3_vits16' -> 'ViT-S/16'."""
    match = re.search(r"vit(\w+?)(\d+)", name)
    return f"ViT-{match.group(1).upper()}/{match.group(2)}" if match else name


_STARTED = time.perf_counter()


def _log(message: str) -> None:
    print(f"[bench {time.perf_counter() - _STARTED:6.1f} s] {message}", file=sys.stderr, flush=True)


def _summary(times: List[float]) -> dict:
    return {"times_s": times, "median_s": statistics.median(times)}


def measure_models(keys: Sequence[str], settings: BenchSettings, plans, folder: str) -> Dict[str, dict]:
    """Every in-process figure of every model, each phase round-robin over the models."""
    from ..networks.base import count_parameters
    device = torch.device(settings.device)
    trainers = {key: "nnUNetTrainer" if key == "nnunet" else FAMILIES[key][0] for key in keys}
    contenders = {key: build_contender(key, trainers[key], settings, plans) for key in keys}
    results = {}
    for key, c in contenders.items():
        trainable, total = count_parameters(c.network)
        label = FAMILY_NAMES[key] + (f" {backbone_label(c.network.backbone.spec.name)}" if c.dino
                                     else " (PlainConvUNet)")
        results[key] = {"label": label, "trainer": trainers[key], "network": type(c.network).__name__,
                        "backbone": c.network.backbone.spec.name if c.dino else None,
                        "optimizer": type(c.optimizer).__name__, "loss": type(c.host.loss).__name__,
                        "params": {"trainable": trainable, "total": total}}

    _log("train steps")
    times = timed_round_robin({k: (lambda c=c: train_step(c)) for k, c in contenders.items()},
                              settings.repeats, settings.warmup, device)
    for key, c in contenders.items():
        results[key]["train_step"] = _summary(times[key])
        results[key]["checkpoint"] = checkpoint_sizes(c, folder)

    _log("inference forwards (batch 1)")

    def forward(c: Contender):
        with torch.no_grad(), step_autocast(device):
            return c.network(c.data[:1])
    for c in contenders.values():
        set_inference_mode(c)
    times = timed_round_robin({k: (lambda c=c: forward(c)) for k, c in contenders.items()},
                              settings.repeats, settings.warmup, device)
    for key in contenders:
        results[key]["inference"] = dict(_summary(times[key]), batch=1,
                                         tiles_per_s=1.0 / statistics.median(times[key]))

    _log("frozen backbones alone, and the matmul ceiling")
    matmul, matmul_flops, dtype = matmul_call(device, device.type == "cuda" or plugin_cpu_bf16(settings))
    backbones = {k: frozen_backbone_call(c) for k, c in contenders.items() if c.dino}
    times = timed_round_robin({"matmul": matmul, **backbones}, settings.repeats, max(1, settings.warmup), device)
    matmul_gflops = matmul_flops / statistics.median(times["matmul"]) / 1e9
    for key in contenders:
        results[key]["backbone_forward"] = None
    for key, call in backbones.items():
        flops, median = count_flops(call), statistics.median(times[key])
        results[key]["backbone_forward"] = dict(
            _summary(times[key]), share_of_train_step=median / results[key]["train_step"]["median_s"],
            gflop=flops / 1e9, gflops=flops / median / 1e9, matmul_gflops=matmul_gflops, matmul_dtype=dtype,
            gflops_over_matmul=flops / median / 1e9 / matmul_gflops)

    _log("sliding-window prediction")
    calls, tiles = {}, {}
    for key, c in contenders.items():
        calls[key], tiles[key] = sliding_window_call(c, plans, settings)
    times = timed_round_robin(calls, settings.predict_repeats, 0, device)
    for key in contenders:
        results[key]["prediction"] = dict(
            _summary(times[key]), case_shape=[settings.input_channels, 1, *settings.case_size], tiles=tiles[key],
            forwards=tiles[key] * 2 ** len(MIRROR_AXES_2D))
    del contenders, calls, backbones
    gc.collect()

    for key in keys:
        _log(f"{results[key]['label']}: peak memory (child processes)")
        memory = memory_in_children(key, trainers[key], settings)
        results[key]["memory"] = {"measure": memory["train"]["measure"], "batch": settings.batch, **memory,
                                  "train_over_inference": memory["train"]["delta_bytes"]
                                  / memory["inference"]["delta_bytes"]}
    return results


def vit_b_checkpoint(key: str, trainer_name: str, settings: BenchSettings, plans, folder: str) -> dict:
    _log(f"{FAMILY_NAMES[key]} ViT-B: checkpoint sizes")
    c = build_contender(key, trainer_name, settings, plans, batch=1)
    init_optimizer_state(c)
    sizes = checkpoint_sizes(c, folder)
    sizes.update(trainer=trainer_name, backbone=c.network.backbone.spec.name)
    del c
    gc.collect()
    return sizes


def add_ratios(models: Dict[str, dict]) -> None:
    """Each model's figures over nnUNetTrainer's (and its own slim/full, train/inference)."""
    base = models["nnunet"]
    for result in models.values():
        ckpt = result["checkpoint"]
        backbone = result["backbone_forward"]
        vit_b = result.get("checkpoint_vit_b")
        result["ratios"] = {
            "step": result["train_step"]["median_s"] / base["train_step"]["median_s"],
            "prediction": result["prediction"]["median_s"] / base["prediction"]["median_s"],
            "inference_tiles_per_s": result["inference"]["tiles_per_s"] / base["inference"]["tiles_per_s"],
            "checkpoint": (ckpt["slim_bytes"] or ckpt["full_bytes"]) / base["checkpoint"]["full_bytes"],
            "memory_train_over_inference": result["memory"]["train_over_inference"],
            "backbone_share": backbone["share_of_train_step"] if backbone else None,
            "backbone_gflops_over_matmul": backbone["gflops_over_matmul"] if backbone else None,
            "checkpoint_vit_b_slim_over_full": vit_b["slim_over_full"] if vit_b else None,
        }


def evaluate_goals(models: Dict[str, dict]) -> List[dict]:
    verdicts = []
    for figure, ratio, targets, op in GOALS:
        for family, target in targets.items():
            if family not in models:
                continue
            value = models[family]["ratios"][ratio]
            met = None if value is None else (value <= target if op == "<=" else value >= target)
            verdicts.append({"figure": figure, "family": family, "value": value, "goal": f"{op} {target}",
                             "met": met})
    return verdicts


def run_benchmark(settings: BenchSettings) -> dict:
    started = time.perf_counter()
    load_at_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    device = torch.device(settings.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as nnU-Net's trainer and predictor
    torch.manual_seed(0)
    plans = bench_plans(settings.patch, settings.batch, settings.input_channels, settings.num_classes)
    patch = tuple(plans[1].patch_size)
    settings_out = dict(asdict(settings), planned_patch=list(patch), case=list(settings.case_size),
                        execution="eager (no torch.compile)", timing="round-robin over the models",
                        autocast=("fp16 step autocast + bf16 backbone on CUDA" if device.type == "cuda" else
                                  "nnUNetTrainer fp32; plugin networks "
                                  + ("bf16 autocast" if plugin_cpu_bf16(settings) else "fp32")
                                  + f" (cpu_precision={settings.cpu_precision})"))
    with tempfile.TemporaryDirectory(prefix="nnunet_dino_bench_") as folder:
        models = measure_models(("nnunet", *settings.families), settings, plans, folder)
        for key in models:
            models[key]["checkpoint_vit_b"] = None
        if settings.vit_b:
            for key in settings.families:
                models[key]["checkpoint_vit_b"] = vit_b_checkpoint(key, FAMILIES[key][1], settings, plans, folder)
    add_ratios(models)
    bb = next((m["backbone_forward"] for m in models.values() if m["backbone_forward"]), None)
    machine = machine_info(device)
    machine["load_average_at_start"] = load_at_start
    return {"machine": machine, "settings": settings_out,
            "matmul": {"n": MATMUL_SIZE[device.type], "gflops": bb and bb["matmul_gflops"],
                       "dtype": bb and bb["matmul_dtype"],
                       "note": "timed round-robin with the backbone forwards"},
            "models": models, "goals": evaluate_goals(models), "elapsed_s": time.perf_counter() - started}
