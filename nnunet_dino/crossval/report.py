"""`nnunet-dino report`: score every fold's validation predictions of several models (any
`TRAINER[:CONFIGURATION[:PLANS]]`, see `models`) with our evaluation (Dice, HD95, ASD in mm), aggregate
over folds, compare each model with a reference over cases, read parameters and times, draw the
learning curves of the train-fraction runs, and (`report_files`) write the report.

Inputs are nnU-Net's own files, so any model works: predictions in
`$nnUNet_results/<Dataset>/<Trainer>__<Plans>__<cfg>/fold_X/validation/`, references in
`$nnUNet_preprocessed/<Dataset>/gt_segmentations/`. Every configuration's validation predictions are
in the geometry of the original images (nnU-Net exports them so), so a `2d` model of 3D data is scored
in 3D against the same references as a `3d_fullres` one. The models must have validated the same
cases in every fold: a case one model lacks is an error naming it. See `statistics` for the numbers.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from ..backbones.weights import describe_weights_record, record_is_random
from ..errors import MissingInputError, OptionError
from ..evaluation import classes_from_labels, evaluate_folders
from ..evaluation.folders import case_name, prediction_cases
from ..nnunet import dataset_id, dataset_name, fold_folder, gt_folder, model_folder, preprocessed_folder
from ..nnunet.logs import epoch_times, validation_seconds_per_case
from ..nnunet.models import model_facts
from ..pretrain.record import leakage_notes
from ..training.records import fold_weights_record
from .fractions import FULL, check_fractions, fraction_folds
from .learning import learning_curves
from .models import DEFAULT_CONFIGURATION, DEFAULT_PLANS, ModelSpec, choose_reference, parse_models
from .statistics import MEAN_KEY, RESAMPLES, SEED, aggregate_folds, compare_to_reference, nan_mean


@dataclass
class CrossValReport:
    dataset: str
    folds: List[int]
    trainers: List[str]                                 # model labels, TRAINER[:CONFIGURATION[:PLANS]]
    reference: str
    class_names: Dict[str, str]                         # class key -> name
    summary: Dict[str, Dict[str, Dict[str, dict]]]      # model -> class key|'mean' -> metric -> over_folds
    per_case: Dict[str, List[dict]]                     # model -> rows (fold, case, class_key, Dice, HD95, ASD)
    comparison: List[dict]
    models: Dict[str, dict]                             # model -> facts (parameters, adaptation, times) or error
    specs: Dict[str, dict] = field(default_factory=dict)            # model -> trainer, configuration, plans
    fractions: List[float] = field(default_factory=lambda: [FULL])
    learning_curves: List[dict] = field(default_factory=list)
    n_resamples: int = RESAMPLES
    seed: int = SEED
    notes: List[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return dict(self.__dict__)


Runs = Dict[Tuple[int, float], int]   # (fold, fraction) -> nnU-Net fold


def validation_folders(name: str, models: Sequence[ModelSpec], folds: Sequence, fractions: Sequence[float],
                       runs: Runs, dataset: str = "") -> Dict[Tuple[str, float], Dict[int, str]]:
    """(model label, fraction) -> fold -> validation folder. Every full-data fold must be finished; a
    fraction is either finished for every fold of a model or absent (left out, with a note)."""
    found: Dict[Tuple[str, float], Dict[int, str]] = {}
    missing = []
    for model in models:
        for fraction in sorted(fractions, reverse=True):
            for fold in folds:
                folder = "no training subset in splits_final.json yet" if (fold, fraction) not in runs else \
                    os.path.join(fold_folder(name, model.trainer, model.plans, model.configuration,
                                             runs[(fold, fraction)]), "validation")
                if os.path.isfile(os.path.join(folder, "summary.json")):
                    found.setdefault((model.label, fraction), {})[fold] = folder
                else:
                    missing.append((model.label, fraction, fold, folder))
    required = [m for m in missing if m[1] == FULL or (m[0], m[1]) in found]
    if required:
        command = (f"nnunet-dino crossval -d {dataset or dataset_id(name)} -tr {' '.join(m.label for m in models)} "
                   f"--folds {' '.join(map(str, folds))}"
                   + (f" --train-fractions {' '.join(f'{f:g}' for f in fractions)}" if fractions != [FULL] else ""))
        raise MissingInputError(
            f"{len(required)} fold(s) have no finished validation:\n  "
            + "\n  ".join(f"{label} fold {fold}" + (f" at {fraction:g}" if fraction != FULL else "") + f" ({folder})"
                          for label, fraction, fold, folder in required) + f"\nRun them first: {command}")
    return found


def default_report_folder(name: str) -> str:
    return f"cv_report_{name}"


def _case_rows(summary: dict, fold: int, file_ending: str) -> List[dict]:
    rows = []
    for case in summary["metric_per_case"]:
        name = case_name(case["prediction_file"], file_ending)
        for key, metrics in case["metrics"].items():
            rows.append({"fold": fold, "case": name, "class_key": key,
                         **{m: (float("nan") if metrics[m] is None else metrics[m]) for m in ("Dice", "HD95", "ASD")}})
    return rows


def check_same_cases(folders: Dict[Tuple[str, float], Dict[int, str]]) -> None:
    """Every model (and train fraction) must have validated the same cases in every fold, before anything
    is scored: the error names each case, its fold, and the runs that have and lack it."""
    runs = {(label if fraction == FULL else f"{label} at {fraction:g}"): fold_folders
            for (label, fraction), fold_folders in folders.items()}
    problems = []
    for fold in sorted({fold for fold_folders in runs.values() for fold in fold_folders}, key=str):
        cases = {run: set(prediction_cases(fold_folders[fold])) for run, fold_folders in runs.items()
                 if fold in fold_folders}
        for case in sorted(set().union(*cases.values())):
            without = [run for run in cases if case not in cases[run]]
            if without:
                validated = ", ".join(run for run in cases if run not in without)
                problems.append(f"{case} (fold {fold}): validated by {validated}; missing from {', '.join(without)}")
    if problems:
        raise OptionError("the models were not validated on the same cases, so they cannot be compared:\n  "
                          + "\n  ".join(problems) + "\nRe-run the incomplete validation (`nnUNetv2_train ... --val`), "
                          "or train every model with the same splits_final.json")


def _model_facts(name: str, model: ModelSpec, folds: Sequence[int]) -> dict:
    """Parameter counts and adaptation mode (from the first finished fold's checkpoint) and nnU-Net's logged
    times (median epoch time over every epoch of every fold; mean validation time per case over folds)."""
    folder = model_folder(name, model.trainer, model.plans, model.configuration)
    epochs = [t for fold in folds for t in epoch_times(os.path.join(folder, f"fold_{fold}"))]
    per_case = [validation_seconds_per_case(os.path.join(folder, f"fold_{fold}")) for fold in folds]
    times = {"epoch_seconds": float(np.median(epochs)) if epochs else None, "epochs_timed": len(epochs),
             "predict_seconds_per_case": nan_mean([t for t in per_case if t is not None]) if any(
                 t is not None for t in per_case) else None}
    for fold in folds:
        if os.path.isfile(os.path.join(folder, f"fold_{fold}", "checkpoint_final.pth")):
            try:
                return {**model_facts(folder, fold), "fold": fold, **times}
            except Exception as error:  # report the others even if one network cannot be rebuilt here
                return {"error": f"{type(error).__name__}: {error}", **times}
    return {"error": "no checkpoint_final.pth in the requested folds", **times}


def weights_notes(name: str, model: ModelSpec, folder: str, folds: Sequence[int], cases: Set[str]) -> List[str]:
    """What each fold's own record says about its frozen backbone: random (tests and demos only), or
    weights that differ between folds (the checkpoint is the truth; plans.json holds the last fold's)."""
    records = {fold: fold_weights_record(os.path.join(folder, f"fold_{fold}")) for fold in folds}
    records = {fold: r for fold, r in records.items() if r}
    notes = []
    random = [fold for fold, r in records.items() if record_is_random(r.get("weights"))]
    if random:
        notes.append(f"`{model.label}` fold(s) {', '.join(map(str, random))} were trained on a RANDOM frozen "
                     f"backbone (nnUNet_dino_weights=random): their numbers show the pipeline works, not what the "
                     f"method can do")
    if len({r.get("sha256") for r in records.values()}) > 1:
        notes.append(f"`{model.label}`: its folds were trained with DIFFERENT backbone weights: "
                     + "; ".join(f"fold {fold}: {describe_weights_record(r)}" for fold, r in records.items()))
    return notes


def pretraining_notes(name: str, model: ModelSpec, folder: str, folds: Sequence[int], cases: Set[str]) -> List[str]:
    """LEAKAGE notes: evaluated cases that the model's backbone weights were pretrained on."""
    return leakage_notes(model.label, folder, folds, cases, name)


# Checks that add notes about one model to the report: (dataset name, model, model folder, its nnU-Net fold
# numbers, the case ids it is evaluated on) -> sentences. Another check is one more function in this tuple.
MODEL_NOTE_CHECKS: Tuple[Callable[[str, ModelSpec, str, Sequence[int], Set[str]], List[str]], ...] = (
    weights_notes, pretraining_notes)


def model_notes(name: str, models: Sequence[ModelSpec], runs: Runs, per_case: Dict[str, List[dict]]) -> List[str]:
    nnunet_folds = sorted(set(runs.values()), key=str)
    return [note for model in models for check in MODEL_NOTE_CHECKS
            for note in check(name, model, model_folder(name, model.trainer, model.plans, model.configuration),
                              nnunet_folds, {row["case"] for row in per_case[model.label]})]


def build_report(dataset: str, trainers: Sequence, folds: Sequence[int] = (0, 1, 2, 3, 4),
                 plans: str = DEFAULT_PLANS, configuration: str = DEFAULT_CONFIGURATION, output: Optional[str] = None,
                 reference: Optional[str] = None, num_processes: int = 1, fractions: Sequence[float] = (FULL,),
                 fraction_seed: int = 0, n_resamples: int = RESAMPLES, seed: int = SEED) -> CrossValReport:
    """Evaluate and aggregate; per-fold metric files go to `output/evaluation/<model>/fold_X/`. `trainers`:
    TRAINER[:CONFIGURATION[:PLANS]] (omitted parts: `configuration`, `plans`)."""
    models = parse_models(trainers, configuration, plans)
    labels = [m.label for m in models]
    reference = choose_reference(labels, reference, configuration, plans)
    fractions = check_fractions(list(fractions) + [FULL])
    name = dataset_name(dataset)
    references = gt_folder(name)
    dataset_json_path = os.path.join(preprocessed_folder(name), "dataset.json")
    runs = fraction_folds(name, folds, fractions, fraction_seed)
    folders = validation_folders(name, models, folds, fractions, runs, str(dataset))
    with open(dataset_json_path) as f:
        dataset_json = json.load(f)
    classes = classes_from_labels(dataset_json["labels"])
    output = output or default_report_folder(name)
    check_same_cases(folders)

    per_run: Dict[Tuple[str, float], List[dict]] = {}        # (model, fraction) -> per-case rows
    summaries: Dict[Tuple[str, float], Dict[int, dict]] = {}  # (model, fraction) -> fold -> evaluation summary
    for (label, fraction), fold_folders in folders.items():
        stem = next(m.file_stem for m in models if m.label == label) + ("" if fraction == FULL else f"@{fraction:g}")
        for fold, folder in sorted(fold_folders.items(), key=lambda item: str(item[0])):
            summary = evaluate_folders(references, folder, dataset_json_path, num_processes=num_processes,
                                       output_dir=os.path.join(output, "evaluation", stem, f"fold_{fold}"),
                                       allow_missing_predictions=True)
            summaries.setdefault((label, fraction), {})[fold] = summary
            per_run.setdefault((label, fraction), []).extend(_case_rows(summary, fold, dataset_json["file_ending"]))
    keys = [c.key for c in classes]
    per_case = {label: per_run[(label, FULL)] for label in labels}
    summary = {label: aggregate_folds(summaries[(label, FULL)], keys) for label in labels}
    comparison = compare_to_reference(per_case, reference, keys, n_resamples=n_resamples, seed=seed) \
        if len(models) > 1 else []
    facts = {m.label: _model_facts(name, m, [runs[(fold, FULL)] for fold in folds]) for m in models}
    notes = model_notes(name, models, runs, per_case)
    curves = learning_curves(name, models, runs, per_run, summaries, keys, n_resamples, seed) \
        if len(fractions) > 1 else []
    for model in models:
        absent = [f"{f:g}" for f in fractions if (model.label, f) not in per_run]
        if absent:
            notes.append(f"`{model.label}` has no runs at train fraction(s) {', '.join(absent)}: not in its learning "
                         f"curve (nnunet-dino crossval -d {dataset} -tr {model.label} --train-fractions "
                         f"{' '.join(absent)} adds them)")
    return CrossValReport(name, list(folds), labels, reference, {c.key: c.name for c in classes}, summary, per_case,
                          comparison, facts, {m.label: m.to_json() for m in models}, fractions, curves, n_resamples,
                          seed, notes)


def class_name(report: CrossValReport, key: str) -> str:
    return "mean (foreground)" if key == MEAN_KEY else report.class_names[key]
