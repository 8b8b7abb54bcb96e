"""Consistency checks over the scanned cases. Every check lists *all* offending files, so a user fixes
everything in one go instead of meeting the errors one at a time."""
from __future__ import annotations

from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .naming import Problem
from .scan import NEAR_CONSTANT_SHARE, CaseScan, FileFacts
from ..errors import UserError

SPACING_RTOL = 1e-3  # relative: exporters round spacings differently; the output copies the image's
ORIGIN_TOLERANCE = 0.1  # in voxels (of the smallest spacing): a smaller shift moves no label
DIRECTION_TOLERANCE = 1e-3  # direction cosines (about 0.06 degrees): exporters' rounding only


class OnboardingError(UserError, ValueError):
    """Refusal to onboard a dataset; `problems` holds every finding, the message lists every file."""

    def __init__(self, problems: Sequence[Problem], raw_root: str):
        self.problems = list(problems)
        lines = [f"refusing to onboard: {len(self.problems)} kind(s) of problem; nothing was written to {raw_root}"]
        for problem in self.problems:
            detail = f": {problem.detail}" if problem.detail else ""
            lines.append(f"- {problem.kind} ({len(problem.files)} file(s)){detail}")
            lines += [f"    {path}" + (f"  [{problem.file_notes[path]}]" if path in problem.file_notes else "")
                      for path in problem.files]
        super().__init__("\n".join(lines))


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def _majority(values: List) -> object:
    return Counter(values).most_common(1)[0][0]


def _roles(scan: CaseScan) -> List[Tuple[str, FileFacts]]:
    """(what the file is in its case, facts): 'image', 'channel t1', 'mask'."""
    names = ["image" if c is None else f"channel {c}" for c in scan.files.channels]
    pairs = list(zip(names, scan.images))
    return pairs + ([("mask", scan.mask)] if scan.mask else [])


def _stacked_channels(files: Sequence[Tuple[str, FileFacts]]) -> bool:
    """Whether an image has one axis more than the mask, the others equal: channels stacked in one file."""
    masks = [f.shape for role, f in files if role == "mask"]
    return bool(masks) and any(len(f.shape) == len(masks[0]) + 1 and masks[0] in (f.shape[1:], f.shape[:-1])
                               for role, f in files if role != "mask")


def _grid_notes(files: Sequence[Tuple[str, FileFacts]]) -> Tuple[str, str]:
    """(kind, summary) of the first way a case's files disagree on their grid; ('', '') if they agree."""
    if len({f.shape for _, f in files}) > 1:
        kind = "stacked" if _stacked_channels(files) else "shape"
        return kind, ", ".join(f"{role} {f.shape}" for role, f in files)
    spatial = [(role, f.geometry) for role, f in files if f.geometry.spacing]
    if not spatial:
        return "", ""
    if not all(np.allclose(g.spacing, spatial[0][1].spacing, rtol=SPACING_RTOL) for _, g in spatial):
        return "spacing", ", ".join(f"{role} {_fmt(g.spacing)}" for role, g in spatial)
    first = spatial[0][1]
    shift = max(float(np.max(np.abs(np.subtract(g.origin, first.origin)))) for _, g in spatial)
    if shift > ORIGIN_TOLERANCE * min(first.spacing):
        return "origin", (", ".join(f"{role} {_fmt(g.origin)}" for role, g in spatial)
                          + f"; differ by up to {shift:g} mm")
    turn = max(float(np.max(np.abs(np.subtract(g.direction, first.direction)))) for _, g in spatial)
    if turn > DIRECTION_TOLERANCE:
        return "direction", (", ".join(f"{role} {_fmt(g.direction)}" for role, g in spatial)
                             + f"; cosines differ by up to {turn:g}")
    return "", ""


_GRID_PROBLEMS = {  # kind -> (problem, what to do)
    "stacked": ("images holding several channels (or time points) in one file: one axis more than the mask "
                "(shapes in numpy order)",
                "nnU-Net wants one file per channel: split each into CASE_0000, CASE_0001, ... files along the "
                "extra axis and onboard with --image-pattern '{case}_{channel}'"),
    "shape": ("size mismatches between a case's images and mask (shapes in numpy order)",
              "images and mask of a case must have the same size"),
    "spacing": ("spacing mismatches between a case's images and mask (mm, numpy order)",
                "resample one onto the other's grid"),
    "origin": ("origin mismatches between a case's images and mask (mm, x/y/z as stored in the files)",
               "the mask would be written with the image's origin, shifting the labels: resample the mask "
               "onto the image's grid (or fix the header that is wrong)"),
    "direction": ("direction mismatches between a case's images and mask (direction cosines as stored)",
                  "the mask would be written with the image's orientation: resample the mask onto the "
                  "image's grid (or fix the header that is wrong)"),
}


def _grid_problems(scans: Sequence[CaseScan]) -> List[Problem]:
    """Within a case: channel files and mask must share shape, spacing, origin and direction."""
    notes: Dict[str, Dict[str, str]] = {kind: {} for kind in _GRID_PROBLEMS}
    for scan in scans:
        files = _roles(scan)
        if len(files) < 2 or len(scan.images) != len(scan.files.images):
            continue
        kind, summary = _grid_notes(files)
        if kind:
            notes[kind].update({f.path: summary for _, f in files})
    return [Problem(problem, list(notes[kind]), detail, notes[kind])
            for kind, (problem, detail) in _GRID_PROBLEMS.items() if notes[kind]]


def _channel_problems(scans: Sequence[CaseScan]) -> List[Problem]:
    """Across cases: the same number of spatial dimensions and of components per channel file."""
    problems = []
    complete = [scan for scan in scans if scan.images and len(scan.images) == len(scan.files.images)]
    if not complete:
        return problems
    usual_ndim = _majority([f.geometry.ndim for s in complete for f in s.images])
    odd = {f.path: f"{f.geometry.ndim}D" for s in complete for f in s.images if f.geometry.ndim != usual_ndim}
    if odd:
        problems.append(Problem(f"images that are not {usual_ndim}D like most", list(odd),
                                "use one kind of data per dataset", odd))
    usual = _majority([tuple(f.components for f in s.images) for s in complete])
    odd_cases = [s for s in complete if tuple(f.components for f in s.images) != usual]
    if odd_cases:
        notes = {f.path: f"{f.components} component(s)" for s in odd_cases for f in s.images}
        problems.append(Problem("inconsistent channel counts (colour/vector components per image file)", list(notes),
                                f"most cases have {list(usual)}: convert these (e.g. grey <-> RGB) to match",
                                notes))
    return problems


def _label_problems(scans: Sequence[CaseScan], given: Optional[Dict[str, int]]) -> List[Problem]:
    problems = []
    masks = [scan.mask for scan in scans if scan.mask is not None]
    fractional = {m.path: f"e.g. {m.non_integer_examples}" for m in masks if not m.integer_valued}
    if fractional:
        problems.append(Problem("masks with non-integer values", list(fractional),
                                "masks need one integer per class (no interpolation, no lossy JPEG)", fractional))
    allowed = None if given is None else set(given.values()) | {0}  # 0 is background even if unnamed

    def is_unexpected(value: int) -> bool:
        return value < 0 if allowed is None else value not in allowed

    unexpected = {}
    for m in masks:
        values = sorted(v for v in m.label_counts if is_unexpected(v)) if m.integer_valued else []
        if values:
            unexpected[m.path] = f"values {values}"
    if unexpected:
        expected = f"the mapping names {sorted(allowed)}" if allowed is not None else "values must be >= 0"
        problems.append(Problem("masks with unexpected label values", list(unexpected),
                                f"{expected}: add the values to --labels or fix the masks", unexpected))
    return problems


def _non_finite_problems(scans: Sequence[CaseScan]) -> List[Problem]:
    notes = {f.path: f"{f.nan_voxels} NaN, {f.inf_voxels} infinite voxel(s)"
             for scan in scans for f in scan.images if f.nan_voxels or f.inf_voxels}
    if not notes:
        return []
    return [Problem("images with NaN or infinite values", list(notes),
                    "replace them (e.g. with the background value) and onboard again: nnU-Net's integrity check "
                    "refuses NaN, and one such voxel spreads through the intensity normalisation", notes)]


def find_problems(train: Sequence[CaseScan], test: Sequence[CaseScan],
                  given_labels: Optional[Dict[str, int]]) -> List[Problem]:
    """All problems of the scanned training and test cases (naming problems are found earlier)."""
    problems: List[Problem] = []
    unreadable = {p: why for scan in list(train) + list(test) for p, why in scan.unreadable}
    if unreadable:
        problems.append(Problem("files that cannot be read or used", list(unreadable),
                                "fix or replace them", unreadable))
    problems += _non_finite_problems(list(train) + list(test))
    problems += _grid_problems(list(train) + list(test))
    problems += _channel_problems(list(train) + list(test))
    problems += _label_problems(train, given_labels)
    return problems


def find_findings(train: Sequence[CaseScan], test: Sequence[CaseScan]) -> List[Problem]:
    """What is legal but suspicious: (nearly) constant images, which are almost always a wrong export and
    which z-scoring cannot normalise, and masks holding only background, which are legitimate negative
    cases but easy to miss. Reported one file per line; `--strict` refuses them."""
    findings = []
    constant = {f.path: f"{f.common_value:g} in {100 * f.common_share:.2f} % of the voxels"
                for scan in list(train) + list(test) for f in scan.images if f.common_share >= NEAR_CONSTANT_SHARE}
    if constant:
        findings.append(Problem("constant or near-constant images", list(constant),
                                "almost always a wrong export (an empty or clipped volume): check them", constant))
    empty = [s.mask.path for s in train
             if s.mask is not None and s.mask.integer_valued and set(s.mask.label_counts) <= {0}]
    if empty:
        findings.append(Problem("empty masks (background only)", empty,
                                "right for negative cases; otherwise the mask is missing its labels"))
    return findings


def found_label_values(scans: Sequence[CaseScan]) -> List[int]:
    return sorted({v for scan in scans if scan.mask is not None for v in scan.mask.label_counts})


def value_ranges(scans: Sequence[CaseScan]) -> List[Tuple[float, float, bool]]:
    """(min, max, integer-valued) per channel file position over all cases."""
    positions = max((len(s.images) for s in scans), default=0)
    ranges = []
    for i in range(positions):
        facts = [s.images[i] for s in scans if len(s.images) > i]
        ranges.append((min(f.vmin for f in facts), max(f.vmax for f in facts), all(f.integer_valued for f in facts)))
    return ranges
