"""The printed table."""
from __future__ import annotations

import json
from typing import Optional, Sequence

from .settings import FAMILY_NAMES

# --- the report --------------------------------------------------------------------------------------
def _fmt(value, spec: str = ".2f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def _loads(loads: Optional[Sequence[float]]) -> str:
    return "/".join(f"{x:.2f}" for x in loads) if loads else "?"


def format_report(results: dict) -> str:
    m, s, models = results["machine"], results["settings"], results["models"]
    mb = 1024 ** 2
    out = [f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, {m['threads']} threads"
           + (f", GPU {m['gpu']}" if m.get("gpu") else "")
           + (f"; load average (1/5/15 min) at start {_loads(m.get('load_average_at_start'))}, at end "
              f"{_loads(m.get('load_average'))}" if m.get("load_average") else ""),
           f"settings: device {s['device']}, patch {s['planned_patch'][0]}x{s['planned_patch'][1]}, batch "
           f"{s['batch']}, {s['input_channels']} channel(s), {s['num_classes']} classes; medians of {s['repeats']} "
           f"after {s['warmup']} warm-up; inference at batch 1; memory at the training batch; prediction: one "
           f"{s['case'][0]}x{s['case'][1]} case, {s['predict_repeats']} run(s); {s['execution']}",
           f"precision: {s['autocast']}", ""]
    speed = []
    for r in models.values():
        bb, ratio = r["backbone_forward"], r["ratios"]
        speed.append([r["label"], f"{r['params']['trainable'] / 1e6:.2f} / {r['params']['total'] / 1e6:.2f}",
                      f"{1000 * r['train_step']['median_s']:.0f}", _fmt(ratio["step"]),
                      _fmt(bb and 100 * bb["share_of_train_step"], ".0f") + ("%" if bb else ""),
                      _fmt(bb and bb["gflops"], ".0f") + (f" / {bb['matmul_gflops']:.0f}" if bb else ""),
                      _fmt(ratio["backbone_gflops_over_matmul"]),
                      f"{r['inference']['tiles_per_s']:.2f}", f"{r['prediction']['median_s']:.2f}",
                      _fmt(ratio["prediction"])])
    out.append(_table(["model", "params M train/total", "step ms", "step / nnU", "bb fwd / step",
                       "bb GFLOP/s / matmul", "bb / matmul", "tiles/s (b=1)", "predict s/case", "predict / nnU"],
                      speed))
    out.append("bb fwd / step: the frozen backbone's no-grad forward over the whole train step (U-DFA's step also "
               "back-propagates through the frozen blocks after its first injection, which this leaves out)")
    disk = []
    for r in models.values():
        ck, vb, mem, ratio = r["checkpoint"], r.get("checkpoint_vit_b"), r["memory"], r["ratios"]
        disk.append([r["label"], f"{mem['train']['delta_bytes'] / mb:.0f}", f"{mem['inference']['delta_bytes'] / mb:.0f}",
                     _fmt(ratio["memory_train_over_inference"]),
                     _fmt(ck["slim_bytes"] and ck["slim_bytes"] / mb, ".1f"), f"{ck['full_bytes'] / mb:.1f}",
                     _fmt(ratio["checkpoint"]),
                     f"{vb['slim_bytes'] / mb:.0f} / {vb['full_bytes'] / mb:.0f}" if vb else "-",
                     _fmt(ratio["checkpoint_vit_b_slim_over_full"], ".3f")])
    out += ["", _table(["model", "train mem MB", "infer mem MB", "train / infer", "ckpt slim MB", "ckpt full MB",
                        "ckpt / nnU", "ViT-B ckpt slim / full MB", "ViT-B slim / full"], disk)]
    measure = next(iter(models.values()))["memory"]["measure"]
    out += [f"memory: {measure} over the baseline after imports, in a fresh process per phase; checkpoint: "
            f"nnU-Net's dict (weights + optimiser state); ratio 'ckpt / nnU' uses the slim one", "", "goals:"]
    for g in results["goals"]:
        verdict = "n/a" if g["met"] is None else ("met" if g["met"] else "MISSED")
        note = ""
        vb = models[g["family"]].get("checkpoint_vit_b")
        if g["figure"].startswith("ViT-B") and vb and not g["met"]:
            note = (f"  (trainable weights {vb['trainable_weight_bytes'] / mb:.0f} MB + optimiser state "
                    f"{vb['optimizer_state_bytes'] / mb:.0f} MB stay in the slim checkpoint)")
        out.append(f"  {verdict:6s} {FAMILY_NAMES[g['family']]:10s} {g['figure']}: {_fmt(g['value'], '.3f')} "
                   f"(goal {g['goal']}){note}")
    out.append(f"\nelapsed {results['elapsed_s']:.0f} s")
    return "\n".join(out)


def write_json(results: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
