"""The demo's report: a Markdown table per structure (Dice, HD95, ASD for each model), its figures
(drawn by `figures`), and the facts needed to read them honestly (data, weights, training budget,
parameter counts, the machine and what a result there does and does not depend on)."""
from __future__ import annotations

import os
from typing import Dict, Sequence

from ..evaluation.tables import MEAN_ROW, UNITS, metric_cell, per_class_table

#: `make demo`'s default run (Colin27, 800 iterations, seed 0, RANDOM backbone) on two CPU types:
#: mean foreground Dice (cerebral grey matter, cerebellum) of U-DFA-S and nnU-Net
ACROSS_CPU_TYPES = (
    ("the project's 2-core machine (November 2026; CPU model not recorded)", "0.904 (0.929, 0.880)",
     "0.837 (0.921, 0.752)"),
    ("another 2-core CPU", "0.896 (0.929, 0.862)", "0.839 (0.907, 0.772)"),
    ("an AMD EPYC 2-core with AVX512-BF16 (December 2026)", "0.896 (0.929, 0.862)", "0.837 (0.879, 0.795)"),
)


def metrics_table(summaries: Dict[str, dict], label_names: Dict[str, str]) -> str:
    """Markdown: one row per structure, Dice / HD95 / ASD columns for each model."""
    def column(metric: str, model: str):
        def cell(key: str) -> str:
            source = summaries[model]["foreground_mean"] if key == MEAN_ROW else summaries[model]["mean"].get(key, {})
            return metric_cell(metric, source.get(metric))
        return f"{metric}{UNITS[metric]} {model}", cell
    return per_class_table(label_names, [column(metric, m) for metric in ("Dice", "HD95", "ASD") for m in summaries])


def write_report(path: str, title: str, intro: Sequence[str], summaries: Dict[str, dict],
                 label_names: Dict[str, str], facts: Dict[str, dict], figures: Sequence[str],
                 timings: Dict[str, float]) -> None:
    lines = [f"# {title}", ""] + list(intro) + ["", "## Results on the held-out test cases", "",
                                                metrics_table(summaries, label_names), "",
                                                "HD95 and ASD are in millimetres (physical spacing); "
                                                "'–' marks a structure with no distance (empty mask). "
                                                "Per-case values: `metrics_per_case.csv` in each prediction folder.",
                                                "", "## Models", "",
                                                "| model | trainer | epochs | training iterations | training time | "
                                                "patch | trainable / total parameters |", "|---|---|---|---|---|---|---|"]
    for name, f in facts.items():
        run = f.get("budget")
        steps, took = ("–", "–") if run is None else (
            run.done if run.unit == "iterations" else "–", f"{run.seconds:.0f} s")
        lines.append(f"| {name} | `{f['trainer']}` | {f['epochs']} | {steps} | {took} | {f['patch_size']} | "
                     f"{f['trainable_params']:,} / {f['total_params']:,} |")
    lines += ["", "## Figures", ""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in figures]
    lines += ["", "## Timings (s)", "", " | ".join(f"{k}: {v:.0f}" for k, v in timings.items()), ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def reproducibility_statement(machine: dict, native_bf16: bool, wall_clock_budget: bool) -> str:
    """What the figures of this run depend on: the CPU type, not the machine's load (unless the budget is
    wall-clock time), with the figures measured on the CPUs it has run on."""
    this_run = (f"**Reproducibility.** This run: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, "
                f"ATen's {machine['cpu_capability']} kernels; the DINO network in "
                f"{'bf16 autocast (this CPU computes bf16 natively)' if native_bf16 else 'fp32'}. ")
    if wall_clock_budget:
        return this_run + ("With `--budget-seconds` the number of iterations trained depends on the machine's "
                           "speed and load, and so do the figures.")
    measured = "; ".join(f"on {cpu} U-DFA-S {udfa} and nnU-Net {nnunet}" for cpu, udfa, nnunet in ACROSS_CPU_TYPES)
    return this_run + (
        "With the fixed iteration budget the trainers are seeded, nnU-Net's augmentation runs in the main process "
        "and no kernel is chosen by the machine's load, so a rerun on the same CPU type gives these figures to the "
        "last digit, however busy the machine is. Another CPU type rounds differently (other vector kernels; bf16 "
        "autocast only where the CPU computes bf16 natively), and over the training iterations that moves the "
        f"figures: `make demo`'s default run gave, as mean foreground Dice (grey matter, cerebellum), {measured}: "
        "up to 0.04 in one structure's Dice and 0.008 in a mean.")
