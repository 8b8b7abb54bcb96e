"""Statistics of a cross-validation report: mean ± sd over folds, and paired Wilcoxon tests over cases.

Aggregation (what every number in the report means):

* **Per fold**: a class's metric is the mean over that fold's validation cases, NaN-ignoring, with
  the empty-mask policy of `evaluation.metrics` (a class absent from both reference and prediction
  is left out). The fold's *mean* is the mean of its per-class means (nnU-Net's `foreground_mean`).
* **Over folds**: mean and sample sd (ddof=1) of the per-fold values; folds where a value is NaN are
  left out, and `n_folds` says how many entered.
* **Paired comparison**: per case (each case is validated in exactly one fold), a trainer's Dice
  against the reference trainer's on the same case; for *mean*, the case's mean Dice over the
  classes that are not NaN. Cases where either value is NaN are dropped. Test:
  `scipy.stats.wilcoxon(x, y, zero_method="wilcox")` (two-sided): zero differences are dropped
  (the classic Wilcoxon treatment, so identical cases neither help nor hurt; `n_nonzero` says how
  many remain), tied |differences| get average ranks; scipy then computes the p-value from the exact
  null distribution (no ties, no zeros), an exact permutation over all sign flips (ties or zeros,
  n <= 13) or the normal approximation with tie and continuity correction. All differences zero:
  p = 1 (no evidence of a difference), without calling scipy.
"""
from __future__ import annotations

import math
import warnings
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..errors import OptionError

from ..evaluation.metrics import nan_mean, nan_sd
from ..evaluation.tables import MEAN_ROW

METRICS = ("Dice", "HD95", "ASD")
MEAN_KEY = MEAN_ROW  # the foreground mean, a row beside the classes


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def over_folds(per_fold: Mapping[int, float]) -> dict:
    """{'mean', 'sd', 'n_folds', 'per_fold'} of per-fold values (NaN/None folds left out)."""
    values = [_number(v) for v in per_fold.values()]
    return {"mean": nan_mean(values), "sd": nan_sd(values), "n_folds": int(np.isfinite(values).sum()),
            "per_fold": {int(f): _number(v) for f, v in per_fold.items()}}


def aggregate_folds(fold_summaries: Mapping[int, dict], class_keys: Sequence[str]) -> Dict[str, Dict[str, dict]]:
    """class key (and 'mean') -> metric -> over_folds(...), from evaluate_folders' per-fold summaries."""
    table: Dict[str, Dict[str, dict]] = {}
    for key in list(class_keys) + [MEAN_KEY]:
        table[key] = {}
        for metric in METRICS:
            per_fold = {fold: (summary["foreground_mean"] if key == MEAN_KEY else summary["mean"][key]).get(metric)
                        for fold, summary in fold_summaries.items()}
            table[key][metric] = over_folds(per_fold)
    return table


def case_values(rows: Sequence[dict], class_key: str, metric: str = "Dice") -> Dict[str, float]:
    """case -> value for one trainer's per-case rows; class_key 'mean' = mean over the case's classes."""
    by_case: Dict[str, List[float]] = {}
    for row in rows:
        if class_key in (MEAN_KEY, row["class_key"]):
            by_case.setdefault(row["case"], []).append(_number(row[metric]))
    return {case: nan_mean(values) for case, values in by_case.items()}


def paired_wilcoxon(values: Mapping[str, float], reference: Mapping[str, float]) -> dict:
    """Two-sided Wilcoxon signed-rank test of values vs reference over their common finite cases."""
    from scipy.stats import wilcoxon
    cases = sorted(c for c in values if c in reference
                   and math.isfinite(values[c]) and math.isfinite(reference[c]))
    x = np.array([values[c] for c in cases])
    y = np.array([reference[c] for c in cases])
    diff = x - y
    result = {"n_cases": len(cases), "n_nonzero": int(np.count_nonzero(diff)),
              "mean_diff": float(diff.mean()) if len(cases) else float("nan"),
              "median_diff": float(np.median(diff)) if len(cases) else float("nan"),
              "statistic": float("nan"), "p_value": float("nan"), "note": ""}
    only_one = len(set(values) ^ set(reference))
    notes = [f"{only_one} case(s) evaluated for only one of the two" if only_one else ""]
    if not cases:
        notes.append("no common cases")
    elif result["n_nonzero"] == 0:
        result["p_value"] = 1.0
        result["statistic"] = 0.0
        notes.append("identical on every case")
    else:
        with warnings.catch_warnings():  # scipy warns on ties/zeros for small n; we document the handling
            warnings.simplefilter("ignore")
            test = wilcoxon(x, y, zero_method="wilcox", alternative="two-sided")
        result["statistic"], result["p_value"] = float(test.statistic), float(test.pvalue)
        if result["n_nonzero"] < 6:
            notes.append(f"only {result['n_nonzero']} non-zero differences: p cannot be below "
                         f"{2 / 2 ** result['n_nonzero']:.3g}")
    result["note"] = "; ".join(n for n in notes if n)
    return result


def compare_to_reference(per_case: Mapping[str, Sequence[dict]], reference: str, class_keys: Sequence[str],
                         metric: str = "Dice") -> List[dict]:
    """One row per (trainer other than the reference, class key or 'mean')."""
    rows = []
    for trainer, trainer_rows in per_case.items():
        if trainer == reference:
            continue
        for key in [MEAN_KEY] + list(class_keys):
            test = paired_wilcoxon(case_values(trainer_rows, key, metric),
                                   case_values(per_case[reference], key, metric))
            rows.append({"trainer": trainer, "reference": reference, "class_key": key, "metric": metric, **test})
    return rows


def choose_reference(trainers: Sequence[str], requested: Optional[str] = None) -> str:
    """--reference, else the first of nnU-Net's own trainers among -tr (nnUNetTrainer or its
    nnUNetTrainer_<variant> twins such as nnUNetTrainer_250epochs), else the first trainer."""
    import re
    if requested:
        if requested not in trainers:
            raise OptionError(f"--reference {requested!r} is not among the trainers {list(trainers)}")
        return requested
    own = [t for t in trainers if re.fullmatch(r"nnUNetTrainer(_\w+)?", t)]
    return own[0] if own else trainers[0]
