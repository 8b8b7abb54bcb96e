"""The demo's report: a Markdown table per structure (Dice, HD95, ASD for each model), PNG figures of
test slices (image, ground truth and each model's prediction overlaid), and the facts needed to read
them honestly (data, weights, training budget, parameter counts)."""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..evaluation.tables import MEAN_ROW, UNITS, metric_cell, per_class_table


def _read(path: str) -> np.ndarray:
    import SimpleITK as sitk
    return sitk.GetArrayFromImage(sitk.ReadImage(path))


def render_figures(images_dir: str, labels_dir: str, predictions: Dict[str, str], output_dir: str,
                   file_ending: str, num_classes: int, max_cases: int = 3,
                   captions: Optional[Dict[str, str]] = None) -> List[str]:
    """One PNG per test case: the middle slice, with ground truth and every model's prediction.
    `captions`: a second title line per model (e.g. that its backbone was random)."""
    captions = captions or {}
    import matplotlib
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure  # no pyplot: the caller's matplotlib backend is left alone
    colours = matplotlib.colormaps["tab20"].resampled(max(num_classes, 2))(np.arange(max(num_classes, 2)))
    overlay = ListedColormap(colours)
    written = []
    cases = sorted(f[: -len(file_ending)] for f in os.listdir(labels_dir) if f.endswith(file_ending))
    for case in cases[:max_cases]:
        image = _read(os.path.join(images_dir, f"{case}_0000{file_ending}"))
        panels = {"ground truth": _read(os.path.join(labels_dir, case + file_ending))}
        panels.update({name: _read(os.path.join(folder, case + file_ending)) for name, folder in predictions.items()})
        z = image.shape[0] // 2 if image.ndim == 3 else None
        pick = (lambda a: a[z]) if z is not None else (lambda a: a)
        fig = Figure(figsize=(3.2 * (len(panels) + 1), 3.4))
        axes = fig.subplots(1, len(panels) + 1)
        axes[0].imshow(pick(image), cmap="gray")
        axes[0].set_title(f"{case} (slice {z})" if z is not None else case, fontsize=9)
        for ax, (title, seg) in zip(axes[1:], panels.items()):
            ax.imshow(pick(image), cmap="gray")
            s = pick(seg).astype(float)
            ax.imshow(np.ma.masked_where(s == 0, s), cmap=overlay, vmin=0, vmax=max(num_classes, 2) - 1,
                      alpha=0.55, interpolation="nearest")
            ax.set_title("\n".join(filter(None, (title, captions.get(title)))), fontsize=9)
        for ax in axes:
            ax.axis("off")
        fig.tight_layout()
        path = os.path.join(output_dir, f"figure_{case}.png")
        fig.savefig(path, dpi=90)
        written.append(path)
    return written


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
