"""`nnunet-dino select`: nnU-Net's own model selection (`find_best_configuration`: every model's
cross-validation, every pairwise ensemble, the best one's postprocessing and inference instructions)
over any list of models, e.g. nnU-Net's `3d_fullres` beside a DINO trainer's `2d` and `2.5d`.

`nnUNetv2_find_best_configuration` takes every `-tr` trainer in every `-c` configuration, so it cannot
mix a DINO trainer (2d / 2.5d only) with nnU-Net's own 3D model; nnU-Net's function takes an explicit
list, which this command gives it after checking that every fold it needs is finished.
"""
from __future__ import annotations

from typing import Sequence

from ..errors import OptionError
from .folds import DONE, checked_selection
from .models import DEFAULT_CONFIGURATION, DEFAULT_PLANS


def check_finished(selection, folds: Sequence[int], ensembling: bool) -> None:
    """Every model's every fold finished (with `.npz` softmax when ensembles are to be evaluated)."""
    unfinished = [plan for plan in selection.plans(want_npz=ensembling) if plan.action != DONE]
    if unfinished:
        models = " ".join(m.label for m in selection.models)
        npz = " --npz" if ensembling else ""
        raise OptionError(f"not finished: {'; '.join(p.describe() for p in unfinished)}. Run `nnunet-dino crossval "
                          f"-d {selection.name} -tr {models} --folds {' '.join(map(str, folds))}{npz}` first"
                          + ("" if not ensembling else ", or select without ensembles (--no-ensembles)"))


def select_best(dataset: str, models: Sequence, folds: Sequence[int] = (0, 1, 2, 3, 4),
                plans: str = DEFAULT_PLANS, configuration: str = DEFAULT_CONFIGURATION,
                ensembling: bool = True, num_processes: int = 1) -> dict:
    """nnU-Net's `find_best_configuration` over exactly `models`; returns its record (also written as
    `inference_information.json` beside the dataset's models)."""
    if "all" in folds:
        raise OptionError("--folds all: selection compares cross-validation predictions; give numbered folds")
    if len(models) < 2:
        raise OptionError("give at least two models to select from (-tr A B ...)")
    selection = checked_selection(dataset, models, plans, configuration, folds)
    check_finished(selection, folds, ensembling)
    from nnunetv2.evaluation.find_best_configuration import find_best_configuration
    trained = tuple({"plans": m.plans, "configuration": m.configuration, "trainer": m.trainer}
                    for m in selection.models)
    return find_best_configuration(selection.name, trained, allow_ensembling=ensembling,
                                   num_processes=num_processes, overwrite=True, folds=tuple(folds), strict=True)
