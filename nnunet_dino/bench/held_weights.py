"""Frozen weights held in their compute dtype against fp32 weights cast by autocast at every call: the bf16
frozen encoder's forward time on the CPU, the share of it spent casting, and the memory its weights take.

    python -m nnunet_dino.bench.held_weights [--backbone dinov3_vits16] [--sizes 224 448] [--batch 1]
                                             [--repeats 20] [--threads 1]

The encoder is randomly initialised (RANDOM backbone: timing and memory do not depend on the values). Both
variants run as the networks run them on a bf16 CPU (no grad, CPU bf16 autocast), in one process,
repetitions taken in turn so that the machine's load affects both alike; medians are printed. Memory: each
variant in a fresh process, resident set after three forwards over the one after the imports.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List

import torch

from ..backbones import get_backbone_spec
from ..backbones.frozen import FrozenDinoBackbone, held_tensors

VARIANTS = {"cast": False, "held": True}  # name -> hold_low_precision_weights
LABELS = {"cast": "fp32 weights, cast by autocast (before)", "held": "weights held in bf16 (after)"}


def build(backbone: str, hold: bool) -> FrozenDinoBackbone:
    torch.manual_seed(0)
    encoder = FrozenDinoBackbone(get_backbone_spec(backbone)).eval()
    encoder.cpu_autocast_dtype = torch.bfloat16  # what a network with cpu_precision bf16 tells its encoder
    encoder.hold_low_precision_weights = hold
    return encoder


def encode(encoder: FrozenDinoBackbone, x: torch.Tensor):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # the network's CPU autocast
        return encoder(x)


def cast_share(encoder: FrozenDinoBackbone, x: torch.Tensor) -> float:
    """Share of one forward's CPU time spent in dtype conversions (aten::_to_copy and what it calls)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        encode(encoder, x)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    casts = sum(e.cpu_time_total for e in events if e.key == "aten::_to_copy")
    return casts / total if total else 0.0


def cast_ms(encoder: FrozenDinoBackbone, repeats: int) -> float:
    """Median time of casting the fp32 held tensors to bf16 once: what autocast paid at every call."""
    tensors = [p.detach() for p in held_tensors(encoder.vit)]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for t in tensors:
            t.to(torch.bfloat16)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def timings(args) -> Dict[str, Dict[str, float]]:
    encoders = {name: build(args.backbone, hold) for name, hold in VARIANTS.items()}
    results = {"casts_once_ms": cast_ms(encoders["cast"], args.repeats)}
    for size in args.sizes:
        x = torch.randn(args.batch, 3, size, size)
        outputs = {name: encode(e, x) for name, e in encoders.items()}  # also the warm-up (and the conversion)
        same = all(torch.equal(a, b) for a, b in zip(outputs["cast"], outputs["held"]))
        times: Dict[str, List[float]] = {name: [] for name in encoders}
        for repeat in range(args.repeats):
            order = list(encoders) if repeat % 2 == 0 else list(reversed(encoders))
            for name in order:
                start = time.perf_counter()
                encode(encoders[name], x)
                times[name].append(time.perf_counter() - start)
        row = {f"{name}_ms": 1000 * statistics.median(t) for name, t in times.items()}
        row.update({f"{name}_cast_share": cast_share(e, x) for name, e in encoders.items()})
        row["held_over_cast"] = row["held_ms"] / row["cast_ms"]
        row["outputs_identical"] = same
        results[str(size)] = row
    return results


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_child(backbone: str, hold: bool, size: int) -> dict:
    torch.set_num_threads(1)
    x = torch.randn(1, 3, size, size)
    gc.collect()
    base = rss_bytes()
    encoder = build(backbone, hold)
    for _ in range(3):
        encode(encoder, x)
    gc.collect()
    held = list(held_tensors(encoder.vit))
    tensors = list(encoder.parameters()) + list(encoder.buffers())
    return {"rss_over_imports_MB": (rss_bytes() - base) / 2**20,
            "weights_MB": sum(t.untyped_storage().nbytes() for t in tensors) / 2**20,
            "held_tensors_dtype": str(held[0].dtype)}


def memory(args) -> Dict[str, dict]:
    out = {}
    for name, hold in VARIANTS.items():
        command = [sys.executable, "-m", "nnunet_dino.bench.held_weights", "--memory-child", name,
                   "--backbone", args.backbone, "--sizes", str(args.sizes[0])]
        out[name] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="dinov3_vits16")
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 448], help="square image sizes (224 448)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--memory-child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(args.backbone, VARIANTS[args.memory_child], args.sizes[0])))
        return 0
    torch.set_num_threads(args.threads)
    print(f"{args.backbone} (RANDOM backbone), bf16 frozen forward on the CPU, batch {args.batch}, "
          f"{args.threads} thread(s), median of {args.repeats} (taken in turn)")
    results = timings(args)
    print(f"  casting the frozen linears' fp32 weights to bf16 once: {results.pop('casts_once_ms'):.1f} ms")
    for size, row in results.items():
        print(f"  {size}²: {LABELS['cast']} {row['cast_ms']:.1f} ms (casts {100 * row['cast_cast_share']:.0f} %), "
              f"{LABELS['held']} {row['held_ms']:.1f} ms (casts {100 * row['held_cast_share']:.0f} %): "
              f"x{row['held_over_cast']:.2f}; outputs identical: {row['outputs_identical']}")
    for name, row in memory(args).items():
        print(f"  memory, {LABELS[name]}: weights {row['weights_MB']:.1f} MB ({row['held_tensors_dtype']} linears), "
              f"resident after 3 forwards {row['rss_over_imports_MB']:.1f} MB over the imports")
    return 0


if __name__ == "__main__":
    sys.exit(main())
