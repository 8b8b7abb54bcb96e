"""The input normalisation each weights source was trained with.

Normalisation follows the weights, not the backbone's size: LVD-142M / LVD-1689M weights use the
ImageNet statistics on [0, 1] RGB, SAT-493M weights their own satellite statistics, a transformers
folder (RAD-DINO, ...) the mean/std of its `preprocessor_config.json`, and MedDINOv3 standardises
CT in Hounsfield units (`space` 'hu': clipped to `hu_clip`, then the mean/std). The load record
carries the resolved normalisation, so plans and checkpoints say what the network applies.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Optional, Tuple

from .errors import WeightsError

RGB_SPACE = "rgb01"   # mean/std apply to RGB scaled to [0, 1]
HU_SPACE = "hu"       # mean/std apply to Hounsfield units clipped to `hu_clip`


@dataclass(frozen=True)
class Normalization:
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    origin: str                               # where the numbers come from, for records and logs
    space: str = RGB_SPACE
    hu_clip: Optional[Tuple[float, float]] = None

    def record(self) -> dict:
        record = {"mean": list(self.mean), "std": list(self.std), "space": self.space, "origin": self.origin}
        if self.hu_clip is not None:
            record["hu_clip"] = list(self.hu_clip)
        return record

    @classmethod
    def from_record(cls, record: dict) -> "Normalization":
        clip = record.get("hu_clip")
        return cls(tuple(record["mean"]), tuple(record["std"]), record.get("origin", "?"),
                   record.get("space", RGB_SPACE), tuple(clip) if clip is not None else None)


IMAGENET = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "ImageNet statistics (LVD weights)")
SAT493M = Normalization((0.430, 0.411, 0.296), (0.213, 0.156, 0.143), "SAT-493M statistics")
# MedDINOv3's published CT recipe: HU clipped to [-1000, 1000], then (x - mean) / (std + 1e-8), repeated
MEDDINOV3_CT = Normalization((65.1084213256836,) * 3, (178.01663208007812 + 1e-8,) * 3,
                             "MedDINOv3 CT recipe", HU_SPACE, (-1000.0, 1000.0))

#: pre-training data sets recognised in file names and hub ids, with their normalisation
DATASET_TAGS = {"sat493m": SAT493M, "lvd1689m": IMAGENET, "lvd142m": IMAGENET}
_TAG = re.compile("|".join(DATASET_TAGS), re.IGNORECASE)
PREPROCESSOR_CONFIG = "preprocessor_config.json"
#: safetensors metadata key under which `nnunet-dino weights convert` keeps the normalisation
METADATA_KEY = "nnunet_dino.normalization"


def dataset_tag(name: str) -> Optional[str]:
    """'sat493m', 'lvd1689m' or 'lvd142m' if a file name or hub id names its pre-training data."""
    match = _TAG.search(os.path.basename(name.rstrip("/")) or name)
    return match.group(0).lower() if match else None


def read_preprocessor_config(path: str) -> Normalization:
    """image_mean / image_std of a transformers `preprocessor_config.json` (3 values each)."""
    try:
        with open(path) as f:
            config = json.load(f)
        mean, std = tuple(float(v) for v in config["image_mean"]), tuple(float(v) for v in config["image_std"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise WeightsError(f"Could not read image_mean/image_std from {path} ({type(e).__name__}: {e}). "
                           f"Download the model folder's preprocessor_config.json again.") from None
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise WeightsError(f"{path}: image_mean and image_std must hold 3 values (std > 0), got {mean} / {std}.")
    return Normalization(mean, std, f"{PREPROCESSOR_CONFIG} ({path})")


def _safetensors_metadata(path: str) -> Optional[Normalization]:
    try:
        from safetensors import safe_open
        with safe_open(path, "pt") as f:
            text = (f.metadata() or {}).get(METADATA_KEY)
        return Normalization.from_record(json.loads(text)) if text else None
    except Exception:  # unreadable files are reported by the loader itself
        return None


def _sidecar(path: str) -> Optional[str]:
    """`<file stem>.preprocessor_config.json`, else the folder's `preprocessor_config.json`."""
    stem = os.path.splitext(path)[0]
    for candidate in (f"{stem}.{PREPROCESSOR_CONFIG}", os.path.join(os.path.dirname(path), PREPROCESSOR_CONFIG)):
        if os.path.isfile(candidate):
            return candidate
    return None


def source_normalization(spec, kind: str, path: str) -> Normalization:
    """The normalisation a weights source (`WeightsSource.kind`/`.path`) was trained with, in this order:
    the model folder's preprocessor config (or a file's metadata / sidecar config), the data set named
    in the file name or hub id, the backbone row's own. WeightsError when none is known."""
    if kind == "folder" and os.path.isfile(os.path.join(path, PREPROCESSOR_CONFIG)):
        return read_preprocessor_config(os.path.join(path, PREPROCESSOR_CONFIG))
    if kind == "file":
        found = _safetensors_metadata(path) if path.endswith(".safetensors") else None
        sidecar = None if found else _sidecar(path)
        if found or sidecar:
            return found or read_preprocessor_config(sidecar)
    tag = dataset_tag(path) if kind in ("file", "folder", "hub") else None
    if tag:
        return DATASET_TAGS[tag]
    if spec.normalization is not None:
        return spec.normalization
    if kind == "random":
        return Normalization(IMAGENET.mean, IMAGENET.std, "ImageNet statistics (placeholder: random backbone)")
    raise WeightsError(f"The input normalisation of {path} is unknown: backbone {spec.name} takes it from the "
                       f"model's {PREPROCESSOR_CONFIG}. Put that file beside the weights (it comes with "
                       f"{spec.hf_repo or 'the model'}).")
