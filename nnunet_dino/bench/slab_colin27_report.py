"""The report of `slab_colin27.py`: WORKDIR/slab_colin27.md (tables), .json (everything measured) and .png
(Dice, HD95 and where the errors lie, per structure and model), each marked as measured on a RANDOM backbone."""
from __future__ import annotations

import math
import os
from typing import List, Optional

from ..evaluation.tables import metric_cell
from .report import _table, write_json
from .slab_colin27_analysis import FN_CLASSES, FP_CLASSES, LOCATIONS

MODELS = ("2d", "2d start", "2.5d+2d")
COLOURS = {"2d": "tab:blue", "2d start": "tab:gray", "2.5d+2d": "tab:orange"}


def model_label(key: str, n: int) -> str:
    return {"2d": f"2d ({2 * n} it)", "2d start": f"2d ({n} it, the chain's start)",
            "2.5d+2d": f"2.5d+2d ({n} + {n} it)"}[key]


def _number(value) -> Optional[float]:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def verdict(dice_2d, dice_25, hd_2d, hd_25) -> str:
    """Issue 34's goal for one structure: 2.5d's Dice at least 2d's and its HD95 at most 2d's."""
    dice_2d, dice_25, hd_2d, hd_25 = map(_number, (dice_2d, dice_25, hd_2d, hd_25))
    misses = []
    if dice_2d is not None and (dice_25 is None or dice_25 < dice_2d):
        misses.append("Dice lower")
    if hd_2d is not None and (hd_25 is None or hd_25 > hd_2d):
        misses.append("HD95 higher")
    if dice_2d is None or hd_2d is None:
        return "undefined (2d has no score)"
    return "2.5d meets the goal (Dice ≥, HD95 ≤)" if not misses else "2.5d misses: " + ", ".join(misses)


def metrics_table(result: dict) -> str:
    n, rows = result["iterations"], []
    for family, entry in result["families"].items():
        models = entry["models"]
        for key, structure in entry["label_names"].items():
            mean = {m: models[m]["mean"][key] for m in MODELS}
            rows.append([family, structure] + [metric_cell("Dice", mean[m]["Dice"]) for m in MODELS]
                        + [metric_cell("HD95", mean[m]["HD95"]) for m in MODELS]
                        + [verdict(mean["2d"]["Dice"], mean["2.5d+2d"]["Dice"], mean["2d"]["HD95"],
                                   mean["2.5d+2d"]["HD95"])])
    header = (["family", "structure"] + [f"Dice {model_label(m, n)}" for m in MODELS]
              + [f"HD95 mm {model_label(m, n)}" for m in MODELS] + ["verdict 2.5d+2d vs 2d"])
    return _table(header, rows)


def _tail_shares(total: dict) -> str:
    tail = sum(total["tail"].values())
    if not tail:
        return "–"
    return ", ".join(f"{name} {100 * count / tail:.0f} %" for name, count in total["tail"].items() if count)


def _islands(total: dict) -> str:
    islands = total["islands"]
    if not islands:
        return "0"
    voxels = f"{len(islands)} ({sum(i['voxels'] for i in islands)} vox"
    nearest = sorted(i["min_mm"] for i in islands if i["min_mm"] is not None)
    if not nearest:  # only in cases without the structure: no surface to measure from
        return voxels + ", no reference in their cases)"
    farthest = max(i["max_mm"] for i in islands if i["max_mm"] is not None)
    return (f"{voxels}; from the reference surface: nearest voxel {nearest[len(nearest) // 2]:.1f} mm median, "
            f"farthest {farthest:.1f} mm)")


def errors_table(result: dict) -> str:
    n, rows = result["iterations"], []
    for family, entry in result["families"].items():
        for key, structure in entry["label_names"].items():
            for m in ("2d", "2.5d+2d"):
                total = entry["models"][m]["errors"][key]["total"]
                rows.append([family, structure, model_label(m, n)]
                            + [str(total["fp"][c]) for c in FP_CLASSES] + [str(total["fn"][c]) for c in FN_CLASSES]
                            + [_islands(total), _tail_shares(total)])
    header = (["family", "structure", "model"] + [f"FP {c}" for c in FP_CLASSES] + [f"FN {c}" for c in FN_CLASSES]
              + ["islands", "HD95 tail by location"])
    return _table(header, rows)


def timing_table(result: dict) -> str:
    rows = []
    for family, entry in result["families"].items():
        two, slab = (entry["models"][m]["prediction"] for m in ("2d", "2.5d+2d"))
        ratio = lambda a, b: f"{b / a:.2f}" if a and b else "–"  # noqa: E731
        rows.append([family, f"{two['per_case_s']}", f"{slab['per_case_s']}",
                     ratio(two["per_case_s"], slab["per_case_s"]),
                     f"{two['wall_s']}", f"{slab['wall_s']}", ratio(two["wall_s"], slab["wall_s"])])
    return _table(["family", "2d s/case", "2.5d+2d s/case", "2.5d ÷ 2d", "2d process s", "2.5d+2d process s",
                   "2.5d ÷ 2d (with start-up)"], rows)


def stages_table(result: dict) -> str:
    rows = [[stage, f"{seconds:.0f}"] for stage, seconds in result["stages_s"].items()]
    for family, entry in result["families"].items():
        for m in MODELS:
            model = entry["models"][m]
            train = model["train"]
            done = "done before" if train["seconds"] is None else f"{train['seconds']:.0f}"
            rows.append([f"{family} {model['trainer']} {model['configuration']}: train (nnUNetv2_train process; its "
                         f"epochs; per iteration)", f"{done}; {train['epochs_s']:.0f}; {train['s_per_iteration']:.2f}"])
            rows.append([f"{family} {model['trainer']} {model['configuration']}: nnUNetv2_predict",
                         f"{model['prediction']['wall_s']:.0f}"])
    return _table(["stage", "seconds"], rows)


def markdown(result: dict) -> str:
    m, n = result["machine"], result["iterations"]
    geometry = next(iter(result["families"].values()))["geometry"]
    cases = next(iter(next(iter(result["families"].values()))["models"].values()))["validation_cases"]
    return "\n".join([
        "# 2d alone against 2d then 2.5d+2d on Colin27, at an equal number of iterations", "",
        f"> **!! {result['backbone']}**", "",
        f"Command: `{result['command']}`  ", f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, "
        f"device {result['device']}, load average at the end {'/'.join(f'{x:.2f}' for x in m['load_average'] or [])}  ",
        f"Dataset {result['dataset']}, fold {result['fold']}, validation slabs {', '.join(cases)} "
        f"({len(cases)} cases: no difference can be significant). Budget: 2d alone {2 * n} iterations; the chain "
        f"{n} in 2d, then {n} in 2.5d+2d started from that fold (the same trainer).  ",
        f"Slabs of {geometry['slices']} slices, recorded z step {geometry['z_step']}; z windows of a "
        f"{geometry['case_depth']}-slice case: nnUNetv2_predict {geometry['windows_nnUNetv2_predict']}, at the "
        f"recorded step {geometry['windows_recorded_step']}. Batch: 2d {geometry['batch_size']['2d']} slices, "
        f"2.5d+2d {geometry['batch_size']['2.5d+2d']} slabs of {geometry['slices']} (equal iterations are not equal "
        "slices seen).", "",
        "## Dice and HD95 per structure (mean over the validation slabs; predictions of nnUNetv2_predict)", "",
        metrics_table(result), "",
        "## Where the errors lie (voxels summed over the validation slabs)", "",
        "Each FP/FN voxel's class, the first that applies: island (a predicted component touching no reference "
        "voxel) / missed component (a reference component the prediction does not touch), first/last slice, "
        "slab edge (a slice where a z window of nnUNetv2_predict starts or ends), interior. The 2d model's errors "
        "are classed by the same windows. HD95 tail: of the non-zero surface distances at or above each case's "
        "HD95, the share each location holds.", "",
        errors_table(result), "",
        "## Prediction time per case (nnUNetv2_predict, one process per model, the same input folder)", "",
        "s/case: mean interval between consecutive cases in nnU-Net's output (preprocessing, sliding window, "
        "export; without process start-up, model loading and exit); process s: the whole process's wall time, "
        "with them.", "",
        timing_table(result), "", "## Stages", "", stages_table(result), ""])


def figure(result: dict, path: str) -> None:
    """Per family: Dice and HD95 per structure for the three models, and the FP + FN voxels by location."""
    from matplotlib.figure import Figure
    families = list(result["families"])
    fig = Figure(figsize=(13, 3.6 * len(families)))
    axes = fig.subplots(len(families), 3, squeeze=False)
    for row, family in zip(axes, families):
        entry = result["families"][family]
        keys = list(entry["label_names"])
        for ax, metric in zip(row[:2], ("Dice", "HD95")):
            for i, m in enumerate(MODELS):
                values = [_number(entry["models"][m]["mean"][k][metric]) or 0.0 for k in keys]
                ax.bar([x + 0.27 * (i - 1) for x in range(len(keys))], values, 0.27,
                       label=model_label(m, result["iterations"]), color=COLOURS[m])
            ax.set_xticks(range(len(keys)), [entry["label_names"][k] for k in keys], fontsize=8)
            ax.set_title(f"{family}: {metric}{' mm' if metric == 'HD95' else ''}", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
        row[0].legend(fontsize=7)
        _location_bars(row[2], entry, keys)
    fig.suptitle(f"Colin27 fold 0, RANDOM backbone: 2d alone vs 2d then 2.5d+2d at {2 * result['iterations']} "
                 f"iterations in all", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _location_bars(ax, entry: dict, keys: List[str]) -> None:
    """Stacked FP + FN voxels by location, one bar per structure and model (2d, 2.5d+2d)."""
    labels, bottoms = [], []
    for k in keys:
        for m in ("2d", "2.5d+2d"):
            labels.append(f"{entry['label_names'][k][:10]}\n{m}")
            total = entry["models"][m]["errors"][k]["total"]
            bottoms.append({c: total["fp"].get(c, 0) + total["fn"].get(c, 0) for c in LOCATIONS})
    base = [0] * len(labels)
    for c in LOCATIONS:
        values = [b[c] for b in bottoms]
        ax.bar(range(len(labels)), values, bottom=base, label=c)
        base = [a + v for a, v in zip(base, values)]
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_title("FP + FN voxels by location", fontsize=10)
    ax.legend(fontsize=7)


def write_report(result: dict, work: str) -> List[str]:
    stem = os.path.join(work, "slab_colin27")
    write_json(result, stem + ".json")
    with open(stem + ".md", "w") as f:
        f.write(markdown(result))
    figure(result, stem + ".png")
    return [stem + ".md", stem + ".json", stem + ".png"]
