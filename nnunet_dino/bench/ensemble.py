"""`nnunet-dino bench --ensemble F`: one case predicted by an F-fold ensemble with mirroring.

Per family: nnU-Net's `nnUNetPredictor` (what `nnUNetv2_predict` runs: each fold's weights loaded and the
whole sliding window repeated, every mirror included) against `DinoPredictor` (what `nnunet-dino predict`
runs: the folds share one frozen encoder forward per tile and mirror) on the same F fold weights, and
`DinoPredictor` with F folds against itself with one. The folds share one random backbone (seeded) and
differ in perturbed adapter weights. Timed: `predict_logits_from_preprocessed_data` on one synthetic
(C, 1, H, W) case -- preprocessing and export are nnU-Net's own in both commands and left out.
"""
from __future__ import annotations

import contextlib
import statistics
from typing import Dict, List

import torch

from .contenders import bench_plans, build_contender, set_inference_mode
from .measure import timed_round_robin
from .report import _table
from .run import _log, backbone_label, machine_info
from .settings import FAMILIES, FAMILY_NAMES, MIRROR_AXES_2D, BenchSettings

#: the goals of the ensemble rows: (figure, key in a row, family -> target)
ENSEMBLE_GOALS = (("predict / nnUNetv2_predict", "over_nnunet", {"segdino": 0.3, "dinounet": 0.6, "udfa": 0.9}),
                  ("F folds / 1 fold", "folds_over_one", {"segdino": 1.6}))


def fold_states(network, folds: int) -> List[dict]:
    """`folds` slim state dicts of `network`: its adapter weights moved by seeded noise per fold."""
    states = []
    for fold in range(folds):
        gen = torch.Generator().manual_seed(fold)
        with network.slim_state_dict():
            state = network.state_dict()
        states.append({k: v + 0.01 * torch.randn(v.shape, generator=gen).to(v) if not k.startswith("backbone.")
                       and isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in state.items()})
    return states


def _predictor(cls, network, plans, states, trainer_name: str, device: torch.device, **options):
    pm, cm, dataset_json = plans
    with contextlib.redirect_stdout(None):  # nnU-Net announces that CPUs keep results off the device
        predictor = cls(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                        perform_everything_on_device=device.type == "cuda", device=device, verbose=False,
                        allow_tqdm=False, **options)
        predictor.manual_initialization(network, pm, cm, states, dataset_json, trainer_name, MIRROR_AXES_2D)
    return predictor


def run_ensemble_bench(settings: BenchSettings, folds: int = 5) -> dict:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from ..prediction import DinoPredictor
    device = torch.device(settings.device)
    torch.manual_seed(0)
    plans = bench_plans(settings.patch, settings.batch, settings.input_channels, settings.num_classes)
    case = torch.randn(settings.input_channels, 1, *settings.case_size)
    calls, rows, tiles = {}, {}, None
    for key in settings.families:
        trainer = FAMILIES[key][0]
        c = build_contender(key, trainer, settings, plans, batch=1)
        set_inference_mode(c)
        states = fold_states(c.network, folds)
        nnunet = _predictor(nnUNetPredictor, c.network, plans, states, trainer, device)
        ours = _predictor(DinoPredictor, c.network, plans, states, trainer, device)
        one = _predictor(DinoPredictor, c.network, plans, states[:1], trainer, device)
        tiles = len(ours._internal_get_sliding_window_slicers((1, *case.shape[-2:])))
        tile = torch.randn(settings.input_channels, 1, *plans[1].patch_size)
        for name, predictor in (("nnunet", nnunet), ("ours", ours), ("one", one)):
            predictor.predict_logits_from_preprocessed_data(tile)  # warm-up: one tile, every mirror and fold
            calls[key, name] = lambda p=predictor: p.predict_logits_from_preprocessed_data(case)
        rows[key] = {"label": f"{FAMILY_NAMES[key]} {backbone_label(c.network.backbone.spec.name)}",
                     "trainer": trainer, "shared": ours.sharing.shared, "tile_batch": ours.tile_batch}
    _log(f"one case, {folds} folds with mirroring: nnUNetPredictor vs DinoPredictor")
    times = timed_round_robin(calls, settings.predict_repeats, 0, device)
    for key, row in rows.items():
        median = {name: statistics.median(times[key, name]) for name in ("nnunet", "ours", "one")}
        row.update(seconds=median, over_nnunet=median["ours"] / median["nnunet"],
                   folds_over_one=median["ours"] / median["one"])
    goals = [{"figure": figure, "family": family, "value": rows[family][field], "goal": f"<= {target}",
              "met": rows[family][field] <= target}
             for figure, field, targets in ENSEMBLE_GOALS for family, target in targets.items() if family in rows]
    return {"machine": machine_info(device), "folds": folds, "case": [settings.input_channels, 1, *settings.case_size],
            "patch": list(plans[1].patch_size), "tiles": tiles, "forwards_nnunet": tiles * 4 * folds,
            "device": settings.device, "cpu_precision": settings.cpu_precision, "repeats": settings.predict_repeats,
            "models": rows, "goals": goals}


def format_ensemble_report(results: dict) -> str:
    m, folds = results["machine"], results["folds"]
    head = (f"machine: {m['cpu']}, {m['threads']} threads, torch {m['torch']}, device {results['device']}; RANDOM "
            f"backbones. One {results['case']} case, patch {results['patch']}, {results['tiles']} tiles, mirroring "
            f"(4 per tile), {folds} folds: nnUNetPredictor runs {results['forwards_nnunet']} network forwards; "
            f"median of {results['repeats']} run(s); cpu_precision {results['cpu_precision']}")
    rows = [[r["label"], "yes" if r["shared"] else "no", str(r["tile_batch"]), f"{r['seconds']['nnunet']:.2f}",
             f"{r['seconds']['ours']:.2f}", f"{r['over_nnunet']:.2f}", f"{r['seconds']['one']:.2f}",
             f"{r['folds_over_one']:.2f}"] for r in results["models"].values()]
    table = _table(["model", "encoder shared", "tile batch", f"nnUNetv2_predict s ({folds} folds)",
                    f"nnunet-dino predict s ({folds} folds)", "predict / nnUNetv2_predict",
                    "nnunet-dino predict s (1 fold)", f"{folds} folds / 1 fold"], rows)
    goals = [f"goal {g['figure']} {FAMILY_NAMES[g['family']]}: {g['value']:.2f} ({g['goal']}) "
             f"{'met' if g['met'] else 'NOT met'}" for g in results["goals"]]
    return "\n".join([head, "", table, "", *goals])
