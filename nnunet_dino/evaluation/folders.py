"""Evaluate a folder of predictions against a folder of references, as nnU-Net's evaluator does.

Files are read with the reader/writer nnU-Net picks from dataset.json (NIfTI, PNG, ...), paired by
file name, and scored with `metrics.case_metrics`. Outputs, beside nnU-Net's `summary.json` by
default (the prediction folder):

* `metrics_summary.json`: nnU-Net's summary layout (`metric_per_case` with `reference_file`,
  `prediction_file`, `metrics` {class key: {Dice, IoU, HD95, ASD, TP, ...}}, `mean`,
  `foreground_mean`) plus `sd`, `counts` (empty cases), `label_names` and `units`.
  NaN is written as JSON `null` so the file is valid JSON for any parser.
* `metrics_per_case.csv`: one row per case and class; `metrics_per_class.csv`: mean and SD per class.
"""
from __future__ import annotations

import csv
import json
import math
import multiprocessing
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import MissingInputError, OptionError
from .tables import MEAN_ROW, UNITS, metric_cell, per_class_table
from .metrics import (SUMMARY_METRICS, EvaluatedClass, case_metrics, classes_from_labels, declared_labels,
                      empty_status, ignore_label_from_labels, summarise)

SUMMARY_FILE = "metrics_summary.json"
PER_CASE_CSV = "metrics_per_case.csv"
PER_CLASS_CSV = "metrics_per_class.csv"
CSV_METRIC_COLUMNS = {"Dice": "Dice", "IoU": "IoU", "HD95": "HD95_mm", "ASD": "ASD_mm"}
EMPTY_POLICY = ("both masks empty: Dice/IoU/HD95/ASD NaN, excluded from means (n_both_empty); "
                "one mask empty: Dice/IoU 0 (in the mean), HD95/ASD NaN, excluded from the distance means "
                "(n_reference_empty_only, n_prediction_empty_only)")


def known_file_endings() -> Tuple[str, ...]:
    """Every file ending one of nnU-Net's readers reads, longest first ('.nii.gz' before '.gz')."""
    from nnunetv2.imageio.reader_writer_registry import LIST_OF_IO_CLASSES
    endings = {e.lower() for io in LIST_OF_IO_CLASSES for e in io.supported_file_endings}
    return tuple(sorted(endings, key=len, reverse=True))


def case_name(path: str, file_ending: str) -> str:
    """The case identifier of a reference or prediction file: its name without the file ending
    (`file_ending`, or any ending nnU-Net reads)."""
    name = os.path.basename(path)
    ending = file_ending if name.endswith(file_ending) else next(
        (e for e in known_file_endings() if name.lower().endswith(e)), "")
    return name[:len(name) - len(ending)]


def _cases_in(folder: str, endings: Sequence[str]) -> Tuple[dict, List[str]]:
    """(case -> file name, problems) for the files of `folder` with one of `endings`."""
    if not os.path.isdir(folder):
        raise MissingInputError(f"not a folder: {folder}")
    cases, problems = {}, []
    for f in sorted(os.listdir(folder)):
        ending = next((e for e in endings if f.lower().endswith(e.lower())), None)
        if ending is None or len(f) == len(ending) or not os.path.isfile(os.path.join(folder, f)):
            continue
        case = f[:-len(ending)]
        if case in cases:
            problems.append(f"case {case} has two files in {folder}: {cases[case]}, {f} (keep one)")
        cases[case] = f
    return cases, problems


def prediction_cases(folder: str) -> List[str]:
    """The case identifiers of the segmentation files (any ending nnU-Net reads) in a prediction folder."""
    return sorted(_cases_in(folder, known_file_endings())[0])


def pair_case_files(gt_dir: str, pred_dir: str, file_ending: str,
                    allow_missing_predictions: bool = False) -> List[Tuple[str, str]]:
    """(reference path, prediction path) per case, matched by case identifier: references end with
    dataset.json's `file_ending`, predictions with any ending nnU-Net reads (e.g. .nrrd references
    and .nii.gz predictions). OptionError lists the unmatched files."""
    references, problems = _cases_in(gt_dir, [file_ending])
    predictions, pred_problems = _cases_in(pred_dir, known_file_endings())
    problems += pred_problems
    extra, missing = sorted(set(predictions) - set(references)), sorted(set(references) - set(predictions))
    if extra:
        problems.append(f"{len(extra)} prediction file(s) without a reference (a '{file_ending}' file, as "
                        f"dataset.json's file_ending says) in {gt_dir}: " + ", ".join(predictions[c] for c in extra))
    if missing and not allow_missing_predictions:
        problems.append(f"{len(missing)} reference file(s) without a prediction in {pred_dir}: "
                        + ", ".join(references[c] for c in missing))
    if problems:
        raise OptionError("cannot pair reference and prediction files by case:\n  " + "\n  ".join(problems))
    matched = sorted(set(references) & set(predictions))
    if not matched:
        raise OptionError(f"no '{file_ending}' references with a prediction to evaluate in {gt_dir} and {pred_dir}")
    return [(os.path.join(gt_dir, references[c]), os.path.join(pred_dir, predictions[c])) for c in matched]


def _plain(values) -> list:
    return [round(float(v), 6) for v in values]


def _reader_for(path: str, reference_reader):
    """The references' reader when it reads this file's ending (one convention for both), else
    the first of nnU-Net's readers that does."""
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_file_ending
    ending = next(e for e in known_file_endings() if path.lower().endswith(e))
    if ending in type(reference_reader).supported_file_endings:
        return reference_reader
    return determine_reader_writer_from_file_ending(ending, verbose=False)()


def spatial_label_map(seg: np.ndarray, spacing: Sequence[float]) -> Tuple[np.ndarray, Tuple[float, ...]]:
    """nnU-Net's (1, *spatial) float segmentation as an int array without its singleton axes.

    A 2D image arrives as (1, 1, H, W) with a dummy spacing of 999 on the first axis; dropping
    size-1 axes gives a true 2D map, so in-plane borders are not all counted as surface.
    """
    spatial = seg[0]
    keep = [axis for axis, n in enumerate(spatial.shape) if n > 1]
    squeezed = spatial.reshape([spatial.shape[a] for a in keep]).astype(np.int32)
    return squeezed, tuple(float(spacing[a]) for a in keep)


def _evaluate_pair(reference_file: str, prediction_file: str, reader_writer, classes: Sequence[EvaluatedClass],
                   ignore_label: Optional[int], declared: Sequence[int]) -> dict:
    reference, ref_props = reader_writer.read_seg(reference_file)
    prediction, pred_props = _reader_for(prediction_file, reader_writer).read_seg(prediction_file)
    if reference.shape != prediction.shape:
        raise OptionError(f"shape mismatch: {reference_file} {tuple(int(n) for n in reference.shape[1:])} vs "
                         f"{prediction_file} {tuple(int(n) for n in prediction.shape[1:])}")
    if not np.allclose(ref_props["spacing"], pred_props["spacing"], rtol=1e-4):
        raise OptionError(f"spacing mismatch: {reference_file} {_plain(ref_props['spacing'])} vs "
                         f"{prediction_file} {_plain(pred_props['spacing'])}")
    reference, spacing = spatial_label_map(reference, ref_props["spacing"])
    prediction, _ = spatial_label_map(prediction, ref_props["spacing"])
    return {"reference_file": reference_file, "prediction_file": prediction_file, "spacing": list(spacing),
            "metrics": case_metrics(reference, prediction, spacing, classes, ignore_label),
            "undeclared_labels": {role: undeclared_label_counts(array, declared)
                                  for role, array in (("prediction", prediction), ("reference", reference))}}


def undeclared_label_counts(label_map: np.ndarray, declared: Sequence[int]) -> dict:
    """label value -> voxels, for the values of `label_map` that dataset.json does not declare."""
    values, counts = np.unique(label_map, return_counts=True)
    return {int(v): int(n) for v, n in zip(values, counts) if int(v) not in declared}


def _undeclared_summary(per_case: Sequence[dict], file_ending: str) -> dict:
    """role -> label value -> {cases, voxels}: labels no class scores (each is a silent error)."""
    summary = {"prediction": {}, "reference": {}}
    for case in per_case:
        for role, counts in case["undeclared_labels"].items():
            for value, voxels in counts.items():
                entry = summary[role].setdefault(str(value), {"cases": [], "voxels": 0})
                entry["cases"].append(case_name(case[f"{role}_file"], file_ending))
                entry["voxels"] += voxels
    return summary


def json_ready(obj):
    """numpy scalars -> Python numbers, NaN -> None (JSON null), recursively."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, (np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(obj) else float(obj)
    return obj


def _csv_number(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def write_csv_tables(summary: dict, classes: Sequence[EvaluatedClass], file_ending: str, output_dir: str) -> None:
    """`metrics_per_case.csv` (case x class rows) and `metrics_per_class.csv` (mean, SD and counts)."""
    with open(os.path.join(output_dir, PER_CASE_CSV), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case", "class_key", "class_name", *CSV_METRIC_COLUMNS.values(),
                         "n_ref", "n_pred", "TP", "FP", "FN", "TN", "empty", "reference_file", "prediction_file"])
        for case in summary["metric_per_case"]:
            for c in classes:
                m = case["metrics"][c.key]
                writer.writerow([case_name(case["reference_file"], file_ending), c.key, c.name,
                                 *[_csv_number(m[k]) for k in CSV_METRIC_COLUMNS],
                                 *[m[k] for k in ("n_ref", "n_pred", "TP", "FP", "FN", "TN")],
                                 empty_status(m), case["reference_file"], case["prediction_file"]])
    with open(os.path.join(output_dir, PER_CLASS_CSV), "w", newline="") as f:
        writer = csv.writer(f)
        count_names = list(next(iter(summary["counts"].values())))
        writer.writerow(["class_key", "class_name",
                         *[f"{col}_{stat}" for col in CSV_METRIC_COLUMNS.values() for stat in ("mean", "sd")],
                         *count_names])
        for c in classes:
            stats = [_csv_number(summary[stat][c.key][m]) for m in SUMMARY_METRICS for stat in ("mean", "sd")]
            writer.writerow([c.key, c.name, *stats, *[summary["counts"][c.key][n] for n in count_names]])


def evaluate_folders(gt_dir: str, pred_dir: str, dataset_json_path: str, output_dir: Optional[str] = None,
                     num_processes: int = 1, allow_missing_predictions: bool = False) -> dict:
    """Score every prediction in `pred_dir` against the same-named reference in `gt_dir`.

    Writes `metrics_summary.json` and the two CSVs into `output_dir` (default: `pred_dir`, beside
    nnU-Net's summary.json) and returns the summary (NaN as None, as written). References without a
    prediction are an error unless `allow_missing_predictions` (e.g. one fold against labelsTr).
    """
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

    if not os.path.isfile(dataset_json_path):
        raise MissingInputError(f"no dataset.json at {dataset_json_path}: give the file (-d path/to/dataset.json)")
    with open(dataset_json_path) as f:
        dataset_json = json.load(f)
    file_ending = dataset_json["file_ending"]
    classes = classes_from_labels(dataset_json["labels"])
    ignore_label = ignore_label_from_labels(dataset_json["labels"])
    pairs = pair_case_files(gt_dir, pred_dir, file_ending, allow_missing_predictions)
    reader_writer = determine_reader_writer_from_dataset_json(dataset_json, pairs[0][0], verbose=False)()

    jobs = [(ref, pred, reader_writer, classes, ignore_label, declared_labels(dataset_json["labels"]))
            for ref, pred in pairs]
    if num_processes > 1:
        # spawn, as nnU-Net's evaluator: forking a process that has torch threads can deadlock
        with multiprocessing.get_context("spawn").Pool(min(num_processes, len(jobs))) as pool:
            per_case = pool.starmap(_evaluate_pair, jobs)
    else:
        per_case = [_evaluate_pair(*job) for job in jobs]

    statistics = summarise([case["metrics"] for case in per_case], classes)
    summary = json_ready({"metric_per_case": per_case, **statistics,
                           "label_names": {c.key: c.name for c in classes},
                           "undeclared_labels": _undeclared_summary(per_case, file_ending),
                           "units": {"HD95": "mm", "ASD": "mm"}, "empty_mask_policy": EMPTY_POLICY})
    output_dir = pred_dir if output_dir is None else output_dir
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, SUMMARY_FILE), "w") as f:
        json.dump(summary, f, indent=2, allow_nan=False)
    write_csv_tables(summary, classes, file_ending, output_dir)
    return summary


def format_class_table(summary: dict) -> str:
    """Per-class table of an evaluation: Dice, HD95 mm and ASD mm as mean ± SD, and the empty-case counts."""
    def metric_column(metric: str):
        def cell(key: str) -> str:
            if key == MEAN_ROW:
                return metric_cell(metric, summary["foreground_mean"].get(metric))
            return metric_cell(metric, summary["mean"][key].get(metric), summary["sd"][key].get(metric))
        return f"{metric}{UNITS[metric]}", cell

    def counts(key: str) -> str:
        if key == MEAN_ROW:
            return ""
        n = summary["counts"][key]
        return (f"{n['n_cases']} | {n['n_both_empty']}/{n['n_reference_empty_only']}/"
                f"{n['n_prediction_empty_only']}")

    table = per_class_table(summary["label_names"], [metric_column(m) for m in ("Dice", "HD95", "ASD")]
                            + [("cases | empty both/ref/pred", counts)])
    return "\n".join([table] + undeclared_warnings(summary))


def undeclared_warnings(summary: dict) -> List[str]:
    """One WARNING line per label value found in predictions or references but not in dataset.json."""
    lines = []
    for role, values in summary.get("undeclared_labels", {}).items():
        for value, entry in values.items():
            cases = entry["cases"]
            lines.append(f"WARNING: label {value} is in {len(cases)} {role}(s) ({entry['voxels']} voxels; "
                         f"{', '.join(cases[:5])}{' ...' if len(cases) > 5 else ''}) but dataset.json does not "
                         f"declare it: no class scores it, so the metrics above ignore it")
    return lines
