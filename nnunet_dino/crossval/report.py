"""`nnunet-dino report`: score every fold's validation predictions of several trainers with our
evaluation (Dice, HD95, ASD in mm), aggregate over folds, compare each trainer with a reference over
cases, and write report.md, CSVs, report.json and a box plot per class.

Inputs are nnU-Net's own files, so any trainer works: predictions in
`$nnUNet_results/<Dataset>/<Trainer>__<Plans>__<cfg>/fold_X/validation/`, references in
`$nnUNet_preprocessed/<Dataset>/gt_segmentations/`. See `cv_statistics` for the aggregation.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from ..evaluation import classes_from_labels, evaluate_folders
from ..evaluation.folders import case_name
from ..errors import MissingInputError, OptionError
from ..nnunet import (dataset_id, dataset_name, gt_folder, model_folder, plans_flags,
                      preprocessed_folder)
from ..backbones.weights import describe_weights_record, record_is_random
from ..nnunet.models import model_facts
from ..pretrain.record import leakage_notes
from ..training.records import fold_weights_record
from .statistics import MEAN_KEY, aggregate_folds, choose_reference, compare_to_reference


@dataclass
class CrossValReport:
    dataset: str
    configuration: str
    plans: str
    folds: List[int]
    trainers: List[str]
    reference: str
    class_names: Dict[str, str]                         # class key -> name
    summary: Dict[str, Dict[str, Dict[str, dict]]]      # trainer -> class key|'mean' -> metric -> over_folds
    per_case: Dict[str, List[dict]]                     # trainer -> rows (fold, case, class_key, Dice, HD95, ASD)
    comparison: List[dict]
    models: Dict[str, dict]                             # trainer -> model_facts (or {'error': ...})
    notes: List[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return dict(self.__dict__)


def validation_folders(name: str, trainers: Sequence[str], folds: Sequence[int], plans: str,
                       configuration: str) -> Dict[str, Dict[int, str]]:
    """trainer -> fold -> validation folder; refuses listing every fold without finished validation."""
    found: Dict[str, Dict[int, str]] = {}
    missing = []
    for trainer in trainers:
        for fold in folds:
            folder = os.path.join(model_folder(name, trainer, plans, configuration), f"fold_{fold}", "validation")
            if os.path.isfile(os.path.join(folder, "summary.json")):
                found.setdefault(trainer, {})[fold] = folder
            else:
                missing.append(f"{trainer} fold {fold} ({folder})")
    if missing:
        raise MissingInputError(f"{len(missing)} fold(s) have no finished validation:\n  " + "\n  ".join(missing)
                                 + f"\nRun them first: nnunet-dino crossval -d {dataset_id(name)} -tr "
                         + " ".join(trainers) + f" --folds {' '.join(map(str, folds))}"
                         + plans_flags(plans, configuration))
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


def _model_facts(name: str, trainer: str, plans: str, configuration: str, folds: Sequence[int]) -> dict:
    """Parameter counts of the trainer's network (built from its first finished fold's checkpoint)."""
    folder = model_folder(name, trainer, plans, configuration)
    for fold in folds:
        if os.path.isfile(os.path.join(folder, f"fold_{fold}", "checkpoint_final.pth")):
            try:
                return {**model_facts(folder, fold), "fold": fold}
            except Exception as error:  # report the others even if one network cannot be rebuilt here
                return {"error": f"{type(error).__name__}: {error}"}
    return {"error": "no checkpoint_final.pth in the requested folds"}


def weights_notes(trainer: str, folder: str, folds: Sequence[int]) -> List[str]:
    """What each fold's own record says about its frozen backbone: random (tests and demos only), or
    weights that differ between folds (the checkpoint is the truth; plans.json holds the last fold's)."""
    records = {fold: fold_weights_record(os.path.join(folder, f"fold_{fold}")) for fold in folds}
    records = {fold: r for fold, r in records.items() if r}
    notes = []
    random = [fold for fold, r in records.items() if record_is_random(r.get("weights"))]
    if random:
        notes.append(f"`{trainer}` fold(s) {', '.join(map(str, random))} were trained on a RANDOM frozen backbone "
                     f"(nnUNet_dino_weights=random): their numbers show the pipeline works, not what the method can do")
    if len({r.get("sha256") for r in records.values()}) > 1:
        notes.append(f"`{trainer}`: its folds were trained with DIFFERENT backbone weights: "
                     + "; ".join(f"fold {fold}: {describe_weights_record(r)}" for fold, r in records.items()))
    return notes


def build_report(dataset: str, trainers: Sequence[str], folds: Sequence[int] = (0, 1, 2, 3, 4),
                 plans: str = "nnUNetPlans", configuration: str = "2d", output: Optional[str] = None,
                 reference: Optional[str] = None, num_processes: int = 1) -> CrossValReport:
    """Evaluate and aggregate; per-fold metric files go to `output/evaluation/<trainer>/fold_X/`."""
    if len(set(trainers)) != len(trainers):
        raise OptionError(f"a trainer is named twice in {list(trainers)}")
    reference = choose_reference(trainers, reference)
    name = dataset_name(dataset)
    references = gt_folder(name)
    dataset_json_path = os.path.join(preprocessed_folder(name), "dataset.json")
    folders = validation_folders(name, trainers, folds, plans, configuration)
    with open(dataset_json_path) as f:
        dataset_json = json.load(f)
    classes = classes_from_labels(dataset_json["labels"])
    output = output or default_report_folder(name)

    summary, per_case, models = {}, {}, {}
    for trainer in trainers:
        fold_summaries = {}
        per_case[trainer] = []
        for fold, folder in sorted(folders[trainer].items()):
            metrics_folder = os.path.join(output, "evaluation", trainer, f"fold_{fold}")
            fold_summaries[fold] = evaluate_folders(references, folder, dataset_json_path, output_dir=metrics_folder,
                                                    num_processes=num_processes, allow_missing_predictions=True)
            per_case[trainer] += _case_rows(fold_summaries[fold], fold, dataset_json["file_ending"])
        summary[trainer] = aggregate_folds(fold_summaries, [c.key for c in classes])
        models[trainer] = _model_facts(name, trainer, plans, configuration, folds)

    notes = [note for t in trainers for note in weights_notes(t, model_folder(name, t, plans, configuration), folds)]
    case_sets = {t: {r["case"] for r in rows} for t, rows in per_case.items()}
    if len({frozenset(s) for s in case_sets.values()}) > 1:
        notes.append("the trainers were validated on different case sets (different splits?): paired tests use "
                     "the common cases only")
    notes += [note for t in trainers
              for note in leakage_notes(t, model_folder(name, t, plans, configuration), folds, case_sets[t], name)]
    comparison = compare_to_reference(per_case, reference, [c.key for c in classes]) if len(trainers) > 1 else []
    return CrossValReport(name, configuration, plans, list(folds), list(trainers), reference,
                          {c.key: c.name for c in classes}, summary, per_case, comparison, models, notes)


def class_name(report: CrossValReport, key: str) -> str:
    return "mean (foreground)" if key == MEAN_KEY else report.class_names[key]
