"""Where a segmentation's errors lie along z, for issue 34's comparison of a `2.5d` and a `2d` model on the
same case (`slab_colin27.py`).

Every false-positive (FP) and false-negative (FN) voxel of one structure gets one location class, the first
that applies:

* `island` (FP): the voxel belongs to a connected component of the prediction that touches no reference
  voxel (a stray blob; its distance from the reference surface is recorded);
* `missed component` (FN): it belongs to a component of the reference the prediction does not touch;
* `first/last slice`: it lies in the volume's first or last slice (where a slab's neighbours repeat);
* `slab edge`: it lies in a slice where a sliding-window tile along z starts or ends (its context is
  one-sided there; `slab_windows` gives the tiles of the prediction path);
* `interior`: anywhere else.

HD95 pools the surface distances of both directions (evaluation/metrics.py); each distance belongs to a
surface voxel, of the prediction (its FP side) or of the reference (its FN side), so it gets that voxel's
class. `hd95_by_location` says how many of the distances at or above the case's HD95 (the tail that sets
it) come from each class, and each class's own 95th percentile. The 2d model's errors are classified by
the same slab windows, so both models are compared slice class by slice class on the same cases.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
from scipy.ndimage import distance_transform_edt, label

# the evaluator's surface (face-connected erosion), so these distances are exactly the ones HD95 pools
from ..evaluation.metrics import _surface

ISLAND, MISSED, VOLUME_EDGE, SLAB_EDGE, INTERIOR = "island", "missed component", "first/last slice", "slab edge", \
    "interior"
FP_CLASSES = (ISLAND, VOLUME_EDGE, SLAB_EDGE, INTERIOR)
FN_CLASSES = (MISSED, VOLUME_EDGE, SLAB_EDGE, INTERIOR)
LOCATIONS = (ISLAND, MISSED, VOLUME_EDGE, SLAB_EDGE, INTERIOR)


def slab_windows(depth: int, slices: int, step_fraction: float) -> List[Tuple[int, int]]:
    """[start, stop) of every sliding-window tile along z of a `depth`-slice case, as nnU-Net places them
    (its own function: evenly spread, the last tile ending at the last slice)."""
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window
    if depth <= slices:
        return [(0, depth)]
    starts = compute_steps_for_sliding_window((depth,), (slices,), step_fraction)[0]
    return [(int(s), int(s) + slices) for s in starts]


def slice_classes(depth: int, windows: Sequence[Tuple[int, int]]) -> np.ndarray:
    """The location class of every slice index: first/last slice, slab edge or interior."""
    classes = np.array([INTERIOR] * depth, dtype=object)
    for start, stop in windows:
        classes[[start, stop - 1]] = SLAB_EDGE
    classes[[0, depth - 1]] = VOLUME_EDGE
    return classes


def _untouched_components(mask: np.ndarray, other: np.ndarray) -> Tuple[np.ndarray, List[np.ndarray]]:
    """(all voxels of `mask`'s components that share no voxel with `other`, each such component's mask)."""
    components, count = label(mask)
    touched = set(np.unique(components[other & mask]).tolist())
    untouched = [i for i in range(1, count + 1) if i not in touched]
    return np.isin(components, untouched), [components == i for i in untouched]


def _classify(voxels: np.ndarray, component_voxels: np.ndarray, component_class: str,
              z_classes: np.ndarray) -> np.ndarray:
    """The class of each voxel where `voxels` is set (same order as `voxels[voxels]`)."""
    z = np.nonzero(voxels)[0]
    classes = z_classes[z].copy()
    classes[component_voxels[voxels]] = component_class
    return classes


def _counts(classes: np.ndarray, names: Sequence[str]) -> Dict[str, int]:
    return {name: int(np.count_nonzero(classes == name)) for name in names}


def hd95_by_location(distances: np.ndarray, classes: np.ndarray) -> dict:
    """The pooled surface distances' HD95 and, per location class, its distances' count, 95th percentile
    and how many of the non-zero distances at or above HD95 (the tail that sets it) it holds."""
    hd95 = float(np.percentile(distances, 95))
    tail = (distances >= hd95) & (distances > 0)  # an HD95 of 0 has no tail: the surfaces coincide there
    by_class = {}
    for name in LOCATIONS:
        mine = classes == name
        if mine.any():
            by_class[name] = {"n": int(mine.sum()), "p95_mm": float(np.percentile(distances[mine], 95)),
                              "tail": int(np.count_nonzero(tail & mine))}
    return {"hd95_mm": hd95, "tail": int(tail.sum()), "by_location": by_class}


def error_locations(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float],
                    windows: Sequence[Tuple[int, int]]) -> dict:
    """FP and FN voxel counts per location class, the islands (voxels, distance from the reference surface
    in mm: nearest and farthest voxel; None without a reference) and the HD95 breakdown of one structure of
    one (z, y, x) case."""
    prediction, reference = np.asarray(prediction, bool), np.asarray(reference, bool)
    z_classes = slice_classes(prediction.shape[0], windows)
    island_voxels, islands = _untouched_components(prediction, reference)
    missed_voxels, _ = _untouched_components(reference, prediction)
    fp, fn = prediction & ~reference, reference & ~prediction
    result = {"fp": _counts(_classify(fp, island_voxels, ISLAND, z_classes), FP_CLASSES),
              "fn": _counts(_classify(fn, missed_voxels, MISSED, z_classes), FN_CLASSES),
              "islands": [{"voxels": int(island.sum()), "min_mm": None, "max_mm": None} for island in islands],
              "hd95": None}
    if not (prediction.any() and reference.any()):
        return result  # no surface to measure from (the evaluator's HD95 is undefined too)
    surface_pred, surface_ref = _surface(prediction), _surface(reference)
    to_ref = distance_transform_edt(~surface_ref, sampling=spacing)
    to_pred = distance_transform_edt(~surface_pred, sampling=spacing)
    for island, entry in zip(islands, result["islands"]):
        entry.update(min_mm=float(to_ref[island].min()), max_mm=float(to_ref[island].max()))
    distances = np.concatenate([to_ref[surface_pred], to_pred[surface_ref]])
    classes = np.concatenate([_classify(surface_pred, island_voxels, ISLAND, z_classes),
                              _classify(surface_ref, missed_voxels, MISSED, z_classes)])
    result["hd95"] = hd95_by_location(distances, classes)
    return result


def add_up(cases: Sequence[dict]) -> dict:
    """The error locations of several cases (or structures) added up: voxel counts, islands, HD95 tails."""
    total = {"fp": dict.fromkeys(FP_CLASSES, 0), "fn": dict.fromkeys(FN_CLASSES, 0), "islands": [],
             "tail": dict.fromkeys(LOCATIONS, 0), "p95_mm": {name: [] for name in LOCATIONS}}
    for case in cases:
        for side in ("fp", "fn"):
            for name, count in case[side].items():
                total[side][name] += count
        total["islands"] += case["islands"]
        for name, entry in ((case["hd95"] or {}).get("by_location") or {}).items():
            total["tail"][name] += entry["tail"]
            total["p95_mm"][name].append(entry["p95_mm"])
    total["p95_mm"] = {name: (float(np.median(v)) if v else None) for name, v in total["p95_mm"].items()}
    return total
