"""`onboard`: a folder of images and masks -> `DatasetXXX_Name` in nnUNet_raw, or a refusal that lists
every offending file and writes nothing.

Order: name and pair the files, read every case once (facts only), check everything, and only if
nothing is wrong write the dataset into a hidden temporary folder next to the target, run nnU-Net's
own integrity check on it and rename it into place. Any failure removes the temporary folder.
"""
from __future__ import annotations

import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from ..datasets.folders import dataset_target, staged_dataset
from ..nnunet.folders import preprocessed_root, raw_root
from ..nnunet.runner import run_nnunet
from .channels import ChannelChoice, choose_channels, parse_channel_options
from .checks import OnboardingError, find_findings, find_problems, found_label_values, value_ranges
from .imageio import is_natural_2d
from .labels import LabelPlan, parse_label_mapping, plan_labels
from .naming import Problem, assemble_cases
from .scan import CaseScan, parallel_map, scan_cases
from .writer import PNG, WriteJob, choose_file_ending, write_case
from ..errors import OptionError

RECORD_FILE = "onboarding_record.json"


@dataclass
class OnboardingResult:
    folder: str
    dataset_id: int
    num_training: int
    num_test: int
    file_ending: str
    ndim: int
    channels: List[ChannelChoice]
    labels: LabelPlan
    shapes: Counter                      # spatial shape -> cases
    spacings: Counter                    # spacing (numpy order, rounded) -> cases; empty for PNG
    label_voxels: Dict[int, int]         # nnU-Net label -> voxels over all training masks
    label_cases: Dict[int, int]          # nnU-Net label -> training cases containing it
    notes: List[str] = field(default_factory=list)
    replaced: List[str] = field(default_factory=list)
    findings: List[Problem] = field(default_factory=list)   # legal but suspicious (--strict refuses them)


def _check_target(raw: str, dataset_id: int, name: str, overwrite: bool) -> tuple:
    """(problems, raw folders to replace) for the dataset id; nnU-Net allows one name per id."""
    found, existing = dataset_target(raw, dataset_id, name, overwrite, replace_other_names=True)
    return [Problem(p.kind, p.files, p.fix) for p in found], existing


def _dataset_json(result_channels: Sequence[ChannelChoice], plan: LabelPlan, num_training: int,
                  file_ending: str, name: str, source: str) -> dict:
    return {"channel_names": {str(c.index): c.name for c in result_channels}, "labels": plan.labels,
            "numTraining": num_training, "file_ending": file_ending, "name": name,
            "description": f"onboarded by nnunet-dino from {source}"}


def _case_record(scan: CaseScan, with_mask: bool) -> dict:
    """Source files of a case; DICOM series folders also by their series instance UIDs."""
    record = {"images": scan.files.images, **({"mask": scan.files.mask} if with_mask else {})}
    if any(f.series_uid for f in scan.images):
        record["source_series_uids"] = [f.series_uid for f in scan.images]
    return record


def _record(train: Sequence[CaseScan], test: Sequence[CaseScan], channels, plan: LabelPlan, notes,
            findings: Sequence[Problem]) -> dict:
    return {"cases": {s.files.case: _case_record(s, True) for s in train},
            "test_cases": {s.files.case: _case_record(s, False) for s in test},
            "mask_value_to_label": {str(k): v for k, v in plan.mask_to_label.items()},
            "channels": [c.__dict__ for c in channels], "notes": list(notes),
            "findings": [{"kind": f.kind, "files": {p: f.file_notes.get(p, "") for p in f.files}} for f in findings]}


def _integrity_check(folder: str, num_processes: int) -> None:
    """nnU-Net's own integrity check, in a child process of its own session: nnU-Net's worker pool does
    not stop on Ctrl-C, so the terminal's SIGINT reaches only this process, and the runner then ends the
    child's whole process group (the pool included) at once."""
    code = ("import sys\nfrom nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity\n"
            "verify_dataset_integrity(sys.argv[1], num_processes=int(sys.argv[2]))")
    exit_code, _, output = run_nnunet([sys.executable, "-c", code, folder, str(num_processes)], echo=False,
                                      own_session=True)
    if exit_code != 0:
        last = [line for line in output.strip().splitlines() if line.strip()][-3:]
        raise AssertionError(" | ".join(last) or f"exit code {exit_code}")


def _verify(folder: str, num_processes: int) -> None:
    """nnU-Net's own integrity check; its failures become an OnboardingError-style ValueError."""
    try:
        _integrity_check(folder, max(1, num_processes))
    except (AssertionError, RuntimeError, FileNotFoundError) as error:
        raise ValueError(f"nnU-Net's integrity check failed on the converted dataset (nothing was kept): {error}. "
                         f"This is a bug in onboarding; please report it with the output above") from error


def _scan(images: str, masks: str, image_pattern, mask_pattern, channels, test_images, num_processes: int,
          progress: bool, problems: List[Problem]):
    """Pair and read every case once; naming problems go to `problems`. Returns (train, test, ignored)."""
    cases, naming_problems, ignored = assemble_cases(images, masks, image_pattern, mask_pattern, channels)
    test_cases, test_problems = [], []
    if test_images:
        test_cases, test_problems, ignored_test = assemble_cases(test_images, None, image_pattern, None, channels)
        ignored += ignored_test
    problems += naming_problems + [Problem("test " + p.kind, p.files, p.detail, p.file_notes) for p in test_problems]
    if not cases and not naming_problems:
        problems.append(Problem("no training cases found", [images], "check the folder and --image-pattern"))
    train = scan_cases(cases, num_processes, progress, "reading training cases")
    test = scan_cases(test_cases, num_processes, progress, "reading test images")
    return train, test, ignored


def _write(temporary: str, train: Sequence[CaseScan], test: Sequence[CaseScan], plan: LabelPlan,
           file_ending: str, keep_geometry: bool, num_processes: int, progress: bool) -> None:
    for sub in ("imagesTr", "labelsTr") + (("imagesTs",) if test else ()):
        os.makedirs(os.path.join(temporary, sub))
    lookup = plan.lookup_table()
    jobs = [WriteJob(s.files.case, s.files.images, s.files.mask, os.path.join(temporary, "imagesTr"),
                     os.path.join(temporary, "labelsTr"), file_ending, keep_geometry, lookup) for s in train]
    jobs += [WriteJob(s.files.case, s.files.images, None, os.path.join(temporary, "imagesTs"), None,
                      file_ending, keep_geometry) for s in test]
    parallel_map(write_case, jobs, num_processes, "writing", progress)


def _tally(train: Sequence[CaseScan], plan: LabelPlan) -> tuple:
    """(shapes, spacings, voxels per nnU-Net label, cases per nnU-Net label) for the summary."""
    shapes, spacings, voxels, present = Counter(), Counter(), Counter(), Counter()
    for s in train:
        shapes[s.images[0].shape] += 1
        if s.images[0].geometry.spacing:
            spacings[tuple(round(v, 4) for v in s.images[0].geometry.spacing)] += 1
        for value, count in s.mask.label_counts.items():
            voxels[plan.mask_to_label[value]] += count
            present[plan.mask_to_label[value]] += count > 0
    return shapes, spacings, dict(voxels), dict(present)


def onboard(images: str, masks: Optional[str], dataset_id: int, name: str, raw: Optional[str] = None, *,
            image_pattern: Optional[str] = None, mask_pattern: Optional[str] = None,
            channels: Optional[Sequence[str]] = None, labels: Optional[Sequence[str]] = None,
            modality: Optional[Sequence[str]] = None, normalization: Optional[Sequence[str]] = None,
            test_images: Optional[str] = None, overwrite: bool = False, num_processes: int = 1,
            progress: bool = True, strict: bool = False) -> OnboardingResult:
    """Convert a folder of images (+ masks) into an nnU-Net raw dataset; see the module docstring.

    `masks` None: masks are in `images` too, told apart by `mask_pattern`. `labels`: `name=value`
    strings or one JSON file path (values as found in the masks); None infers them from the masks.
    Findings (legal but suspicious inputs, see checks.find_findings) are reported with the result, or
    with `strict` refused like problems. Raises OnboardingError (every problem, every file) or ValueError
    (a bad option).
    """
    raw = raw_root(raw, alternative=", or pass --raw DIR")
    os.makedirs(raw, exist_ok=True)
    given = parse_label_mapping(labels)
    modality_options = parse_channel_options(modality, "--modality")
    normalization_options = parse_channel_options(normalization, "--normalization")
    masks = masks or images
    if os.path.abspath(masks) == os.path.abspath(images) and not mask_pattern:
        raise OptionError("images and masks are in one folder: give --mask-pattern (e.g. '{case}_seg')")

    problems, replace = _check_target(raw, dataset_id, name, overwrite)
    train, test, ignored = _scan(images, masks, image_pattern, mask_pattern, channels, test_images, num_processes,
                                 progress, problems)
    problems += find_problems(train, test, given)
    findings = find_findings(train, test)
    if strict:
        problems += [Problem(f"{f.kind} (refused by --strict)", f.files, f.detail, f.file_notes) for f in findings]
    if problems:
        raise OnboardingError(problems, raw)

    plan = plan_labels(given, found_label_values(train))
    ranges = value_ranges(train + test)
    components = [f.components for f in train[0].images]
    channel_ids = [str(c) if c is not None else None for c in train[0].files.channels]
    choices = choose_channels([(cid, comp, lo, hi) for cid, comp, (lo, hi, _) in zip(channel_ids, components, ranges)],
                              modality_options, normalization_options)
    natural = all(is_natural_2d(p) for s in train + test for p in s.files.images)
    file_ending = choose_file_ending([f.geometry.ndim for s in train for f in s.images], natural, ranges, components)
    final_name = f"Dataset{dataset_id:03d}_{name}"
    notes = list(plan.notes)
    if ignored:
        notes.append(f"ignored {len(ignored)} file(s) that are not images: "
                     + ", ".join(os.path.basename(p) for p in ignored[:10]) + (" ..." if len(ignored) > 10 else ""))
    if natural and file_ending != PNG:
        notes.append("2D images PNG cannot hold losslessly (float, negative or > 8-bit colour): written as "
                     "one-slice NIfTI (.nii.gz)")
    preprocessed = preprocessed_root(required=False)  # only for a note
    if replace and preprocessed and os.path.isdir(os.path.join(preprocessed, final_name)):
        notes.append(f"{os.path.join(preprocessed, final_name)} was made from the replaced data: "
                     f"re-run nnUNetv2_plan_and_preprocess")

    # --overwrite: the old dataset goes once the new one is in place
    with staged_dataset(raw, final_name, replace, purpose="onboarding") as temporary:
        _write(temporary, train, test, plan, file_ending, not natural, num_processes, progress)
        with open(os.path.join(temporary, "dataset.json"), "w") as f:
            json.dump(_dataset_json(choices, plan, len(train), file_ending, name, os.path.abspath(images)), f, indent=2)
        with open(os.path.join(temporary, RECORD_FILE), "w") as f:
            json.dump(_record(train, test, choices, plan, notes, findings), f, indent=2)
        _verify(temporary, num_processes)
    return OnboardingResult(os.path.join(raw, final_name), dataset_id, len(train), len(test), file_ending,
                            train[0].images[0].geometry.ndim, choices, plan, *_tally(train, plan), notes=notes,
                            replaced=replace, findings=findings)
