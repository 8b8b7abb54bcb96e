"""The text `nnunet-dino onboard` prints after a successful conversion."""
from __future__ import annotations

import os
from collections import Counter
from typing import Iterable

from .build import OnboardingResult

FOLDS = 5  # nnU-Net's default cross-validation


def _counted(counter: Counter, unit: str = "", limit: int = 6) -> str:
    items = counter.most_common()
    text = ", ".join(f"{' x '.join(f'{v:g}' for v in key)}{unit} ({n})" for key, n in items[:limit])
    return text + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _lines(title: str, body: Iterable[str]) -> list:
    return [title] + [f"  {line}" for line in body]


def next_commands(result: OnboardingResult) -> list:
    """What to run next: nnU-Net's planning, then the comparison of nnU-Net with a DINO trainer, by
    cross-validation when there are enough cases for nnU-Net's 5 folds, else one model on all cases."""
    did = result.dataset_id
    trainers = "nnUNetTrainer nnUNetTrainerSegDINO"
    commands = [f"nnUNetv2_plan_and_preprocess -d {did} -c 2d --verify_dataset_integrity"
                + ("      # add 3d_fullres for nnU-Net's own 3D model" if result.ndim == 3 else ""),
                "export nnUNet_dino_weights=/folder/with/dino/weights   # the DINO encoders' weights "
                "(`nnunet-dino doctor` lists what it finds)"]
    if result.num_training >= FOLDS:
        commands += [f"nnunet-dino crossval -d {did} -tr {trainers}        # 5 folds each, resumable",
                     f"nnunet-dino report -d {did} -tr {trainers} -o cv_report_{did:03d}"]
    else:
        commands += [f"nnUNetv2_train {did} 2d all -tr nnUNetTrainerSegDINO   # {result.num_training} training "
                     f"case(s): too few for {FOLDS}-fold cross-validation, so one model on all of them"]
    if result.ndim == 3:
        commands.append("# the DINO trainers segment 3D volumes slice by slice with the 2d configuration")
    return commands


def finding_lines(findings) -> list:
    """One line per file a finding names, under a count ('findings (3, not errors; ...)')."""
    body = [f"{f.kind}: {path}" + (f" ({f.file_notes[path]})" if path in f.file_notes else "")
            for f in findings for path in f.files]
    if not body:
        return []
    return _lines(f"findings ({len(body)}, not errors; --strict refuses them):", body)


def format_summary(result: OnboardingResult) -> str:
    kind = "2D" if result.ndim == 2 else "3D"
    lines = [f"{os.path.basename(result.folder)} written to {result.folder}",
             f"  {result.num_training} training cases, {result.num_test} test images; {kind}, "
             f"files *{result.file_ending}"]
    if result.replaced:
        lines.append(f"  replaced (--overwrite): {', '.join(result.replaced)}")
    axes = "(y, x)" if result.ndim == 2 else "(z, y, x)"
    lines.append(f"  shapes {axes}: {_counted(result.shapes)}")
    lines.append(f"  spacings {axes} mm: {_counted(result.spacings) if result.spacings else 'none (2D image files)'}")
    lines += _lines("channels (dataset.json name -> nnU-Net normalisation, and why):",
                    [f"{c.index}: {c.source!r} -> '{c.name}' -> {c.scheme}: {c.reason}" for c in result.channels])
    source_of = {}
    for mask_value, label in result.labels.mask_to_label.items():
        source_of.setdefault(label, []).append(mask_value)
    total = sum(result.label_voxels.values()) or 1
    lines += _lines("labels (nnU-Net value <- value in your masks: voxels, cases containing it):",
                    [f"{value} {name} <- {source_of.get(value, ['-'])}: {result.label_voxels.get(value, 0):,} voxels "
                     f"({100 * result.label_voxels.get(value, 0) / total:.2f} %), "
                     f"{result.label_cases.get(value, 0)}/{result.num_training} cases"
                     for name, value in result.labels.labels.items()])
    absent = [n for n, v in result.labels.labels.items() if not result.label_cases.get(v)]
    if absent:
        lines.append(f"  warning: no training mask contains {absent}")
    if result.notes:
        lines += _lines("notes:", result.notes)
    lines += finding_lines(result.findings)
    lines.append("nnU-Net's integrity check (verify_dataset_integrity): passed")
    lines += _lines("next:", next_commands(result))
    return "\n".join(lines)
