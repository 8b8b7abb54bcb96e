"""Statistics of a cross-validation report: mean ± sd over folds, and paired comparisons over cases
(bootstrap confidence interval, Wilcoxon test, Holm correction, a verdict in plain words).

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
* **Bootstrap interval**: of the mean difference over the same cases, paired (a resample draws cases
  with replacement and keeps each case's two values together): `numpy.random.default_rng(seed)`
  draws all resamples at once (`integers(0, n, (resamples, n))`), and the interval is the 2.5th and
  97.5th percentile of the resampled means (numpy's linear interpolation) -- the percentile bootstrap
  of `scipy.stats.bootstrap(method='percentile')` with the same generator. The learning curves use
  the same bootstrap for a model's mean over cases.
* **Holm correction**: over every comparison of one report (each model other than the reference x
  each class and the mean x Dice, HD95, ASD): the i-th smallest of m p-values becomes
  max over j <= i of min(1, (m - j + 1) p_(j)).
* **Verdict**: *better* when the Holm-corrected p < 0.05 **and** the 95 % interval lies entirely on
  the better side of 0 (higher Dice, lower HD95 / ASD); *worse* likewise on the other side;
  otherwise *no detectable difference at 95 %*.
"""
from __future__ import annotations

import math
import warnings
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from ..evaluation.metrics import nan_mean, nan_sd
from ..evaluation.tables import MEAN_ROW

METRICS = ("Dice", "HD95", "ASD")
HIGHER_IS_BETTER = {"Dice": True, "HD95": False, "ASD": False}
MEAN_KEY = MEAN_ROW  # the foreground mean, a row beside the classes
RESAMPLES, SEED, LEVEL, ALPHA = 10000, 0, 0.95, 0.05
BETTER, WORSE, NO_DIFFERENCE, NOT_COMPARED = ("better", "worse", "no detectable difference at 95 %",
                                              "not compared (no common cases)")


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


def bootstrap_interval(values: Sequence[float], n_resamples: int = RESAMPLES, seed: int = SEED,
                       level: float = LEVEL) -> Tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (see the module docstring); NaN when empty."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return float("nan"), float("nan")
    indices = np.random.default_rng(seed).integers(0, values.size, (n_resamples, values.size))
    means = values[indices].mean(axis=-1)
    low, high = np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(low), float(high)


def holm(p_values: Sequence[float]) -> List[float]:
    """Holm-adjusted p-values (NaN stays NaN and does not count in m)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m = order.size
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return [float(v) for v in adjusted]


def verdict(metric: str, ci_low: float, ci_high: float, p_holm: float, alpha: float = ALPHA) -> str:
    """'better' / 'worse' / 'no detectable difference at 95 %' for a difference model - reference."""
    if not (math.isfinite(ci_low) and math.isfinite(ci_high) and math.isfinite(p_holm)):
        return NOT_COMPARED if not math.isfinite(ci_low) else NO_DIFFERENCE
    if p_holm >= alpha or ci_low <= 0 <= ci_high:
        return NO_DIFFERENCE
    return BETTER if (ci_low > 0) == HIGHER_IS_BETTER[metric] else WORSE


def paired_comparison(values: Mapping[str, float], reference: Mapping[str, float], n_resamples: int = RESAMPLES,
                      seed: int = SEED) -> dict:
    """paired_wilcoxon plus the bootstrap interval of the mean difference over the same cases."""
    result = paired_wilcoxon(values, reference)
    cases = sorted(c for c in values if c in reference and math.isfinite(values[c]) and math.isfinite(reference[c]))
    low, high = bootstrap_interval([values[c] - reference[c] for c in cases], n_resamples, seed)
    return {**result, "ci_low": low, "ci_high": high, "n_resamples": n_resamples, "seed": seed}


def compare_to_reference(per_case: Mapping[str, Sequence[dict]], reference: str, class_keys: Sequence[str],
                         metrics: Sequence[str] = METRICS, n_resamples: int = RESAMPLES, seed: int = SEED) -> List[dict]:
    """One row per (metric, model other than the reference, class key or 'mean'), Dice rows first, with
    Holm-corrected p-values over all rows and a verdict each."""
    rows = []
    for metric in metrics:
        for model, model_rows in per_case.items():
            if model == reference:
                continue
            for key in [MEAN_KEY] + list(class_keys):
                test = paired_comparison(case_values(model_rows, key, metric),
                                         case_values(per_case[reference], key, metric), n_resamples, seed)
                rows.append({"trainer": model, "reference": reference, "class_key": key, "metric": metric, **test})
    for row, p_holm in zip(rows, holm([r["p_value"] for r in rows])):
        row["p_holm"] = p_holm
        row["verdict"] = verdict(row["metric"], row["ci_low"], row["ci_high"], p_holm)
    return rows
