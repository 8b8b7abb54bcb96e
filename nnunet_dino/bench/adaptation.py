"""`nnunet-dino bench --adaptation`: each family at its smallest size, once per encoder adaptation.

Rows: frozen (the paper trainer), LoRA and full fine-tuning as the `_LoRA` / `_FT` trainers declare them
(the FT row measured after its warm-up, with the encoder training), and last_k with the last 4 blocks.
Figures: the train step (nnU-Net's `train_step`, timed round-robin over the modes), peak training memory
(a fresh child process per row), trainable parameters, and the slim checkpoint nnU-Net writes (weights
the adaptation changed + optimiser state). Eager, random backbone weights.
"""
from __future__ import annotations

import dataclasses
import gc
import statistics
import tempfile
from typing import Dict

import torch

from ..backbones.adaptation import Adaptation
from .contenders import bench_plans, build_contender, train_step
from .measure import checkpoint_sizes, memory_in_children, timed_round_robin
from .report import _table
from .settings import FAMILIES, FAMILY_NAMES, BenchSettings


def adaptation_modes() -> Dict[str, Adaptation]:
    from ..training.trainers import FINE_TUNE, LORA
    return {"frozen": Adaptation(), "lora": LORA, "last_k": Adaptation("last_k", last_k=4),
            "full": dataclasses.replace(FINE_TUNE, warmup_epochs=0)}


def run_adaptation_bench(settings: BenchSettings) -> dict:
    from ..networks.base import count_parameters
    device = torch.device(settings.device)
    torch.manual_seed(0)
    plans = bench_plans(settings.patch, settings.batch, settings.input_channels, settings.num_classes)
    modes = {name: adaptation.to_record() for name, adaptation in adaptation_modes().items()}
    rows = []
    with tempfile.TemporaryDirectory(prefix="nnunet_dino_bench_") as folder:
        for key in settings.families:
            trainer = FAMILIES[key][0]
            contenders = {mode: build_contender(key, trainer, settings, plans, adaptation=record)
                          for mode, record in modes.items()}
            times = timed_round_robin({m: (lambda c=c: train_step(c)) for m, c in contenders.items()},
                                      settings.repeats, settings.warmup, device)
            for mode, c in contenders.items():
                trainable, total = count_parameters(c.network)
                rows.append({"family": FAMILY_NAMES[key], "trainer": trainer, "backbone": c.network.backbone.spec.name,
                             "mode": mode, "adaptation": modes[mode], "trainable": trainable, "total": total,
                             "step_s": statistics.median(times[mode]), "step_times_s": times[mode],
                             "checkpoint_bytes": checkpoint_sizes(c, folder)["slim_bytes"]})
            del contenders
            gc.collect()
            for row in rows[-len(modes):]:
                memory = memory_in_children(key, trainer, settings, row["adaptation"], phases=("train",))
                row["train_memory"] = memory["train"]
    return {"settings": dataclasses.asdict(settings), "planned_patch": list(plans[1].patch_size),
            "threads": torch.get_num_threads(), "backbone_weights": "random", "rows": rows}


def format_adaptation_report(results: dict) -> str:
    mb = 1024 ** 2
    s = results["settings"]
    table = _table(["family", "backbone", "encoder", "params M train/total", "step ms", "train mem MB", "ckpt MB"],
                   [[r["family"], r["backbone"], r["mode"], f"{r['trainable'] / 1e6:.2f} / {r['total'] / 1e6:.2f}",
                     f"{1000 * r['step_s']:.0f}", f"{r['train_memory']['delta_bytes'] / mb:.0f}",
                     f"{r['checkpoint_bytes'] / mb:.1f}"] for r in results["rows"]])
    return (f"device {s['device']}, patch {results['planned_patch'][0]}x{results['planned_patch'][1]}, batch "
            f"{s['batch']}, {results['threads']} thread(s), medians of {s['repeats']} after {s['warmup']} warm-up; "
            f"RANDOM backbone weights; eager\n{table}\n"
            f"train mem: {results['rows'][0]['train_memory']['measure']} over the baseline after imports, two steps "
            f"in a fresh process; ckpt: the slim checkpoint nnU-Net writes (adapted weights + optimiser state)")
