"""Which files form a case: naming patterns, image/mask pairing and channel grouping.

A pattern is either a template with `{case}` (and, for images, optionally `{channel}`), e.g.
`{case}_{channel}.nii.gz` or `{case}_seg`, matched against the file name without its extension;
or a regular expression with named groups `(?P<case>...)` / `(?P<channel>...)`, matched against
the whole file name (or, failing that, the name without extension).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple
from ..errors import MissingInputError, OptionError

EXTENSIONS_3D = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".dcm")
EXTENSIONS_2D = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# longest first, so ".nii.gz" is not taken for ".gz"-less ".nii"
SUPPORTED_EXTENSIONS = tuple(sorted(EXTENSIONS_3D + EXTENSIONS_2D, key=len, reverse=True))
FOLDER_MARK = "/"  # list_files names a sub-folder (a DICOM series, or a DICOM-SEG's folder) 'NAME/'
SAFE_CASE_ID = re.compile(r"[^A-Za-z0-9_-]")


def split_extension(filename: str) -> Tuple[str, str]:
    """(stem, extension) for a supported image file; extension '' when the ending is not supported.
    A folder named by list_files ('NAME/') has the extension '/'."""
    if filename.endswith(FOLDER_MARK) and len(filename) > 1:
        return filename[:-1], FOLDER_MARK
    lower = filename.lower()
    for ext in SUPPORTED_EXTENSIONS:
        if lower.endswith(ext) and len(filename) > len(ext):
            return filename[: -len(ext)], ext
    return filename, ""


@dataclass
class Problem:
    """One reason to refuse a dataset: a kind (the grouping in the message), the files, what to do,
    and optionally what is wrong with each file."""
    kind: str
    files: List[str]
    detail: str = ""
    file_notes: Dict[str, str] = field(default_factory=dict)


@dataclass
class CaseFiles:
    """The source files of one case: images in channel order and, for training cases, the mask."""
    case: str                       # nnU-Net case identifier (file-name safe)
    source_case: str                # the case name as found in the file names
    images: List[str]               # one path per channel file
    channels: List[Optional[str]]   # channel id per image file (None without a {channel} pattern)
    mask: Optional[str] = None


class NamePattern:
    """Extracts (case, channel) from a file name; see the module docstring for the two syntaxes."""

    def __init__(self, spec: Optional[str], role: str, allow_channel: bool = True):
        self.spec, self.role = spec or "{case}", role
        if "(?P<case>" in self.spec:
            try:
                self.regex, self.is_template = re.compile(self.spec), False
            except re.error as error:
                raise OptionError(f"{role} pattern {self.spec!r} is not a valid regular expression: {error}")
        else:
            self.regex, self.is_template = self._template_regex(self.spec), True
        self.has_channel = "channel" in self.regex.groupindex
        if self.has_channel and not allow_channel:
            raise OptionError(f"{role} pattern {self.spec!r} has a channel; masks have one file per case: "
                             f"use only {{case}} (e.g. '{{case}}_seg')")

    def _template_regex(self, template: str) -> "re.Pattern":
        stem, _ = split_extension(template)  # the extension in a template is optional: stems are matched
        if stem.count("{case}") != 1 or stem.count("{channel}") > 1:
            raise OptionError(f"{self.role} pattern {template!r} needs {{case}} exactly once (and {{channel}} at "
                             f"most once), e.g. '{{case}}_{{channel}}.nii.gz', or a regex with (?P<case>...)")
        parts = re.split(r"(\{case\}|\{channel\})", stem)
        # the case is greedy and the channel lazy: 'sub_01_t1' with '{case}_{channel}' -> ('sub_01', 't1')
        groups = {"{case}": "(?P<case>.+)", "{channel}": "(?P<channel>.+?)"}
        return re.compile("".join(groups.get(p, re.escape(p)) for p in parts))

    def match(self, filename: str) -> Optional[Tuple[str, Optional[str]]]:
        stem, ext = split_extension(filename)
        if not ext:
            return None
        found = None if self.is_template else self.regex.fullmatch(filename)
        found = found or self.regex.fullmatch(stem)
        if not found or not found.group("case"):
            return None
        return found.group("case"), found.group("channel") if self.has_channel else None


def _holds_dicom(folder: str, looked_at: int = 8) -> bool:
    """Whether a sub-folder holds DICOM files (by name, or by the 'DICM' marker after the 128-byte preamble);
    other sub-folders (thumbnails, old exports) stay out of the way, as before DICOM was read."""
    files = sorted(f for f in os.listdir(folder) if not f.startswith(".") and os.path.isfile(os.path.join(folder, f)))
    for name in files[:looked_at]:
        if name.lower().endswith(".dcm"):
            return True
        with open(os.path.join(folder, name), "rb") as f:
            if f.read(132)[128:] == b"DICM":
                return True
    return False


def list_files(folder: str) -> List[str]:
    """The files of `folder`, and its sub-folders that hold DICOM files (a series, a SEG) as 'NAME/'."""
    if not os.path.isdir(folder):
        raise MissingInputError(f"not a folder: {folder}")
    names = [f for f in os.listdir(folder) if not f.startswith(".")]
    files = [f for f in names if os.path.isfile(os.path.join(folder, f))]
    folders = [f + FOLDER_MARK for f in names if os.path.isdir(os.path.join(folder, f))
               and _holds_dicom(os.path.join(folder, f))]
    return sorted(files + folders)


def _group(folder: str, names: Sequence[str], pattern: NamePattern,
           problems: List[Problem]) -> Dict[str, Dict[Optional[str], str]]:
    """case -> channel -> path for every file matching the pattern; non-matching files are problems."""
    groups: Dict[str, Dict[Optional[str], str]] = {}
    unmatched, duplicates = [], []
    for name in names:
        found = pattern.match(name)
        if found is None:
            unmatched.append(os.path.join(folder, name))
            continue
        case, channel = found
        slot = groups.setdefault(case, {})
        if channel in slot:
            duplicates += [slot[channel], os.path.join(folder, name)]
        else:
            slot[channel] = os.path.join(folder, name)
    if unmatched:
        problems.append(Problem(f"file names that do not match the {pattern.role} pattern {pattern.spec!r}",
                                unmatched, "rename them, fix the pattern or move them out of the folder"))
    if duplicates:
        what = "case and channel" if pattern.has_channel else "case"
        problems.append(Problem(f"{pattern.role} files naming the same {what}",
                                sorted(set(duplicates)), "keep one file per case (e.g. not both .png and .jpg)"))
    return groups


def _channel_order(groups: Dict[str, Dict[Optional[str], str]], requested: Optional[Sequence[str]]) -> List:
    found = sorted({c for per_case in groups.values() for c in per_case if c is not None})
    if requested:
        return list(requested)
    return found if found else [None]


def assemble_cases(images_dir: str, masks_dir: Optional[str], image_pattern: Optional[str] = None,
                   mask_pattern: Optional[str] = None, channels: Optional[Sequence[str]] = None
                   ) -> Tuple[List[CaseFiles], List[Problem], List[str]]:
    """Pair images and masks by case (masks_dir None: test images). Returns (cases, problems, ignored files)."""
    problems: List[Problem] = []
    images = NamePattern(image_pattern, "image")
    masks = NamePattern(mask_pattern, "mask", allow_channel=False) if masks_dir else None
    if channels and not images.has_channel:
        raise OptionError("--channels names channels, but the image pattern has no {channel}: "
                         "pass e.g. --image-pattern '{case}_{channel}.nii.gz'")
    names = list_files(images_dir)
    ignored = [os.path.join(images_dir, n) for n in names if not split_extension(n)[1]]
    names = [n for n in names if split_extension(n)[1]]
    mask_groups: Dict[str, Dict[Optional[str], str]] = {}
    if masks is not None:
        same_folder = os.path.abspath(masks_dir) == os.path.abspath(images_dir)
        if same_folder and masks.spec == images.spec:
            raise OptionError("images and masks are in one folder: give --mask-pattern (e.g. '{case}_seg') "
                             "and, if needed, --image-pattern so the two kinds can be told apart")
        if same_folder:  # a file matching the mask pattern is a mask, everything else an image
            mask_names = [n for n in names if masks.match(n)]
            taken = set(mask_names)
            names = [n for n in names if n not in taken]
        else:
            mask_names = [n for n in list_files(masks_dir) if split_extension(n)[1]]
        mask_groups = _group(masks_dir, mask_names, masks, problems)
    image_groups = _group(images_dir, names, images, problems)
    order = _channel_order(image_groups, channels)

    if masks is not None:
        lonely_images = sorted(p for c in image_groups if c not in mask_groups for p in image_groups[c].values())
        lonely_masks = sorted(p for c in mask_groups if c not in image_groups for p in mask_groups[c].values())
        if lonely_images:
            problems.append(Problem("images without a mask", lonely_images,
                                    "add their masks, or move them out (unlabelled images: --test-images)"))
        if lonely_masks:
            problems.append(Problem("masks without an image", lonely_masks, "add their images or remove the masks"))

    cases, wrong_channels, seen_ids = [], [], {}
    for source_case in sorted(image_groups):
        if masks is not None and source_case not in mask_groups:
            continue
        files = image_groups[source_case]
        if set(files) != set(order):
            have = sorted(str(c) for c in files)
            wrong_channels += [(path, f"case {source_case!r} has channels {have}") for path in sorted(files.values())]
            continue
        case_id = SAFE_CASE_ID.sub("_", source_case)
        seen_ids.setdefault(case_id, []).append(source_case)
        mask = next(iter(mask_groups[source_case].values())) if masks is not None else None
        cases.append(CaseFiles(case_id, source_case, [files[c] for c in order], list(order), mask))
    if wrong_channels:
        problems.append(Problem("inconsistent channel counts (channel files per case)", [p for p, _ in wrong_channels],
                                f"every case needs the channels {[str(c) for c in order]}: add the missing files",
                                dict(wrong_channels)))
    clashes = {k: v for k, v in seen_ids.items() if len(v) > 1}
    if clashes:
        clashing = [c for c in cases if c.case in clashes]
        problems.append(Problem("case names that become the same nnU-Net identifier", [c.images[0] for c in clashing],
                                "rename them: only letters, digits, '_' and '-' survive",
                                {c.images[0]: f"case {c.source_case!r} -> {c.case!r}" for c in clashing}))
    problems += _letter_case_clashes([c for c in cases if c.case not in clashes])
    return cases, problems, ignored


def _letter_case_clashes(cases: Sequence[CaseFiles]) -> List[Problem]:
    """Case names equal up to letter case ('Case1', 'case1') overwrite each other once the dataset is copied
    to a case-insensitive file system (macOS, Windows, many shares), so they are refused."""
    by_folded: Dict[str, List[CaseFiles]] = {}
    for case in cases:
        by_folded.setdefault(case.case.casefold(), []).append(case)
    clashing = [c for group in by_folded.values() if len(group) > 1 for c in group]
    if not clashing:
        return []
    notes = {c.images[0]: "cases " + ", ".join(repr(o.case) for o in by_folded[c.case.casefold()]) for c in clashing}
    return [Problem("case names equal up to letter case", [c.images[0] for c in clashing],
                    "they would overwrite each other on a case-insensitive file system (macOS, Windows) when the "
                    "dataset is copied: rename one of each pair (e.g. 'case1' -> 'case1b')", notes)]
