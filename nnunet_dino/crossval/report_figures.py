"""Figures of `nnunet-dino report` (matplotlib's Figure, no pyplot: the caller's backend is left alone):
a box plot per class (per-case Dice and HD95 of every model) and the learning curves (Dice and HD95 of
the foreground mean against the number of training cases, with the bootstrap 95 % intervals)."""
from __future__ import annotations

import math
import os
import re
from typing import Dict

from ..evaluation.tables import UNITS
from .report import CrossValReport
from .statistics import MEAN_KEY

LEARNING_CURVES_FILE = "learning_curves.png"


def box_plots(report: CrossValReport, output: str) -> Dict[str, str]:
    """class name -> PNG with two panels (Dice, HD95 mm): one box per model over all validated cases."""
    from matplotlib.figure import Figure
    paths = {}
    for key, name in report.class_names.items():
        fig = Figure(figsize=(max(6.0, 2.2 * len(report.trainers) + 2), 4.2))
        axes = fig.subplots(1, 2)
        for ax, metric in zip(axes, ("Dice", "HD95")):
            data = [[r[metric] for r in report.per_case[t] if r["class_key"] == key and not math.isnan(r[metric])]
                    for t in report.trainers]
            ax.boxplot([d if d else [float("nan")] for d in data], showmeans=True)
            ax.set_xticks(range(1, len(report.trainers) + 1), report.trainers, rotation=20, ha="right", fontsize=8)
            ax.set_title(f"{name}: {metric}{UNITS[metric]}", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
        fig.suptitle(f"{report.dataset}, folds {','.join(map(str, report.folds))}", fontsize=9)
        fig.tight_layout()
        stem = re.sub(r"[^A-Za-z0-9_-]+", "_", f"{key}_{name}").strip("_")  # region keys look like "(1, 2)"
        path = os.path.join(output, f"boxplot_{stem}.png")
        fig.savefig(path, dpi=100)
        paths[name] = path
    return paths


def learning_curve_plot(report: CrossValReport, output: str) -> Dict[str, str]:
    """{'learning curves': PNG}: per model, the foreground mean's Dice and HD95 against the mean number of
    training cases, error bars = bootstrap 95 % interval over cases; {} without train-fraction runs."""
    rows = [r for r in report.learning_curves if r["class_key"] == MEAN_KEY]
    if not rows:
        return {}
    from matplotlib.figure import Figure
    fig = Figure(figsize=(10.0, 4.2))
    for ax, metric in zip(fig.subplots(1, 2), ("Dice", "HD95")):
        for model in report.trainers:
            points = sorted((r["n_train"], r["case_mean"], r["ci_low"], r["ci_high"]) for r in rows
                            if r["trainer"] == model and r["metric"] == metric)
            if not points:
                continue
            x, y, low, high = (list(v) for v in zip(*points))
            ax.errorbar(x, y, yerr=[[a - b for a, b in zip(y, low)], [b - a for a, b in zip(y, high)]],
                        marker="o", capsize=3, label=model)
        ax.set_xlabel("training cases per fold (mean over folds)")
        ax.set_title(f"mean (foreground): {metric}{UNITS[metric]}, 95 % bootstrap interval", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{report.dataset}: label efficiency, folds {','.join(map(str, report.folds))}", fontsize=9)
    fig.tight_layout()
    path = os.path.join(output, LEARNING_CURVES_FILE)
    fig.savefig(path, dpi=100)
    return {"learning curves": path}
