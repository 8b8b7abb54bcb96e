"""Files of `nnunet-dino report`: report.md (a one-screen summary first), report.html (the same report,
self-contained: figures embedded), cv_summary.csv, cv_per_case.csv, cv_comparison.csv,
cv_learning_curves.csv, report.json (NaN as null), boxplot_<class>.png and learning_curves.png."""
from __future__ import annotations

import csv
import json
import math
import os
from typing import Dict, List

from ..evaluation.folders import json_ready
from ..evaluation.tables import DIGITS, UNDEFINED, UNITS, metric_cell, per_class_table
from .report import CrossValReport, class_name
from .report_figures import box_plots, learning_curve_plot
from .report_html import write_html
from .statistics import MEAN_KEY, METRICS, __doc__ as AGGREGATION_DOC

SUMMARY_HEADING = "## Summary"


def _p(value: float) -> str:
    return UNDEFINED if value is None or math.isnan(value) else (f"{value:.2e}" if value < 1e-3 else f"{value:.4f}")


def _signed(metric: str, value: float) -> str:
    return UNDEFINED if value is None or math.isnan(value) else f"{value:+.{DIGITS[metric]}f}"


def _interval(metric: str, low: float, high: float) -> str:
    return f"[{_signed(metric, low)}, {_signed(metric, high)}]" if not math.isnan(low) else UNDEFINED


def _metric_table(report: CrossValReport, metric: str) -> List[str]:
    def column(model: str):
        def cell(key: str) -> str:
            stats = report.summary[model][key][metric]
            return metric_cell(metric, stats["mean"], stats["sd"])
        return f"`{model}`", cell
    names = {**report.class_names, MEAN_KEY: class_name(report, MEAN_KEY)}
    return per_class_table(names, [column(t) for t in report.trainers], mean_label=None).splitlines()


def _row(report: CrossValReport, model: str, key: str, metric: str) -> dict:
    return next((r for r in report.comparison if r["trainer"] == model and r["class_key"] == key
                 and r["metric"] == metric), {})


def summary_section(report: CrossValReport) -> List[str]:
    """One screen: the best model per class (Dice) and every model's verdict against the reference."""
    lines = [SUMMARY_HEADING, ""]
    if any("RANDOM" in note for note in report.notes):
        lines += ["**Some models were trained on a RANDOM frozen backbone** (see Notes): their numbers show the "
                  "pipeline works, not what the method can do.", ""]
    names = {**report.class_names, MEAN_KEY: class_name(report, MEAN_KEY)}

    def best(key: str) -> str:
        scored = [(report.summary[m][key]["Dice"]["mean"], m) for m in report.trainers]
        scored = [(v, m) for v, m in scored if v is not None and not math.isnan(v)]
        return max(scored)[1] if scored else ""

    def best_cell(key: str) -> str:
        model = best(key)
        if not model:
            return UNDEFINED
        stats = report.summary[model][key]["Dice"]
        against = "reference" if model == report.reference else _row(report, model, key, "Dice").get("verdict", "")
        return f"`{model}` {metric_cell('Dice', stats['mean'], stats['sd'])} ({against})"
    lines += [f"Best model per class by Dice (mean ± sd over folds), and its verdict against the reference "
              f"`{report.reference}`:", ""]
    lines += per_class_table(names, [("best model (Dice)", best_cell)], mean_label=None).splitlines() + [""]
    if report.comparison:
        count = sum(1 for r in report.comparison if r["p_value"] is not None and not math.isnan(r["p_value"]))
        lines += [f"Verdicts against `{report.reference}`, foreground mean per case: mean Δ [95 % bootstrap interval, "
                  f"{report.n_resamples} resamples, seed {report.seed}], Holm-corrected over the {count} comparisons "
                  f"of this report:", "", "| model | " + " | ".join(f"{m}{UNITS[m]}" for m in METRICS) + " |",
                  "|---|" + "---|" * len(METRICS)]
        for model in report.trainers:
            if model != report.reference:
                cells = [_row(report, model, MEAN_KEY, m) for m in METRICS]
                lines.append(f"| `{model}` | " + " | ".join(
                    f"**{r['verdict']}** {_signed(m, r['mean_diff'])} {_interval(m, r['ci_low'], r['ci_high'])}"
                    for m, r in zip(METRICS, cells)) + " |")
        lines.append("")
    return lines


def comparison_section(report: CrossValReport) -> List[str]:
    lines = [f"## Paired comparison against `{report.reference}` (Dice, HD95, ASD per case)", "",
             f"Δ = model − reference over the cases both validated. Mean Δ with its paired bootstrap 95 % interval "
             f"({report.n_resamples} resamples of the cases, seed {report.seed}); Wilcoxon signed-rank test, "
             "two-sided (`scipy.stats.wilcoxon`, `zero_method='wilcox'`); p (Holm): corrected over every row of "
             "this table. Verdict: better / worse when the Holm p < 0.05 and the interval excludes 0 on that side "
             "(higher Dice, lower HD95 / ASD).", "",
             "| metric | model | class | cases | mean Δ [95 % CI] | median Δ | p | p (Holm) | verdict | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in report.comparison:
        m = row["metric"]
        lines.append(f"| {m} | `{row['trainer']}` | {class_name(report, row['class_key'])} | {row['n_cases']} | "
                     f"{_signed(m, row['mean_diff'])} {_interval(m, row['ci_low'], row['ci_high'])} | "
                     f"{_signed(m, row['median_diff'])} | {_p(row['p_value'])} | {_p(row['p_holm'])} | "
                     f"{row['verdict']} | {row['note']} |")
    return lines + [""]


def learning_section(report: CrossValReport, figures: Dict[str, str]) -> List[str]:
    rows = [r for r in report.learning_curves if r["class_key"] == MEAN_KEY]
    lines = ["## Label efficiency (learning curves)", "",
             "Each model trained on a seeded fraction of every fold's training cases (the same subset for every "
             "model; fraction 1 is the full-data run) and validated on the fold's unchanged validation cases. "
             "Foreground mean per case: mean over cases [bootstrap 95 % interval]; per class in "
             "`cv_learning_curves.csv`.", "",
             "| model | fraction | training cases (mean over folds) | Dice | HD95 mm | Dice, mean ± sd over folds |",
             "|---|---|---|---|---|---|"]
    for model in report.trainers:
        for fraction in report.fractions:
            cells = {r["metric"]: r for r in rows if r["trainer"] == model and r["fraction"] == fraction}
            if cells:
                dice, hd95 = cells["Dice"], cells["HD95"]
                lines.append(
                    f"| `{model}` | {fraction:g} | {dice['n_train']:.1f} | {metric_cell('Dice', dice['case_mean'])} "
                    f"[{metric_cell('Dice', dice['ci_low'])}, {metric_cell('Dice', dice['ci_high'])}] | "
                    f"{metric_cell('HD95', hd95['case_mean'])} [{metric_cell('HD95', hd95['ci_low'])}, "
                    f"{metric_cell('HD95', hd95['ci_high'])}] | "
                    f"{metric_cell('Dice', dice['mean_over_folds'], dice['sd_over_folds'])} |")
    return lines + [""] + [f"![{name}]({os.path.basename(path)})" for name, path in figures.items()] + [""]


def _seconds(value) -> str:
    return UNDEFINED if value is None or math.isnan(value) else f"{value:.2f}"


def models_section(report: CrossValReport) -> List[str]:
    lines = ["## Models", "",
             "Parameters of the network rebuilt from a checkpoint; times from nnU-Net's training logs: s / epoch is "
             "the median over every logged epoch of every fold, s / case the fold's validation (sliding-window "
             "prediction and export) per case, mean over folds.", "",
             "| model | trainer | configuration | plans | trainable parameters | total parameters | trainable % | "
             "adaptation | epochs | s / epoch | s / case predicted |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for model, facts in report.models.items():
        spec = report.specs.get(model, {})
        head = f"| `{model}` | {spec.get('trainer', '')} | {spec.get('configuration', '')} | {spec.get('plans', '')} | "
        times = f"{_seconds(facts.get('epoch_seconds'))} | {_seconds(facts.get('predict_seconds_per_case'))} |"
        if "error" in facts:
            lines.append(head + f"– | – | – | – | – ({facts['error']}) | " + times)
            continue
        share = 100 * facts["trainable_params"] / max(facts["total_params"], 1)
        lines.append(head + f"{facts['trainable_params']:,} | {facts['total_params']:,} | {share:.1f} | "
                     f"{facts.get('adaptation') or UNDEFINED} | {facts['epochs']} | " + times)
    return lines + [""]


def markdown(report: CrossValReport, plots: Dict[str, str], curves: Dict[str, str]) -> str:
    n_cases = {t: len({r["case"] for r in rows}) for t, rows in report.per_case.items()}
    lines = [f"# Cross-validation: {report.dataset}", "",
             "Models (TRAINER[:CONFIGURATION[:PLANS]]; omitted parts are 2d and nnUNetPlans): "
             + ", ".join(f"`{t}`" for t in report.trainers) + f". Folds {', '.join(map(str, report.folds))}; "
             f"{max(n_cases.values())} validation cases, the same for every model. Scored with nnunet-dino's "
             "evaluation (HD95 and ASD in mm from the image spacing) against `gt_segmentations` of the preprocessed "
             "dataset; predictions of every configuration are in the original image geometry.", ""]
    lines += summary_section(report)
    lines += ["## Per class, mean ± sd over folds", "",
              "Every cell: **mean ± sd over folds** of the per-fold mean over that fold's validation cases "
              "(sd with ddof=1; '–': undefined, e.g. a class absent from every case). The *mean (foreground)* "
              "row averages a fold's per-class means first.", ""]
    for metric in METRICS:
        lines += [f"### {metric}{UNITS[metric]}", ""] + _metric_table(report, metric) + [""]
    if report.comparison:
        lines += comparison_section(report)
    lines += ["## Box plots (per-case Dice and HD95, all folds)", ""]
    lines += [f"![{name}]({os.path.basename(path)})" for name, path in plots.items()] + [""]
    if report.learning_curves:
        lines += learning_section(report, curves)
    lines += models_section(report)
    if report.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    lines += ["## How the numbers are made", "", AGGREGATION_DOC.strip(), ""]
    return "\n".join(lines)


def _number(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(float(value))


def _write_csv(path: str, header: List[str], rows) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def write_csvs(report: CrossValReport, output: str) -> Dict[str, str]:
    paths = {name: os.path.join(output, f"cv_{name}.csv")
             for name in ("summary", "per_case", "comparison", "learning_curves")}
    _write_csv(paths["summary"], ["trainer", "class_key", "class_name", "metric", "mean_over_folds", "sd_over_folds",
                                  "n_folds"] + [f"fold_{k}" for k in report.folds],
               ([t, key, class_name(report, key), metric, _number(stats["mean"]), _number(stats["sd"]), stats["n_folds"]]
                + [_number(stats["per_fold"].get(k)) for k in report.folds]
                for t in report.trainers for key, metrics in report.summary[t].items() for metric, stats in metrics.items()))
    _write_csv(paths["per_case"], ["trainer", "fold", "case", "class_key", "class_name", "Dice", "HD95_mm", "ASD_mm"],
               ([t, r["fold"], r["case"], r["class_key"], report.class_names[r["class_key"]], _number(r["Dice"]),
                 _number(r["HD95"]), _number(r["ASD"])] for t, rows in report.per_case.items() for r in rows))
    numbers = ["mean_diff", "ci_low", "ci_high", "median_diff", "statistic", "p_value", "p_holm"]
    _write_csv(paths["comparison"], ["trainer", "reference", "class_key", "class_name", "metric", "n_cases", "n_nonzero"]
               + numbers + ["n_resamples", "seed", "verdict", "note"],
               ([r["trainer"], r["reference"], r["class_key"], class_name(report, r["class_key"]), r["metric"],
                 r["n_cases"], r["n_nonzero"]] + [_number(r[n]) for n in numbers]
                + [r["n_resamples"], r["seed"], r["verdict"], r["note"]] for r in report.comparison))
    curve = ["n_train", "case_mean", "ci_low", "ci_high", "n_cases", "mean_over_folds", "sd_over_folds"]
    _write_csv(paths["learning_curves"], ["trainer", "fraction", "class_key", "class_name", "metric"] + curve,
               ([r["trainer"], r["fraction"], r["class_key"], class_name(report, r["class_key"]), r["metric"]]
                + [_number(r[n]) for n in curve] for r in report.learning_curves))
    return paths


def write_report(report: CrossValReport, output: str) -> Dict[str, str]:
    """All report files in `output`; returns name -> path."""
    os.makedirs(output, exist_ok=True)
    plots = box_plots(report, output)
    curves = learning_curve_plot(report, output)
    paths = write_csvs(report, output)
    paths["json"] = os.path.join(output, "report.json")
    with open(paths["json"], "w") as f:
        json.dump(json_ready(report.to_json()), f, indent=2, allow_nan=False)
    paths["markdown"] = os.path.join(output, "report.md")
    text = markdown(report, plots, curves)
    with open(paths["markdown"], "w") as f:
        f.write(text)
    paths["html"] = write_html(text, output, os.path.join(output, "report.html"), f"Cross-validation: {report.dataset}")
    paths.update({f"boxplot {name}": path for name, path in {**plots, **curves}.items()})
    return paths
