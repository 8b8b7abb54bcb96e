"""`nnunet-dino bench --slices K`: each family in 2.5d (slabs of K slices) against itself in 2d.

Training: same trainer, same in-plane patch and the same slices per training step (2d batch = K x the
slab batch): nnU-Net's `train_step` time.

Prediction: the path `nnUNetv2_predict` takes. Per configuration the trainer itself is made on the bench
plans (in a temporary nnU-Net folder tree, as nnUNetv2_train makes it) and leaves a model folder as its
training does: the plans it rewrote (patch, slab record, z step), dataset.json, and `checkpoint_final.pth`
with its network (random backbone, seeded) and its own test-time mirroring axes. Then
`initialize_from_trained_model_folder` and `predict_single_npy_array` on one synthetic volume (Z slices),
step 0.5: preprocessing, sliding window with the checkpoint's mirroring, export. Through nnU-Net's
`nnUNetPredictor` (nnUNetv2_predict) and the plugin's `DinoPredictor` (nnunet-dino predict, which tiles a
slab model at its recorded z step). Ratios 2.5d / 2d per step (= per slice trained on) and per volume, and
the slices the encoder sees per volume (tiles x slices per tile x mirrors).
"""
from __future__ import annotations

import contextlib
import json
import os
import statistics
import tempfile
from typing import Dict, Iterator

import torch

from ..plans.slab import SLAB_CONFIGURATION, slab_configuration
from .contenders import bench_plans, build_contender, train_step, trainer_class
from .measure import timed_round_robin
from .report import _table
from .run import _log, backbone_label, machine_info
from .settings import FAMILIES, FAMILY_NAMES, BenchSettings

CONFIGURATIONS = ("2d", SLAB_CONFIGURATION)  # also the keys of the report's per-configuration figures
#: prediction paths: (name, predictor) -- the command that runs it
PATHS = (("nnUNetv2_predict", "nnUNetPredictor"), ("nnunet-dino predict", "DinoPredictor"))
DATASET = "Dataset000_Bench"


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


@contextlib.contextmanager
def nnunet_tree(plans: dict, dataset_json: dict) -> Iterator[str]:
    """A temporary nnU-Net folder tree holding the bench plans as a preprocessed dataset (no cases: nothing
    trains), with nnU-Net's folder variables, a random backbone and eager mode set for this process only."""
    from ..backbones.weights import RANDOM_SETTING, WEIGHTS_ENV_VAR
    with tempfile.TemporaryDirectory(prefix="nnunet_dino_bench_") as root:
        folder = os.path.join(root, "preprocessed", DATASET)
        os.makedirs(os.path.join(folder, "nnUNetPlans_2d"))
        open(os.path.join(folder, "nnUNetPlans_2d", "case.b2nd"), "wb").close()  # initialize() asks the format
        for name, content in (("nnUNetPlans.json", plans), ("dataset.json", dataset_json)):
            with open(os.path.join(folder, name), "w") as f:
                json.dump(content, f)
        settings = {"nnUNet_raw": os.path.join(root, "raw"), "nnUNet_preprocessed": os.path.join(root, "preprocessed"),
                    "nnUNet_results": os.path.join(root, "results"), WEIGHTS_ENV_VAR: RANDOM_SETTING,
                    "nnUNet_compile": "f"}
        saved = {k: os.environ.get(k) for k in settings}
        os.environ.update(settings)
        try:
            yield root
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def trained_model_folder(trainer_name: str, configuration: str, plans: dict, dataset_json: dict,
                         device: torch.device) -> str:
    """The model folder the trainer leaves in `configuration` (inside `nnunet_tree`): made as nnUNetv2_train
    makes it, initialised, its mirroring configured, plans and dataset.json saved as nnU-Net's on_train_start
    does, and its checkpoint written by its own save_checkpoint. No training step runs."""
    import copy
    trainer = trainer_class(trainer_name)(plans=dict(copy.deepcopy(plans), continue_training=False),
                                          configuration=configuration, fold=0, dataset_json=dataset_json,
                                          device=device)
    trainer.initialize()
    trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()  # sets the checkpoint's mirroring
    for name, content in (("plans.json", trainer.plans_manager.plans), ("dataset.json", dataset_json)):
        with open(os.path.join(trainer.output_folder_base, name), "w") as f:
            json.dump(content, f)
    trainer.save_checkpoint(os.path.join(trainer.output_folder, "checkpoint_final.pth"))
    return trainer.output_folder_base


def predictor_of(kind: str, model_folder: str, settings: BenchSettings):
    """The predictor a command builds for the model folder's fold 0 (step 0.5, Gaussian, mirroring on)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from ..prediction import DinoPredictor
    device = torch.device(settings.device)
    cls = {"nnUNetPredictor": nnUNetPredictor, "DinoPredictor": DinoPredictor}[kind]
    predictor = cls(tile_step_size=0.5, use_gaussian=True, use_mirroring=True, verbose=False, allow_tqdm=False,
                    perform_everything_on_device=device.type == "cuda", device=device)
    predictor.initialize_from_trained_model_folder(model_folder, (0,), "checkpoint_final.pth")
    if hasattr(predictor.network, "set_cpu_precision"):
        predictor.network.set_cpu_precision(settings.cpu_precision)
    return predictor


def encoded_slices(predictor, shape) -> int:
    """Slices the encoder sees for a case of `shape` (Z, H, W): tiles x slices per tile x mirrors."""
    patch = predictor.configuration_manager.patch_size
    per_tile = patch[0] if len(patch) == 3 else 1
    mirrors = 2 ** len(predictor.allowed_mirroring_axes or ())
    return len(predictor._internal_get_sliding_window_slicers(tuple(shape))) * per_tile * mirrors


def _prediction_calls(settings: BenchSettings, pm, dataset_json, volume) -> tuple:
    """(calls, slices seen, mirroring axes) per (family, configuration, path), through model folders."""
    calls, seen, axes = {}, {}, {}
    device = torch.device(settings.device)
    image = volume.numpy()
    with nnunet_tree(pm.plans, dataset_json), contextlib.redirect_stdout(None):  # nnU-Net's banners and logs
        for key in settings.families:
            for configuration in CONFIGURATIONS:
                folder = trained_model_folder(FAMILIES[key][0], configuration, pm.plans, dataset_json, device)
                for path, kind in PATHS:
                    predictor = predictor_of(kind, folder, settings)
                    calls[key, configuration, path] = lambda p=predictor: p.predict_single_npy_array(
                        image, {"spacing": [1.0, 1.0, 1.0]}, None, None, False)
                    seen[key, configuration, path] = encoded_slices(predictor, volume.shape[1:])
                    axes[key, configuration] = list(predictor.allowed_mirroring_axes or ())
    return calls, seen, axes


def run_slab_benchmark(settings: BenchSettings, slices: int, depth: int) -> dict:
    torch.manual_seed(0)
    pm, flat_cm, slab_cm, dataset_json = slab_plans(settings, slices)
    volume = torch.randn(settings.input_channels, depth, *settings.case_size)
    steps_calls, labels = {}, {}
    for key in settings.families:
        trainer = FAMILIES[key][0]
        for configuration, cm, batch in (("2d", flat_cm, settings.batch * slices), ("2.5d", slab_cm, settings.batch)):
            c = build_contender(key, trainer, settings, (pm, cm, dataset_json), batch=batch)
            steps_calls[key, configuration] = lambda c=c: train_step(c)
        labels[key] = f"{FAMILY_NAMES[key]} {backbone_label(c.network.backbone.spec.name)}"
    _log("train steps")
    steps = timed_round_robin(steps_calls, settings.repeats, settings.warmup, torch.device(settings.device))
    _log("prediction of one volume through nnU-Net's predictor and the plugin's, from model folders")
    calls, seen, axes = _prediction_calls(settings, pm, dataset_json, volume)
    predicted = timed_round_robin(calls, settings.predict_repeats, 1, torch.device(settings.device))  # 1 warm-up each
    rows: Dict[str, dict] = {}
    for key in settings.families:
        step = {cfg: statistics.median(steps[key, cfg]) for cfg in CONFIGURATIONS}
        per_path = {}
        for path, _ in PATHS:
            case_s = {cfg: statistics.median(predicted[key, cfg, path]) for cfg in CONFIGURATIONS}
            per_path[path] = {"predict_s": case_s, "predict_ratio": case_s["2.5d"] / case_s["2d"],
                              "slices_seen": {cfg: seen[key, cfg, path] for cfg in CONFIGURATIONS}}
        rows[key] = {"label": labels[key], "step_s": step, "step_ratio": step["2.5d"] / step["2d"],
                     "mirror_axes": {cfg: axes[key, cfg] for cfg in CONFIGURATIONS}, "prediction": per_path}
    return {"machine": machine_info(torch.device(settings.device)), "slices": slices, "depth": depth,
            "patch": list(flat_cm.patch_size), "batch_2d": settings.batch * slices, "batch_2_5d": settings.batch,
            "case": [depth, *settings.case_size], "predict_repeats": settings.predict_repeats, "models": rows}


def format_slab_report(results: dict) -> str:
    m = results["machine"]
    head = (f"machine: {m['cpu']}, {m['threads']} threads, torch {m['torch']}; RANDOM backbones. Slabs of "
            f"{results['slices']} slices, patch {results['patch']}, batch {results['batch_2d']} slices per step in "
            f"both (2d batch {results['batch_2d']}, 2.5d batch {results['batch_2_5d']}); prediction of one "
            f"{results['case']} volume from a model folder (preprocessing, sliding window at step 0.5 with the "
            f"checkpoint's mirroring, export), median of {results['predict_repeats']}")
    rows = []
    for r in results["models"].values():
        for path, p in r["prediction"].items():
            rows.append([r["label"], f"{1e3 * r['step_s']['2d']:.0f}", f"{1e3 * r['step_s']['2.5d']:.0f}",
                         f"{r['step_ratio']:.2f}", path, f"{r['mirror_axes']['2d']} / {r['mirror_axes']['2.5d']}",
                         f"{p['predict_s']['2d']:.2f}", f"{p['predict_s']['2.5d']:.2f}", f"{p['predict_ratio']:.2f}",
                         f"{p['slices_seen']['2d']} / {p['slices_seen']['2.5d']}"])
    return head + "\n\n" + _table(["model", "2d step ms", "2.5d step ms", "step 2.5d / 2d (same slices)",
                                   "prediction", "mirror axes 2d / 2.5d", "2d s/volume", "2.5d s/volume",
                                   "volume 2.5d / 2d", "slices encoded 2d / 2.5d"], rows)
