"""`nnunet-dino bench --slices K`: each family in 2.5d (slabs of K slices) against itself in 2d.

Same trainer, same in-plane patch and the same slices per training step (2d batch = K x the slab
batch): nnU-Net's `train_step` time, and nnU-Net's sliding-window prediction of one synthetic volume
(Z slices, Gaussian, step 0.5, mirroring as the trainer allows it at inference: the in-plane axes in
both). Ratios 2.5d / 2d per step (= per slice trained on) and per volume, and per slice the network
saw in prediction (a slab tile is K slices; tiles overlap along z). Backbones are random (seeded).
"""
from __future__ import annotations

import contextlib
import statistics
from typing import Dict, Sequence

import torch

from ..plans.slab import SLAB_CONFIGURATION, slab_configuration
from ..training.slab import SLAB_INFERENCE_MIRROR_AXES
from .contenders import bench_plans, build_contender, set_inference_mode, train_step
from .measure import timed_round_robin
from .run import _log, backbone_label, machine_info
from .settings import FAMILIES, FAMILY_NAMES, MIRROR_AXES_2D, BenchSettings
from .report import _table

def slab_plans(settings: BenchSettings, slices: int):
    """(plans manager, 2d configuration, 2.5d configuration, dataset.json) of the bench plans."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    pm, _, dataset_json = bench_plans(settings.patch, settings.batch * slices, settings.input_channels,
                                      settings.num_classes)
    plans = pm.plans
    fingerprint = {"spacings": [[1.0, 1.0, 1.0]], "shapes_after_crop": [[slices, *settings.case_size]]}
    plans["configurations"][SLAB_CONFIGURATION] = slab_configuration(plans, slices, "/nonexistent", fingerprint)
    manager = PlansManager(plans)
    return manager, manager.get_configuration("2d"), manager.get_configuration(SLAB_CONFIGURATION), dataset_json


def _prediction(c, pm, cm, dataset_json, volume: torch.Tensor, axes: Sequence[int]):
    """nnU-Net's sliding window on `volume` (C, Z, H, W); returns (call, slices the network sees)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    set_inference_mode(c)
    with contextlib.redirect_stdout(None):
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                    perform_everything_on_device=c.device.type == "cuda", device=c.device,
                                    verbose=False, allow_tqdm=False)
    predictor.manual_initialization(c.network, pm, cm, None, dataset_json, c.trainer.__name__, tuple(axes))
    tiles = len(predictor._internal_get_sliding_window_slicers(tuple(volume.shape[1:])))
    per_tile = cm.patch_size[0] if len(cm.patch_size) == 3 else 1
    return (lambda: predictor.predict_sliding_window_return_logits(volume)), tiles * per_tile * 2 ** len(axes)


def run_slab_benchmark(settings: BenchSettings, slices: int, depth: int) -> dict:
    torch.manual_seed(0)
    pm, flat_cm, slab_cm, dataset_json = slab_plans(settings, slices)
    volume = torch.randn(settings.input_channels, depth, *settings.case_size)
    calls, predictions, seen, labels = {}, {}, {}, {}
    for key in settings.families:
        trainer = FAMILIES[key][0]
        for configuration, cm, batch, axes in (("2d", flat_cm, settings.batch * slices, MIRROR_AXES_2D),
                                               ("2.5d", slab_cm, settings.batch, SLAB_INFERENCE_MIRROR_AXES)):
            c = build_contender(key, trainer, settings, (pm, cm, dataset_json), batch=batch)
            calls[key, configuration] = lambda c=c: train_step(c)
            predictions[key, configuration], seen[key, configuration] = _prediction(c, pm, cm, dataset_json,
                                                                                   volume, axes)
        labels[key] = f"{FAMILY_NAMES[key]} {backbone_label(c.network.backbone.spec.name)}"
    _log("train steps")
    steps = timed_round_robin(calls, settings.repeats, settings.warmup, torch.device(settings.device))
    _log("sliding-window prediction")
    predicted = timed_round_robin(predictions, settings.predict_repeats, 0, torch.device(settings.device))
    rows: Dict[str, dict] = {}
    for key in settings.families:
        step = {cfg: statistics.median(steps[key, cfg]) for cfg in ("2d", "2.5d")}
        volume_s = {cfg: statistics.median(predicted[key, cfg]) for cfg in ("2d", "2.5d")}
        rows[key] = {"label": labels[key], "step_s": step, "predict_s": volume_s,
                     "slices_seen": {cfg: seen[key, cfg] for cfg in ("2d", "2.5d")},
                     "step_ratio": step["2.5d"] / step["2d"], "predict_ratio": volume_s["2.5d"] / volume_s["2d"],
                     "predict_ratio_per_slice_seen": (volume_s["2.5d"] / seen[key, "2.5d"])
                     / (volume_s["2d"] / seen[key, "2d"])}
    return {"machine": machine_info(torch.device(settings.device)), "slices": slices, "depth": depth,
            "patch": list(flat_cm.patch_size), "batch_2d": settings.batch * slices, "batch_2_5d": settings.batch,
            "case": [depth, *settings.case_size], "models": rows}


def format_slab_report(results: dict) -> str:
    m = results["machine"]
    head = (f"machine: {m['cpu']}, {m['threads']} threads, torch {m['torch']}; RANDOM backbones. Slabs of "
            f"{results['slices']} slices, patch {results['patch']}, batch {results['batch_2d']} slices per step in "
            f"both (2d batch {results['batch_2d']}, 2.5d batch {results['batch_2_5d']}); prediction of one "
            f"{results['case']} volume (in-plane mirroring)")
    rows = [[r["label"], f"{1e3 * r['step_s']['2d']:.0f}", f"{1e3 * r['step_s']['2.5d']:.0f}", f"{r['step_ratio']:.2f}",
             f"{r['predict_s']['2d']:.2f}", f"{r['predict_s']['2.5d']:.2f}", f"{r['predict_ratio']:.2f}",
             f"{r['slices_seen']['2d']} / {r['slices_seen']['2.5d']}", f"{r['predict_ratio_per_slice_seen']:.2f}"]
            for r in results["models"].values()]
    return head + "\n\n" + _table(["model", "2d step ms", "2.5d step ms", "step 2.5d / 2d (same slices)",
                                   "2d s/volume", "2.5d s/volume", "volume 2.5d / 2d", "slices seen 2d / 2.5d",
                                   "per slice seen 2.5d / 2d"], rows)
