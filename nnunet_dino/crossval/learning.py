"""Learning curves of the train-fraction runs (label efficiency): per model and fraction, the number of
training cases (mean over folds, from splits_final.json), and per class and for the mean, Dice and
HD95 as the mean over the validated cases with its bootstrap 95 % interval (`statistics`), beside the
mean ± sd over folds. Every fraction is validated on the same cases as the full-data run."""
from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

from .fractions import training_case_counts
from .models import ModelSpec
from .statistics import MEAN_KEY, aggregate_folds, bootstrap_interval, case_values, nan_mean

CURVE_METRICS = ("Dice", "HD95")


def learning_curves(name: str, models: Sequence[ModelSpec], runs: Dict[Tuple[int, float], int],
                    per_run: Dict[Tuple[str, float], List[dict]], summaries: Dict[Tuple[str, float], Dict[int, dict]],
                    class_keys: Sequence[str], n_resamples: int, seed: int) -> List[dict]:
    """One row per model x fraction x metric x class key (and 'mean'), for the runs that exist."""
    counts = training_case_counts(name)
    rows = []
    for model in models:
        for fraction in sorted({f for _, f in runs}):
            key = (model.label, fraction)
            if key not in per_run:
                continue
            n_train = {fold: counts.get(runs[(fold, fraction)]) for fold in sorted(summaries[key], key=str)}
            over_folds = aggregate_folds(summaries[key], class_keys)
            for metric in CURVE_METRICS:
                for class_key in [MEAN_KEY] + list(class_keys):
                    values = [v for v in case_values(per_run[key], class_key, metric).values() if math.isfinite(v)]
                    low, high = bootstrap_interval(values, n_resamples, seed)
                    stats = over_folds[class_key][metric]
                    rows.append({"trainer": model.label, "fraction": fraction,
                                 "n_train": nan_mean([n for n in n_train.values() if n is not None]),
                                 "n_train_per_fold": n_train, "class_key": class_key, "metric": metric,
                                 "case_mean": nan_mean(values), "ci_low": low, "ci_high": high, "n_cases": len(values),
                                 "mean_over_folds": stats["mean"], "sd_over_folds": stats["sd"]})
    return rows
