"""What a pretraining run leaves beside `OUT.pth`, and what `nnunet-dino report` reads back.

- `OUT.pth`: the teacher's backbone in Meta's official layout (the family's `timm_to_meta`, the one
  converter `weights convert` uses), with the learned mask token; reloaded through the loader before
  the record is written, so `nnUNet_dino_weights=OUT.pth` is known to work.
- `OUT.pretrain.json`: the record -- the starting weights (sha256 of the file and of the tensors),
  the datasets or folders and the exact case identifiers, the recipe, steps, time, final losses,
  and the sha256 of the written tensors (the `sha256` a plugin trainer's fold record holds).
- `OUT.losses.png`: the losses over the steps.
- Leakage: a fold record names the weights file a model was trained with; when a pretraining
  record lies beside it, `leakage_notes` intersects its cases with the cases a report evaluates.
"""
from __future__ import annotations

import json
import os
import re
import sys
from typing import Dict, Iterable, List, Optional, Sequence

import torch

from ..backbones import WEIGHTS_ENV_VAR, FrozenDinoBackbone, WeightsSource, load_backbone_weights
from ..backbones.frozen import state_fingerprint
from ..backbones.weight_files import _sidecar_path, _write_sidecar, sha256_file
from ..files import write_atomically
from ..training.records import fold_weights_record

RECORD_KIND = "nnunet-dino pretraining record"
LOSS_NAMES = ("loss", "dino", "ibot", "koleo", "gram")
_CHANNEL_SUFFIX = re.compile(r"_\d{4}$")


def output_paths(out: str) -> Dict[str, str]:
    stem = os.path.splitext(os.path.abspath(out))[0]
    return {"weights": os.path.abspath(out), "record": stem + ".pretrain.json",
            "state": stem + ".pretrain_state.pth", "plot": stem + ".losses.png"}


def starting_weights_record(setting: Optional[str], source: WeightsSource, info: dict) -> dict:
    """The weights pretraining started from: where, which layout, sha256 of the file and of the tensors."""
    if setting is None:
        setting = f"${WEIGHTS_ENV_VAR} ({os.environ.get(WEIGHTS_ENV_VAR, '')})"
    record = {"setting": setting, "source": source.kind,
              "path": source.path, "format": info.get("format"), "tensors_sha256": info["sha256"],
              "normalization": info.get("normalization")}
    if source.kind == "file":
        record["file_sha256"] = sha256_file(source.path)
    return record


def write_backbone(teacher, spec, out: str, start: dict) -> dict:
    """The teacher's ViT as Meta's `.pth`, written atomically, then loaded strictly as a plugin trainer
    would; returns the load record (its `sha256` is the tensors' fingerprint)."""
    state = {k: v.detach().to("cpu", torch.float32) for k, v in teacher.vit.state_dict().items()}
    meta = spec.family_ops.timm_to_meta(state, teacher.vit)
    meta["mask_token"] = teacher.mask_token.detach().to("cpu", torch.float32).reshape(meta["mask_token"].shape)
    write_atomically(out, lambda path: torch.save(meta, path))
    normalization = start.get("normalization")
    if normalization and (spec.normalization is None or normalization != spec.normalization.record()):
        _write_sidecar(_sidecar_path(out), normalization)  # a .pth holds tensors only (as `weights convert`)
    backbone = FrozenDinoBackbone(spec)
    info = load_backbone_weights(backbone, WeightsSource("file", os.path.abspath(out)))
    if info["sha256"] != state_fingerprint(state):
        raise RuntimeError(f"{out} does not reload to the trained backbone (a layout converter bug)")
    return info


def final_losses(history: Sequence[dict], window: int = 20) -> Dict[str, float]:
    """Mean of each loss over the last `window` steps."""
    last = list(history)[-window:]
    return {name: sum(h[name] for h in last) / len(last) for name in LOSS_NAMES if last and name in last[0]}


def write_record(path: str, job, recipe, start: dict, loaded: dict, steps: int, world: int, elapsed: float,
                 losses: Dict[str, float]) -> dict:
    record = {"kind": RECORD_KIND, "version": 1, "command": " ".join(sys.argv),
              "weights_file": os.path.basename(job.out), "backbone": job.spec.name, "layout": "meta",
              "weights_sha256": loaded["sha256"], "file_sha256": sha256_file(job.out),
              "starting_weights": start, "data": job.groups,
              "num_cases": sum(len(g["cases"]) for g in job.groups), "recipe": recipe.record(), "steps": steps,
              "world_size": world, "gradient_checkpointing": job.gradient_checkpointing,
              "training_seconds": round(elapsed, 2), "final_losses": losses}

    def dump(temporary: str) -> None:
        with open(temporary, "w") as f:
            json.dump(record, f, indent=2)
    write_atomically(path, dump)
    return record


def plot_losses(history: Sequence[dict], path: str) -> None:
    """The losses per step (thin) and their running mean over 5 % of the steps (thick). Drawn on a
    matplotlib Figure, without pyplot, so the caller's backend is left alone."""
    if not history:
        return
    from matplotlib.figure import Figure
    steps = [h["step"] for h in history]
    window = max(1, len(history) // 20)
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for name in LOSS_NAMES:
        values = [h.get(name, 0.0) for h in history]
        if not any(values):
            continue
        line, = ax.plot(steps, values, linewidth=0.5, alpha=0.4)
        smooth = [sum(values[max(0, i - window + 1):i + 1]) / len(values[max(0, i - window + 1):i + 1])
                  for i in range(len(values))]
        ax.plot(steps, smooth, color=line.get_color(), linewidth=1.8, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("nnunet-dino pretrain")
    ax.legend()
    fig.tight_layout()
    write_atomically(path, lambda temporary: fig.savefig(temporary, format="png", dpi=100))


# --- leakage -----------------------------------------------------------------------------------------
def read_pretraining_record(weights_path: str) -> Optional[dict]:
    """The pretraining record beside a weights file, or None."""
    path = output_paths(weights_path)["record"]
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if record.get("kind") == RECORD_KIND else None


def pretrained_case_ids(record: dict, dataset: str) -> set:
    """Case ids of `dataset` in a record: its own cases, and folder files named like them."""
    ids = set()
    for group in record.get("data", []):
        if group.get("group") == dataset:
            ids.update(group["cases"])
        elif os.path.isabs(group.get("group", "")):  # a folder: match file names (channel suffix dropped)
            ids.update(_CHANNEL_SUFFIX.sub("", os.path.basename(c)) for c in group["cases"])
    return ids


def leakage_notes(trainer: str, model_folder: str, folds: Iterable, evaluated: set, dataset: str) -> List[str]:
    """A warning per pretraining record (beside the weights the folds were trained with) that shares
    cases with `evaluated` (case ids of `dataset`)."""
    notes, seen = [], set()
    for fold in folds:
        record = fold_weights_record(os.path.join(model_folder, f"fold_{fold}"))
        path = (record.get("weights") or {}).get("path") or ""
        if not path or path in seen:
            continue
        seen.add(path)
        pretraining = read_pretraining_record(path)
        overlap = sorted(evaluated & pretrained_case_ids(pretraining, dataset)) if pretraining else []
        if overlap:
            shown = ", ".join(overlap[:10]) + (f" (+{len(overlap) - 10} more)" if len(overlap) > 10 else "")
            notes.append(f"LEAKAGE: `{trainer}`'s backbone weights {path} were pretrained (nnunet-dino pretrain) on "
                         f"{len(overlap)} of the {len(evaluated)} cases evaluated here ({shown}): the encoder has "
                         f"seen them, so these numbers overstate performance on new cases. Pretrain without the "
                         f"evaluated cases for a fair evaluation.")
    return notes
