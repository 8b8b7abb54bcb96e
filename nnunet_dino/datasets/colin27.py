"""Colin27 T1 + AAL atlas (Debian `mricron-data`) as an nnU-Net raw dataset of axial slabs.

Colin27 (`ch2.nii.gz`) is a T1 MRI averaged from 27 scans of one person (Holmes et al. 1998).
The AAL atlas (`aal.nii.gz`) was traced by hand on that very brain and shares its 181x217x181 1 mm
grid (Tzourio-Mazoyer et al. 2002). Its 116 regions are grouped (`GROUPINGS`) into 13 structures
(`lobes`: the lobes per hemisphere, plus the cerebellum) or 2 (`grey`, the demo's: cerebral grey
matter and the cerebellum). The brain is then cut into consecutive axial slabs of a few slices.
Every k-th slab is held out for testing.

This is ONE subject. The held-out slabs are neighbours of training slabs, so the dataset shows that
the pipeline runs and fits real anatomy. It says nothing about generalisation to other people.

    nnunet-dino make-dataset colin27 --id 901                  # 20 training + 4 test slabs, 6 x 196 x 162
    nnunet-dino make-dataset colin27 --id 902 --downsample 2   # the same slabs at 2 mm: 3 x 98 x 81
    nnunet-dino make-dataset colin27 --id 902 --downsample 2 --structures grey   # the demo's: 2 structures

Downsampling is isotropic on purpose. nnU-Net's `2d` configuration slices along the axis with the
largest spacing (`ExperimentPlanner.determine_transpose`). A slab at 2 x 2 mm in-plane and 1 mm in z
would be cut into sagittal/coronal strips, not axial slices.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .aal import (  # noqa: F401 (the grouping's names, public here too)
    AAL_LOBES, EXCLUDED_AAL_REGIONS, GREY_MATTER_STRUCTURES, GROUPINGS, STRUCTURES, AalRegion, StructureRule,
    dataset_labels, group_regions, read_aal_regions)
from .. import environment
from ..errors import MissingInputError, OptionError
from .folders import require_dataset_target, staged_dataset

MRICRON_DIR_ENV_VAR = environment.MRICRON_DIR
DEFAULT_MRICRON_DIRS = ("/usr/share/mricron/templates",)
IMAGE_FILE, ATLAS_FILE, ATLAS_NAMES_FILE = "ch2.nii.gz", "aal.nii.gz", "aal.nii.txt"
REQUIRED_FILES = (IMAGE_FILE, ATLAS_FILE, ATLAS_NAMES_FILE)
CONVERSION_JSON = "colin27_conversion.json"
CASE_PREFIX = "colin27"

REFERENCE = (
    "Colin27 T1: Holmes CJ, Hoge R, Collins L, Woods R, Toga AW, Evans AC. Enhancement of MR images "
    "using registration for signal averaging. J Comput Assist Tomogr 22(2):324-333, 1998. "
    "AAL atlas: Tzourio-Mazoyer N, Landeau B, Papathanassiou D, et al. Automated anatomical labeling of "
    "activations in SPM using a macroscopic anatomical parcellation of the MNI MRI single-subject brain. "
    "NeuroImage 15(1):273-289, 2002."
)
LICENCE = (
    "Files from Debian's mricron-data package (BSD-3-Clause, Chris Rorden). Colin27 is copyright "
    "McConnell Brain Imaging Centre, Montreal Neurological Institute, McGill University, under its "
    "permissive MNI notice. AAL is by Tzourio-Mazoyer et al. (GIN, Bordeaux). Cite both papers. "
    "The converted dataset is derived from these files: don't redistribute it, rebuild it with "
    "`nnunet-dino make-dataset colin27`."
)
INSTALL_HINT = (
    "Install them with `sudo apt-get install mricron-data` (Debian/Ubuntu, 16 MB), or set "
    f"{MRICRON_DIR_ENV_VAR} to a folder holding {', '.join(REQUIRED_FILES)}. "
    "Without them the demo falls back to the synthetic dataset."
)


class MricronDataMissingError(MissingInputError):
    """The Colin27/AAL files from `mricron-data` are not installed (or not where we were told)."""


# --- finding the data ----------------------------------------------------------------------------
def find_mricron_templates() -> Optional[str]:
    """Folder holding ch2/aal from `mricron-data`, or None. `nnUNet_dino_mricron_dir`, if set, is the
    only place looked at (so a wrong override fails loudly instead of silently using another copy)."""
    override = environment.get(MRICRON_DIR_ENV_VAR, "").strip()
    for folder in ([override] if override else DEFAULT_MRICRON_DIRS):
        if all(os.path.isfile(os.path.join(folder, f)) for f in REQUIRED_FILES):
            return folder
    return None


def require_mricron_templates() -> str:
    folder = find_mricron_templates()
    if folder is None:
        override = environment.get(MRICRON_DIR_ENV_VAR, "").strip()
        looked = f"{override} ({MRICRON_DIR_ENV_VAR})" if override else " or ".join(DEFAULT_MRICRON_DIRS)
        raise MricronDataMissingError(f"Colin27/AAL files not found in {looked}. {INSTALL_HINT}")
    return folder


# --- cutting the brain into slabs ----------------------------------------------------------------
@dataclass(frozen=True)
class Slab:
    """Axial slices [z_start, z_stop) of the source grid, in the training or the test split."""
    index: int
    z_start: int
    z_stop: int
    split: str  # "train" | "test"

    @property
    def case(self) -> str:
        return f"{CASE_PREFIX}_slab{self.index:02d}"


def plan_slabs(z_first: int, z_last: int, thickness: int, num_test: int) -> List[Slab]:
    """Consecutive slabs over slices z_first..z_last (inclusive), centred (leftover slices dropped
    evenly at both ends); the test slabs (none: every slab trains) are spread evenly, one in the middle
    of each 1/num_test."""
    span = z_last - z_first + 1
    count = span // thickness if thickness >= 1 else 0
    if num_test < 0:
        raise OptionError(f"--test-slabs must be 0 or more, got {num_test}")
    if count - num_test < 1:
        raise OptionError(f"{span} labelled slices make {count} slabs of {thickness}: need at least "
                         f"{num_test} test + 1 training slab (thinner slabs or fewer test slabs)")
    start = z_first + (span - count * thickness) // 2
    test = {int((i + 0.5) * count / num_test) for i in range(num_test)} if num_test else set()
    return [Slab(i, start + i * thickness, start + (i + 1) * thickness, "test" if i in test else "train")
            for i in range(count)]


def _block_reduce(volume: np.ndarray, factor: int, labels: bool) -> np.ndarray:
    """Downsample a (z, y, x) volume by an integer factor on every axis, trimming a remainder at the
    far end. The image becomes the mean of each factor^3 block. For factor 2 that is trilinear
    interpolation at the block centre. Labels become the block's majority label: nearest neighbour
    without its half-voxel tie bias."""
    z, y, x = (n - n % factor for n in volume.shape)
    blocks = volume[:z, :y, :x].reshape(z // factor, factor, y // factor, factor, x // factor, factor)
    if not labels:
        return blocks.mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32)
    counts = np.stack([(blocks == c).sum(axis=(1, 3, 5)) for c in range(int(volume.max()) + 1)])
    return counts.argmax(axis=0).astype(np.uint8)  # ties -> the lower label


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Colin27Dataset:
    """What `make_colin27_dataset` wrote: enough to print a summary and the next commands."""
    folder: str
    dataset_id: int
    labels: Dict[str, int]
    slabs: List[Slab]
    case_shape_zyx: Tuple[int, int, int]
    spacing_zyx: Tuple[float, float, float]
    voxels_per_class: Dict[str, Dict[str, int]] = field(default_factory=dict)  # split -> name -> count

    @property
    def name(self) -> str:
        return os.path.basename(self.folder)

    def missing_classes(self, split: str) -> List[str]:
        return [n for n, count in self.voxels_per_class[split].items() if count == 0]


def make_colin27_dataset(raw_root: str, dataset_id: int = 901, name: Optional[str] = None, slab: int = 6,
                         test_slabs: int = 4, downsample: int = 1, overwrite: bool = False,
                         margin_mm: int = 8, grouping: str = "lobes") -> Colin27Dataset:
    """Write `Dataset{id}_{name}` under `raw_root` (imagesTr/labelsTr/imagesTs/labelsTs, dataset.json,
    colin27_conversion.json). `slab` is the thickness of one case in mm (source slices). A case
    holds slab / downsample slices of `downsample` mm isotropic voxels. The dataset is built in a
    hidden temporary folder and renamed at the end, so a failure never leaves a half-written
    dataset. An existing dataset is replaced only with `overwrite`. `grouping`: a key of `GROUPINGS`."""
    import SimpleITK as sitk
    if downsample < 1 or int(downsample) != downsample:
        raise OptionError(f"downsample must be a positive integer, got {downsample}")
    if grouping not in GROUPINGS:
        raise OptionError(f"unknown grouping {grouping!r}: one of {', '.join(GROUPINGS)}")
    structures = GROUPINGS[grouping]
    if slab < 1 or slab % downsample:
        raise OptionError(f"slab ({slab} mm) must be a positive multiple of downsample ({downsample})")
    name = name or ("Colin27AAL" if downsample == 1 else f"Colin27AAL{downsample}mm")
    final = os.path.join(raw_root, f"Dataset{dataset_id:03d}_{name}")
    source = require_mricron_templates()
    replaced = require_dataset_target(raw_root, dataset_id, name, overwrite)
    image, image_zyx, label_zyx, regions, mapping = _load_grouped(source, structures)

    # in-plane crop: the brain's bounding box plus a margin of head around it; slabs span its z range
    brain = np.nonzero(label_zyx)
    (z_first, z_last), (y0, y1), (x0, x1) = [(int(a.min()), int(a.max())) for a in brain]
    y0, x0 = max(0, y0 - margin_mm), max(0, x0 - margin_mm)
    y1, x1 = min(label_zyx.shape[1], y1 + 1 + margin_mm), min(label_zyx.shape[2], x1 + 1 + margin_mm)
    slabs = plan_slabs(z_first, z_last, slab, test_slabs)
    z_lo, z_hi = slabs[0].z_start, slabs[-1].z_stop
    image_zyx, label_zyx = image_zyx[z_lo:z_hi, y0:y1, x0:x1], label_zyx[z_lo:z_hi, y0:y1, x0:x1]
    if downsample > 1:
        image_zyx, label_zyx = _block_reduce(image_zyx, downsample, False), _block_reduce(label_zyx, downsample, True)
    spacing_xyz = tuple(float(v) * downsample for v in image.GetSpacing())
    half = (downsample - 1) / 2  # a block's centre, in source voxels

    labels = dataset_labels(structures)
    voxels = {split: dict.fromkeys(list(labels)[1:], 0) for split in ("train", "test")}
    with staged_dataset(raw_root, os.path.basename(final), replaced) as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            os.mkdir(os.path.join(tmp, sub))
        for s in slabs:
            origin = image.TransformContinuousIndexToPhysicalPoint((x0 + half, y0 + half, s.z_start + half))
            suffix = "Tr" if s.split == "train" else "Ts"
            rows = slice((s.z_start - z_lo) // downsample, (s.z_stop - z_lo) // downsample)
            for array, folder, filename in ((image_zyx[rows], f"images{suffix}", f"{s.case}_0000.nii.gz"),
                                            (label_zyx[rows], f"labels{suffix}", f"{s.case}.nii.gz")):
                out = sitk.GetImageFromArray(np.ascontiguousarray(array))
                out.SetSpacing(spacing_xyz)
                out.SetOrigin(origin)
                out.SetDirection(image.GetDirection())
                sitk.WriteImage(out, os.path.join(tmp, folder, filename), True)
            counts = np.bincount(label_zyx[rows].ravel(), minlength=len(labels))
            for label_name, label in list(labels.items())[1:]:
                voxels[s.split][label_name] += int(counts[label])
        missing = [n for n, c in voxels["train"].items() if c == 0]
        if missing:
            raise OptionError(f"classes {missing} fall in no training slab: use thinner slabs or fewer test slabs")
        case_shape = tuple(int(v) for v in label_zyx[:slab // downsample].shape)
        result = Colin27Dataset(final, dataset_id, labels, slabs, case_shape, spacing_xyz[::-1], voxels)
        _write_metadata(tmp, result, source, regions, mapping, (z_lo, y0, x0), downsample, margin_mm, grouping)
    return result


def _load_grouped(source: str, structures: Sequence[StructureRule]):
    """(ch2 as a SimpleITK image, its (z, y, x) float32 array, the grouped (z, y, x) uint8 labels,
    the AAL regions, AAL index -> label)."""
    import SimpleITK as sitk
    image = sitk.ReadImage(os.path.join(source, IMAGE_FILE))
    atlas = sitk.ReadImage(os.path.join(source, ATLAS_FILE))
    if (image.GetSize() != atlas.GetSize() or not np.allclose(image.GetSpacing(), atlas.GetSpacing())
            or not np.allclose(image.GetOrigin(), atlas.GetOrigin())
            or not np.allclose(image.GetDirection(), atlas.GetDirection())):
        raise ValueError(f"{IMAGE_FILE} and {ATLAS_FILE} in {source} are not on the same grid")
    regions = read_aal_regions(os.path.join(source, ATLAS_NAMES_FILE))
    mapping = group_regions(regions, structures)
    atlas_zyx = sitk.GetArrayFromImage(atlas)
    unknown = set(np.unique(atlas_zyx).tolist()) - {0} - {r.index for r in regions}
    if unknown:
        raise ValueError(f"{ATLAS_FILE} holds values missing from {ATLAS_NAMES_FILE}: {sorted(unknown)}")
    lut = np.zeros(int(atlas_zyx.max()) + 1, np.uint8)
    for index, label in mapping.items():
        if index < len(lut):
            lut[index] = label
    return image, sitk.GetArrayFromImage(image).astype(np.float32), lut[atlas_zyx], regions, mapping


def _write_metadata(folder: str, result: Colin27Dataset, source: str, regions: Sequence[AalRegion],
                    mapping: Dict[int, int], crop_origin_zyx: Tuple[int, int, int], downsample: int,
                    margin_mm: int, grouping: str) -> None:
    structures = GROUPINGS[grouping]
    train = [s for s in result.slabs if s.split == "train"]
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump({
            "name": result.name.split("_", 1)[1],
            "description": (f"Colin27 T1 MRI (one subject) with the AAL atlas grouped into {len(structures)} "
                            f"structures ({', '.join(r.name for r in structures)}), cut into "
                            f"{len(result.slabs)} axial slabs of {result.case_shape_zyx[0]} slices "
                            f"({result.case_shape_zyx[0] * result.spacing_zyx[0]:g} mm); every "
                            "k-th slab is held out. One brain: shows the pipeline and fitting, not "
                            f"generalisation. Grouping and split: {CONVERSION_JSON}."),
            "reference": REFERENCE,
            "licence": LICENCE,
            "channel_names": {"0": "T1"},  # not "CT": nnU-Net z-scores it
            "labels": result.labels,
            "numTraining": len(train),
            "file_ending": ".nii.gz",
        }, f, indent=2)
    by_label: Dict[int, List[AalRegion]] = {}
    for region in regions:
        by_label.setdefault(mapping[region.index], []).append(region)
    structures = [{"label": label, "name": rule.name, "aal_lobe_codes": list(rule.lobes), "side": rule.side,
                   "description": rule.description,
                   "aal_regions": [{"index": r.index, "name": r.name, "code": r.code} for r in by_label[label]]}
                  for label, rule in enumerate(structures, start=1)]
    with open(os.path.join(folder, CONVERSION_JSON), "w") as f:
        json.dump({
            "source": {"folder": source, **{n: {"sha256": _sha256(os.path.join(source, n))} for n in REQUIRED_FILES}},
            "grouping": {"name": grouping,
                         "rule": "AAL code // 1000 is the lobe (AAL_LOBES); side from the _L/_R name suffix",
                         "aal_lobes": {str(k): v for k, v in AAL_LOBES.items()},
                         "excluded_aal_regions": list(EXCLUDED_AAL_REGIONS), "structures": structures},
            "crop": {"source_start_zyx": list(crop_origin_zyx), "margin_mm": margin_mm},
            "downsample": downsample,
            "case_shape_zyx": list(result.case_shape_zyx),
            "spacing_zyx_mm": list(result.spacing_zyx),
            "slabs": [{"case": s.case, "split": s.split, "source_z": [s.z_start, s.z_stop]} for s in result.slabs],
            "voxels_per_class": result.voxels_per_class,
        }, f, indent=2)


def format_summary(result: Colin27Dataset, raw_root: str) -> str:
    """Human-readable summary plus the nnU-Net commands to run next."""
    train = [s for s in result.slabs if s.split == "train"]
    test = [s for s in result.slabs if s.split == "test"]
    z, y, x = result.case_shape_zyx
    lines = [f"wrote {result.folder}",
             f"  cases: {len(train)} training + {len(test)} test slabs "
             + (f"(test: {', '.join(s.case for s in test)})" if test else "(cross-validation only)"),
             f"  shape (z, y, x): {z} x {y} x {x} voxels; spacing (z, y, x): "
             + " x ".join(f"{v:g}" for v in result.spacing_zyx) + " mm",
             f"  {'class':<16}{'label':>6}{'train voxels':>14}{'test voxels':>13}"]
    for name, label in list(result.labels.items())[1:]:
        lines.append(f"  {name:<16}{label:>6}{result.voxels_per_class['train'][name]:>14}"
                     f"{result.voxels_per_class['test'][name]:>13}")
    if test and result.missing_classes("test"):
        lines.append(f"  note: no test voxels for {result.missing_classes('test')}: their test Dice is undefined")
    lines.append("  one subject: this shows the pipeline and fitting on real anatomy, not generalisation")
    d, folder, out = result.dataset_id, result.folder, "predictions_colin27"
    plans = os.path.join("$nnUNet_preprocessed", result.name, "nnUNetPlans.json")
    lines += ["", "next:"]
    if os.environ.get("nnUNet_raw") != raw_root:
        lines.append(f"  export nnUNet_raw={raw_root} nnUNet_preprocessed=... nnUNet_results=...")
    lines += [f"  nnUNetv2_plan_and_preprocess -d {d} -c 2d --verify_dataset_integrity",
              f"  nnUNetv2_train {d} 2d 0 -tr nnUNetTrainerSegDINO -device cpu   (and -tr nnUNetTrainer to compare)"]
    if test:
        lines += [f"  nnUNetv2_predict -i {folder}/imagesTs -o {out} -d {d} -c 2d -tr nnUNetTrainerSegDINO -f 0 "
                  "-device cpu",
                  f"  nnUNetv2_evaluate_folder {folder}/labelsTs {out} -djfile {folder}/dataset.json -pfile {plans}"]
    return "\n".join(lines)
