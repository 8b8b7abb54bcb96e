"""Files of `nnunet-dino report`: report.md, cv_summary.csv, cv_per_case.csv, cv_comparison.csv,
report.json (NaN as null) and boxplot_<class>.png (per-case Dice and HD95 of every trainer)."""
from __future__ import annotations

import csv
import json
import math
import os
import re
from typing import Dict, List

from ..evaluation.folders import json_ready
from ..evaluation.tables import UNITS, metric_cell, per_class_table
from .report import CrossValReport, class_name
from .statistics import MEAN_KEY, METRICS, __doc__ as AGGREGATION_DOC

def _p(value: float) -> str:
    return "–" if value is None or math.isnan(value) else (f"{value:.2e}" if value < 1e-3 else f"{value:.4f}")


def _metric_table(report: CrossValReport, metric: str) -> List[str]:
    def column(trainer: str):
        def cell(key: str) -> str:
            stats = report.summary[trainer][key][metric]
            return metric_cell(metric, stats["mean"], stats["sd"])
        return f"`{trainer}`", cell
    names = {**report.class_names, MEAN_KEY: class_name(report, MEAN_KEY)}
    return per_class_table(names, [column(t) for t in report.trainers], mean_label=None).splitlines()


def markdown(report: CrossValReport, plots: Dict[str, str]) -> str:
    n_cases = {t: len({r["case"] for r in rows}) for t, rows in report.per_case.items()}
    lines = [f"# Cross-validation: {report.dataset} ({report.configuration}, {report.plans})", "",
             f"Folds {', '.join(map(str, report.folds))}; validation cases per trainer: "
             + ", ".join(f"`{t}` {n}" for t, n in n_cases.items()) + ". Scored with nnunet-dino's evaluation "
             "(HD95 and ASD in mm from the image spacing) against `gt_segmentations` of the preprocessed dataset.",
             "", "Every cell: **mean ± sd over folds** of the per-fold mean over that fold's validation cases "
             "(sd with ddof=1; '–': undefined, e.g. a class absent from every case). The *mean (foreground)* "
             "row averages a fold's per-class means first.", ""]
    for metric in METRICS:
        lines += [f"## {metric}{UNITS[metric]}", ""] + _metric_table(report, metric) + [""]
    if report.comparison:
        lines += [f"## Paired comparison against `{report.reference}` (Dice per case)", "",
                  "Wilcoxon signed-rank test, two-sided, over the cases both trainers validated "
                  "(`scipy.stats.wilcoxon`, `zero_method='wilcox'`: cases with zero difference are dropped; "
                  "tied differences get average ranks). Δ = trainer − reference.", "",
                  "| trainer | class | cases | non-zero Δ | mean Δ | median Δ | p | note |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in report.comparison:
            lines.append(f"| `{row['trainer']}` | {class_name(report, row['class_key'])} | {row['n_cases']} | "
                         f"{row['n_nonzero']} | {row['mean_diff']:+.4f} | {row['median_diff']:+.4f} | "
                         f"{_p(row['p_value'])} | {row['note']} |")
        lines.append("")
    lines += ["## Models", "", "| trainer | trainable parameters | total parameters | trainable % | epochs | encoder |",
              "|---|---|---|---|---|---|"]
    for trainer, facts in report.models.items():
        if "error" in facts:
            lines.append(f"| `{trainer}` | – | – | – | – ({facts['error']}) | – |")
            continue
        share = 100 * facts["trainable_params"] / max(facts["total_params"], 1)
        lines.append(f"| `{trainer}` | {facts['trainable_params']:,} | {facts['total_params']:,} | {share:.1f} | "
                     f"{facts['epochs']} | {facts.get('encoder', '-')} |")
    if report.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    lines += ["", "## Box plots (per-case Dice and HD95, all folds)", ""]
    lines += [f"![{name}]({os.path.basename(path)})" for name, path in plots.items()]
    lines += ["", "## How the numbers are made", "", AGGREGATION_DOC.strip(), ""]
    return "\n".join(lines)


def _number(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(float(value))


def write_csvs(report: CrossValReport, output: str) -> Dict[str, str]:
    paths = {name: os.path.join(output, f"cv_{name}.csv") for name in ("summary", "per_case", "comparison")}
    with open(paths["summary"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trainer", "class_key", "class_name", "metric", "mean_over_folds", "sd_over_folds", "n_folds"]
                        + [f"fold_{k}" for k in report.folds])
        for trainer in report.trainers:
            for key, metrics in report.summary[trainer].items():
                for metric, stats in metrics.items():
                    writer.writerow([trainer, key, class_name(report, key), metric, _number(stats["mean"]),
                                     _number(stats["sd"]), stats["n_folds"]]
                                    + [_number(stats["per_fold"].get(k)) for k in report.folds])
    with open(paths["per_case"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trainer", "fold", "case", "class_key", "class_name", "Dice", "HD95_mm", "ASD_mm"])
        for trainer, rows in report.per_case.items():
            for r in rows:
                writer.writerow([trainer, r["fold"], r["case"], r["class_key"], report.class_names[r["class_key"]],
                                 _number(r["Dice"]), _number(r["HD95"]), _number(r["ASD"])])
    with open(paths["comparison"], "w", newline="") as f:
        columns = ["trainer", "reference", "class_key", "metric", "n_cases", "n_nonzero", "mean_diff", "median_diff",
                   "statistic", "p_value", "note"]
        writer = csv.writer(f)
        writer.writerow(columns[:3] + ["class_name"] + columns[3:])
        for row in report.comparison:
            writer.writerow([row["trainer"], row["reference"], row["class_key"], class_name(report, row["class_key"]),
                             row["metric"], row["n_cases"], row["n_nonzero"], _number(row["mean_diff"]),
                             _number(row["median_diff"]), _number(row["statistic"]), _number(row["p_value"]),
                             row["note"]])
    return paths


def box_plots(report: CrossValReport, output: str) -> Dict[str, str]:
    """class name -> PNG with two panels (Dice, HD95 mm): one box per trainer over all validated cases."""
    from matplotlib.figure import Figure  # no pyplot: the caller's matplotlib backend is left alone
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


def write_report(report: CrossValReport, output: str) -> Dict[str, str]:
    """All report files in `output`; returns name -> path."""
    os.makedirs(output, exist_ok=True)
    plots = box_plots(report, output)
    paths = write_csvs(report, output)
    paths["json"] = os.path.join(output, "report.json")
    with open(paths["json"], "w") as f:
        json.dump(json_ready(report.to_json()), f, indent=2, allow_nan=False)
    paths["markdown"] = os.path.join(output, "report.md")
    with open(paths["markdown"], "w") as f:
        f.write(markdown(report, plots))
    paths.update({f"boxplot {name}": path for name, path in plots.items()})
    return paths
