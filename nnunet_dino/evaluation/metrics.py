"""Dice, HD95 and ASD in millimetres for label maps, computed with distance transforms.

Conventions (chosen so the numbers equal medpy's `dc`, `hd95` and `assd` to float precision):

* **Surface** of a mask = the mask minus its erosion by the face-connected structuring element
  (`generate_binary_structure(ndim, 1)`, medpy's default `connectivity=1`); voxels outside the
  array count as background, so a mask touching the image edge has a surface there.
* **Distances** are Euclidean between voxel centres in millimetres, using the image spacing
  (`distance_transform_edt(..., sampling=spacing)`), from every surface voxel of one mask to the
  nearest surface voxel of the other. Both directions are pooled:
  HD95 = 95th percentile (linear interpolation) of the pooled distances,
  ASD = their mean (the *average symmetric* surface distance, Heimann et al. 2009; medpy >= 0.5's
  `assd` — medpy < 0.5 averaged the two directed means instead, which differs for unequal surfaces).
* **Cropping**: all work is done inside the bounding box of both masks plus a one-voxel margin
  (for label maps, every label's box comes from one `find_objects` pass per map).
  That changes nothing: the erosion of a mask voxel only sees its direct neighbours, and the
  nearest surface voxel always lies inside the box. It makes 3D volumes fast (cost scales with
  the structure, not the image).

Empty-mask policy (nnU-Net's own, so our Dice equals the Dice in nnU-Net's `summary.json`):

* **Both masks empty** (class absent and correctly not predicted): Dice, IoU, HD95 and ASD are
  all NaN. Every one of them is 0/0 here; scoring it 1/0 mm would inflate a class's mean by the
  number of cases it does not occur in (slabs, crops, rare findings) and hide the real scores.
  Such cases are left out of every mean and counted as `n_both_empty`.
* **Exactly one mask empty** (a missed or a hallucinated structure): Dice = IoU = 0, which enters
  the Dice mean, so the error is penalised there. HD95 and ASD are NaN (no surface to measure
  from), left out of the distance means and counted separately (`n_reference_empty_only`: false
  positive cases, `n_prediction_empty_only`: missed structures), so a reader sees how many cases the
  distance means do not cover. A fixed penalty (e.g. the image diagonal) was rejected: it depends on
  the field of view, not on the segmentation, and would dominate any mean it enters.

Means are NaN-ignoring means over cases (`nanmean`, as nnU-Net); `foreground_mean` is the
NaN-ignoring mean of the per-class means (nnU-Net's plain mean turns NaN when one class never
occurs anywhere; otherwise the two agree).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from scipy.ndimage import binary_erosion, distance_transform_edt, find_objects, generate_binary_structure

LabelValue = Union[int, Sequence[int]]
CaseMetrics = Dict[str, Dict[str, float]]  # class key -> metric name -> value

FACE_CONNECTIVITY = 1  # medpy's default; full connectivity (ndim) would give thinner surfaces
DISTANCE_METRICS = ("HD95", "ASD")
SUMMARY_METRICS = ("Dice", "IoU", "HD95", "ASD")


@dataclass(frozen=True)
class EvaluatedClass:
    """One evaluated class: a label or a region (union of labels) from dataset.json."""
    name: str
    values: Tuple[int, ...]  # label values whose union forms the class
    key: str  # nnU-Net's summary.json key: "2" for a label, "(1, 2, 3)" for a region


def classes_from_labels(labels: Mapping[str, LabelValue]) -> List[EvaluatedClass]:
    """Foreground classes of a dataset.json `labels` dict, in its order.

    Like nnU-Net's LabelManager: region mode when any value is a list of several labels; the
    background (0) and the `ignore` entry are not evaluated.
    """
    region_mode = any(isinstance(v, (list, tuple)) and len(v) > 1 for v in labels.values())
    classes = []
    for name, value in labels.items():
        if name == "ignore":
            continue
        values = tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),)
        if set(values) == {0}:
            continue
        is_region = region_mode and isinstance(value, (list, tuple))
        key = str(values) if is_region else str(values[0])
        classes.append(EvaluatedClass(name=name, values=values, key=key))
    return classes


def declared_labels(labels: Mapping[str, LabelValue]) -> Tuple[int, ...]:
    """Every label value dataset.json declares (background, classes, region members, ignore)."""
    values = set()
    for value in labels.values():
        values.update(int(v) for v in value) if isinstance(value, (list, tuple)) else values.add(int(value))
    return tuple(sorted(values | {0}))


def ignore_label_from_labels(labels: Mapping[str, LabelValue]) -> Optional[int]:
    value = labels.get("ignore")
    return None if value is None else int(value)


def _union_box(a: np.ndarray, b: np.ndarray, margin: int = 1) -> Optional[Tuple[slice, ...]]:
    """Bounding box of a | b grown by `margin` voxels (clipped to the array); None if both empty."""
    box = find_objects((a | b).view(np.uint8)) if a.size else []
    if not box:
        return None
    return tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(box[0], a.shape))


def _surface(mask: np.ndarray) -> np.ndarray:
    structure = generate_binary_structure(mask.ndim, FACE_CONNECTIVITY)
    return mask & ~binary_erosion(mask, structure=structure)


def _check_spacing(spacing: Optional[Sequence[float]], ndim: int) -> np.ndarray:
    if spacing is None:
        return np.ones(ndim)
    spacing = np.asarray(spacing, dtype=np.float64)
    if spacing.shape != (ndim,) or not np.all(spacing > 0):
        raise ValueError(f"spacing must be {ndim} positive numbers (one per array axis), got {spacing.tolist()}")
    return spacing


def _distances_in_box(prediction: np.ndarray, reference: np.ndarray,
                      spacing: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Directed surface distances for two non-empty masks already cropped to their union box."""
    surface_pred, surface_ref = _surface(prediction), _surface(reference)
    # edt measures the distance to the nearest zero, so the target surface is passed inverted
    to_ref = distance_transform_edt(~surface_ref, sampling=spacing)[surface_pred]
    to_pred = distance_transform_edt(~surface_pred, sampling=spacing)[surface_ref]
    return to_ref, to_pred


def surface_distances(prediction: np.ndarray, reference: np.ndarray,
                      spacing: Optional[Sequence[float]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(prediction surface -> reference, reference surface -> prediction) distances in spacing units.

    `spacing` is per array axis (numpy order). Raises ValueError if either mask is empty.
    """
    prediction, reference = np.asarray(prediction, bool), np.asarray(reference, bool)
    if prediction.shape != reference.shape:
        raise ValueError(f"shape mismatch: prediction {prediction.shape}, reference {reference.shape}")
    if not prediction.any() or not reference.any():
        raise ValueError("surface distances are undefined for an empty mask")
    spacing = _check_spacing(spacing, prediction.ndim)
    box = _union_box(prediction, reference)
    return _distances_in_box(prediction[box], reference[box], spacing)


def _metrics_of_clean_masks(prediction: np.ndarray, reference: np.ndarray, spacing: np.ndarray,
                            n_considered: int) -> Dict[str, float]:
    """binary_metrics' core: masks with ignored voxels already removed; TN counts `n_considered` voxels."""
    box = _union_box(prediction, reference)
    if box is None:  # both empty: every metric is 0/0
        return {"Dice": np.nan, "IoU": np.nan, "HD95": np.nan, "ASD": np.nan, "TP": 0, "FP": 0, "FN": 0,
                "TN": n_considered, "n_ref": 0, "n_pred": 0}
    prediction, reference = prediction[box], reference[box]
    tp = int(np.count_nonzero(prediction & reference))
    n_pred, n_ref = int(np.count_nonzero(prediction)), int(np.count_nonzero(reference))
    fp, fn = n_pred - tp, n_ref - tp
    metrics = {"Dice": 2 * tp / (2 * tp + fp + fn), "IoU": tp / (tp + fp + fn), "HD95": np.nan, "ASD": np.nan,
               "TP": tp, "FP": fp, "FN": fn, "TN": n_considered - tp - fp - fn, "n_ref": n_ref, "n_pred": n_pred}
    if n_pred and n_ref:
        pooled = np.concatenate(_distances_in_box(prediction, reference, spacing))
        metrics["HD95"] = float(np.percentile(pooled, 95))
        metrics["ASD"] = float(pooled.mean())
    return metrics


def binary_metrics(prediction: np.ndarray, reference: np.ndarray, spacing: Optional[Sequence[float]] = None,
                   ignore_mask: Optional[np.ndarray] = None) -> Dict[str, float]:
    """Dice, IoU, HD95 (mm), ASD (mm) and voxel counts of one binary prediction against its reference.

    Voxels where `ignore_mask` is True are removed from both masks and from TN (nnU-Net's
    ignore-label semantics). Empty masks follow the module's empty-mask policy (NaN, see top).
    """
    prediction, reference = np.asarray(prediction, bool), np.asarray(reference, bool)
    if prediction.shape != reference.shape:
        raise ValueError(f"shape mismatch: prediction {prediction.shape}, reference {reference.shape}")
    spacing = _check_spacing(spacing, prediction.ndim)
    n_considered = prediction.size
    if ignore_mask is not None:
        prediction, reference = prediction & ~ignore_mask, reference & ~ignore_mask
        n_considered -= int(np.count_nonzero(ignore_mask))
    return _metrics_of_clean_masks(prediction, reference, spacing, n_considered)


def class_mask(label_map: np.ndarray, values: Sequence[int]) -> np.ndarray:
    return label_map == values[0] if len(values) == 1 else np.isin(label_map, values)


def _class_box(values: Sequence[int], label_boxes: Sequence[list], shape: Tuple[int, ...],
               margin: int = 1) -> Optional[Tuple[slice, ...]]:
    """Box holding every voxel of `values` in all label maps (from find_objects), plus a margin."""
    if 0 in values:  # background has no find_objects entry: use the whole image
        return tuple(slice(0, n) for n in shape)
    boxes = [per_map[v - 1] for per_map in label_boxes for v in values
             if 0 < v <= len(per_map) and per_map[v - 1] is not None]
    if not boxes:
        return None
    return tuple(slice(max(min(b[axis].start for b in boxes) - margin, 0),
                       min(max(b[axis].stop for b in boxes) + margin, shape[axis])) for axis in range(len(shape)))


def case_metrics(reference: np.ndarray, prediction: np.ndarray, spacing: Optional[Sequence[float]],
                 classes: Sequence[EvaluatedClass], ignore_label: Optional[int] = None) -> CaseMetrics:
    """Metrics of every class (label or region) for one case of two integer label maps of equal shape."""
    reference, prediction = np.asarray(reference), np.asarray(prediction)
    if reference.shape != prediction.shape:
        raise ValueError(f"shape mismatch: reference {reference.shape}, prediction {prediction.shape}")
    reference, prediction = reference.astype(np.int64, copy=False), prediction.astype(np.int64, copy=False)
    spacing = _check_spacing(spacing, reference.ndim)
    ignore_mask = None if ignore_label is None else reference == ignore_label
    n_considered = reference.size - (0 if ignore_mask is None else int(np.count_nonzero(ignore_mask)))
    # one pass per map finds every label's box; each class is then scored inside its own small box
    label_boxes = [find_objects(np.maximum(m, 0)) for m in (reference, prediction)]
    results = {}
    for c in classes:
        box = _class_box(c.values, label_boxes, reference.shape)
        if box is None:  # class in neither map: an empty crop gives the both-empty result
            box = tuple(slice(0, 0) for _ in reference.shape)
        pred, ref = class_mask(prediction[box], c.values), class_mask(reference[box], c.values)
        if ignore_mask is not None:
            pred, ref = pred & ~ignore_mask[box], ref & ~ignore_mask[box]
        results[c.key] = _metrics_of_clean_masks(pred, ref, spacing, n_considered)
    return results


def empty_status(metrics: Mapping[str, float]) -> str:
    """'none', 'both', 'reference' (only the reference is empty) or 'prediction' (only the prediction)."""
    ref_empty, pred_empty = metrics["n_ref"] == 0, metrics["n_pred"] == 0
    if ref_empty and pred_empty:
        return "both"
    return "reference" if ref_empty else "prediction" if pred_empty else "none"


def _finite(values: Sequence[float]) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values[np.isfinite(values)]


def nan_mean(values: Sequence[float]) -> float:
    """Mean of the non-NaN values; NaN (without a warning) when there are none."""
    finite = _finite(values)
    return float(finite.mean()) if finite.size else float("nan")


def nan_sd(values: Sequence[float]) -> float:
    """Sample standard deviation (ddof=1) of the non-NaN values; NaN with fewer than two."""
    finite = _finite(values)
    return float(finite.std(ddof=1)) if finite.size > 1 else float("nan")


def summarise(per_case: Sequence[CaseMetrics], classes: Sequence[EvaluatedClass]) -> dict:
    """Per-class means, SDs and empty-case counts, plus `foreground_mean`, over a list of cases."""
    mean, sd, counts = {}, {}, {}
    for c in classes:
        rows = [case[c.key] for case in per_case]
        mean[c.key] = {m: nan_mean([r[m] for r in rows]) for m in rows[0]} if rows else {}
        sd[c.key] = {m: nan_sd([r[m] for r in rows]) for m in SUMMARY_METRICS}
        status = [empty_status(r) for r in rows]
        counts[c.key] = {"n_cases": len(rows),
                         "n_distance": int(np.sum(np.isfinite([r["HD95"] for r in rows]))),
                         "n_both_empty": status.count("both"),
                         "n_reference_empty_only": status.count("reference"),
                         "n_prediction_empty_only": status.count("prediction")}
    metric_names = list(next(iter(mean.values()), {}))
    foreground_mean = {m: nan_mean([mean[k][m] for k in mean]) for m in metric_names}
    return {"mean": mean, "foreground_mean": foreground_mean, "sd": sd, "counts": counts}
