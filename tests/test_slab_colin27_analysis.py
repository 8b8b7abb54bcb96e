"""The error-location analysis of the Colin27 slab comparison (nnunet_dino/bench/slab_colin27_analysis.py) on a
tiny volume with errors placed by hand: every FP and FN voxel lands in the class its position says, islands
carry their distance from the reference surface, and the HD95 it breaks down is the evaluator's."""
import numpy as np
import pytest

from nnunet_dino.bench.slab_colin27_analysis import (INTERIOR, ISLAND, MISSED, SLAB_EDGE, VOLUME_EDGE, add_up,
                                                     error_locations, slab_windows, slice_classes)
from nnunet_dino.evaluation import binary_metrics

SPACING = (2.0, 1.0, 1.0)


def test_windows_and_slice_classes_follow_nnunets_sliding_window():
    assert slab_windows(6, 5, 0.5) == [(0, 5), (1, 6)]
    assert slab_windows(12, 5, 0.8) == [(0, 5), (4, 9), (7, 12)]
    assert slab_windows(4, 5, 0.5) == [(0, 4)]
    assert list(slice_classes(12, slab_windows(12, 5, 0.8))) == [
        VOLUME_EDGE, INTERIOR, INTERIOR, INTERIOR, SLAB_EDGE, INTERIOR, INTERIOR, SLAB_EDGE, SLAB_EDGE,
        INTERIOR, INTERIOR, VOLUME_EDGE]


def _case():
    reference = np.zeros((12, 20, 20), bool)
    reference[:, 5:10, 5:10] = True           # a column through every slice
    reference[6, 15:17, 15:17] = True         # a small blob the prediction misses entirely
    prediction = reference.copy()
    prediction[6, 15:17, 15:17] = False       # FN: missed component (4 voxels)
    prediction[0, 5, 5] = False               # FN: first slice
    prediction[4, 5, 6] = False               # FN: slab edge (z 4 ends/starts a tile)
    prediction[2, 10, 5:7] = True             # FP: interior, attached to the column (2 voxels)
    prediction[11, 10, 5] = True              # FP: last slice, attached
    prediction[4:7, 0:4, 16:20] = True        # FP: an island (48 voxels) beside the column
    return prediction, reference


def test_each_error_voxel_gets_the_class_of_where_it_lies():
    prediction, reference = _case()
    result = error_locations(prediction, reference, SPACING, slab_windows(12, 5, 0.8))
    assert result["fp"] == {ISLAND: 48, VOLUME_EDGE: 1, SLAB_EDGE: 0, INTERIOR: 2}
    assert result["fn"] == {MISSED: 4, VOLUME_EDGE: 1, SLAB_EDGE: 1, INTERIOR: 0}
    (island,) = result["islands"]
    assert island["voxels"] == 48
    # nearest reference surface voxel: the column's corner (z, 5, 9) from (z, 3, 16): dy 2 mm, dx 7 mm
    assert island["min_mm"] == pytest.approx(np.sqrt(2 ** 2 + 7 ** 2))


def test_the_hd95_breakdown_is_the_evaluators_hd95_and_its_tail_is_the_island():
    prediction, reference = _case()
    result = error_locations(prediction, reference, SPACING, slab_windows(12, 5, 0.8))
    hd95 = result["hd95"]
    assert hd95["hd95_mm"] == pytest.approx(binary_metrics(prediction, reference, SPACING)["HD95"])
    tail = {name: entry["tail"] for name, entry in hd95["by_location"].items()}
    assert sum(tail.values()) == hd95["tail"] and max(tail, key=tail.get) in (ISLAND, MISSED)
    total = add_up([result, result])
    assert total["fp"][ISLAND] == 96 and len(total["islands"]) == 2 and total["tail"] == {
        name: 2 * tail.get(name, 0) for name in total["tail"]}


def test_an_empty_prediction_has_only_missed_voxels_and_no_distances():
    _, reference = _case()
    result = error_locations(np.zeros_like(reference), reference, SPACING, [(0, 12)])
    assert result["hd95"] is None and sum(result["fp"].values()) == 0
    assert sum(result["fn"].values()) == int(reference.sum()) == result["fn"][MISSED]


def test_islands_of_a_case_without_the_structure_are_counted_without_a_distance():
    prediction, reference = _case()
    result = error_locations(prediction, np.zeros_like(reference), SPACING, [(0, 12)])
    assert sum(i["voxels"] for i in result["islands"]) == result["fp"][ISLAND] == int(prediction.sum())
    assert {i["min_mm"] for i in result["islands"]} == {None}
