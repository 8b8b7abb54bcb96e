"""Which 2D slices pretraining sees: cases selected from nnU-Net datasets or plain folders, read
into per-channel slices, and a seeded pool that draws them.

- An nnU-Net dataset (`-d ID`) is read preprocessed (`<nnUNet_preprocessed>/<Dataset>/<plans>_<cfg>`,
  already normalised the way the trainers see it) when that folder exists, else raw (`imagesTr`,
  z-scored per channel after clipping to the 0.5-99.5 percentiles). Labels are never read.
- A folder (`--folder DIR`): every image or volume file below it is one unlabelled case.
Every channel of every case is a grey image; 3D volumes are cut along their first array axis (the
axis nnU-Net's `2d` configuration slices), constant slices are skipped. The pool keeps a bounded set
of read cases and swaps one per step, so large datasets cost one read per step, and its state (the
case stream and the pool) is saved with the training state: a resumed run draws what an
uninterrupted one would have drawn.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..errors import MissingInputError, UserError
from ..onboarding.naming import EXTENSIONS_2D, split_extension


class PretrainDataError(UserError):
    """A selection without usable images, or an image that cannot be read."""


@dataclass(frozen=True)
class Case:
    group: str                  # dataset name (e.g. Dataset042_Liver) or folder path
    case_id: str                # nnU-Net case identifier, or the file's path below the folder
    kind: str                   # 'raw' | 'preprocessed' | 'file'
    files: Tuple[str, ...] = ()  # image files (raw: one per channel); preprocessed: the data folder


def _raw_cases(name: str) -> List[Case]:
    import json
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets
    from ..nnunet.folders import raw_root
    folder = os.path.join(raw_root(), name)
    with open(os.path.join(folder, "dataset.json")) as f:
        dataset_json = json.load(f)
    found = get_filenames_of_train_images_and_targets(folder, dataset_json)
    return [Case(name, str(case), "raw", tuple(str(f) for f in entry["images"])) for case, entry in sorted(found.items())]


def _preprocessed_cases(folder: str, name: str) -> List[Case]:
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    identifiers = sorted(infer_dataset_class(folder).get_identifiers(folder))
    return [Case(name, str(case), "preprocessed", (folder,)) for case in identifiers]


def dataset_cases(dataset: str, source: str = "auto", plans: str = "nnUNetPlans",
                  configuration: str = "2d") -> Tuple[List[Case], str]:
    """(cases, where they were read) of one nnU-Net dataset; `source` is auto | raw | preprocessed."""
    from ..nnunet import dataset_name, preprocessed_folder
    from ..nnunet.folders import raw_root
    name = str(dataset_name(dataset))
    folder = os.path.join(preprocessed_folder(name), f"{plans}_{configuration}")
    if source == "preprocessed" or (source == "auto" and os.path.isdir(folder) and os.listdir(folder)):
        if not os.path.isdir(folder):
            raise MissingInputError(f"no preprocessed data in {folder}: run nnUNetv2_plan_and_preprocess -d "
                                    f"{dataset} -c {configuration}, or use --source raw")
        return _preprocessed_cases(folder, name), folder
    raw = os.path.join(raw_root(), name)
    if not os.path.isfile(os.path.join(raw, "dataset.json")):
        raise MissingInputError(f"dataset {name} has neither preprocessed data ({folder}) nor a raw folder with "
                                f"dataset.json ({raw}); check nnUNet_raw / nnUNet_preprocessed")
    return _raw_cases(name), os.path.join(raw, "imagesTr")


def folder_cases(folder: str) -> List[Case]:
    """Every supported image or volume file below `folder`, one case each (its relative path)."""
    folder = os.path.abspath(folder)
    if not os.path.isdir(folder):
        raise MissingInputError(f"--folder {folder} does not exist or is not a folder")
    cases = []
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            stem, ext = split_extension(name)
            if ext and not name.startswith("."):
                path = os.path.join(root, name)
                cases.append(Case(folder, os.path.relpath(os.path.join(root, stem), folder), "file", (path,)))
    return cases


def select_cases(datasets: Sequence[str] = (), folders: Sequence[str] = (), source: str = "auto",
                 plans: str = "nnUNetPlans", configuration: str = "2d") -> Tuple[List[Case], List[dict]]:
    """(cases, one description per group: {'group', 'read_from', 'cases'}); PretrainDataError if empty."""
    cases, groups = [], []
    for dataset in datasets:
        found, where = dataset_cases(dataset, source, plans, configuration)
        groups.append({"group": found[0].group if found else str(dataset), "read_from": where,
                       "cases": [c.case_id for c in found]})
        cases += found
    for folder in folders:
        found = folder_cases(folder)
        groups.append({"group": os.path.abspath(folder), "read_from": os.path.abspath(folder),
                       "cases": [c.case_id for c in found]})
        cases += found
    empty = [g["read_from"] for g in groups if not g["cases"]]
    if not groups:
        raise PretrainDataError("nothing to pretrain on: give -d DATASET [DATASET ...] and/or --folder DIR")
    if empty:
        raise PretrainDataError(f"no images in {', '.join(empty)}: nothing to pretrain on there (supported: "
                                f"{', '.join(EXTENSIONS_2D)}, .nii(.gz), .nrrd, .mha, .mhd, nnU-Net preprocessed data)")
    return cases, groups


def _zscore(volume: np.ndarray) -> np.ndarray:
    low, high = np.percentile(volume, (0.5, 99.5))
    volume = np.clip(volume.astype(np.float32), low, high)
    return (volume - volume.mean()) / max(float(volume.std()), 1e-8)


def _grey_channels(case: Case) -> List[np.ndarray]:
    """The case's channels, each (z, y, x) float32 (2D images: z = 1)."""
    if case.kind == "preprocessed":
        from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
        data = infer_dataset_class(case.files[0])(case.files[0], [case.case_id]).load_case(case.case_id)[0]
        return [np.asarray(data[c], dtype=np.float32) for c in range(data.shape[0])]
    from ..onboarding.imageio import read_array
    channels = []
    for path in case.files:
        try:
            array, geometry = read_array(path)
        except Exception as error:  # noqa: BLE001 - SimpleITK, PIL and our own checks raise many types
            raise PretrainDataError(f"cannot read image {path} ({type(error).__name__}: "
                                    f"{str(error).strip().splitlines()[0] if str(error).strip() else 'unreadable'}); "
                                    f"fix or remove the file") from None
        if array.ndim > geometry.ndim:  # colour / vector components: their mean is the grey image
            array = array.mean(axis=-1)
        array = array.reshape((1,) + array.shape) if geometry.ndim == 2 else array
        channels.append(_zscore(array))
    return channels


def read_slices(case: Case) -> List[np.ndarray]:
    """Every non-constant 2D slice of every channel of `case` (float32)."""
    slices = []
    for volume in _grey_channels(case):
        if volume.ndim != 3 or min(volume.shape[1:]) < 2:
            continue
        slices += [s for s in volume if float(s.max()) > float(s.min())]
    return slices


class SlicePool:
    """Draws slices from `pool_size` read cases; one case is swapped for the next of a shuffled
    stream over all cases at every `refresh()`."""

    def __init__(self, cases: Sequence[Case], pool_size: int, seed: int):
        self.cases = list(cases)
        self.rng = np.random.default_rng(seed)
        self.order: List[int] = []
        self.position = 0
        self.pool_ids: List[int] = []
        self.pool: Dict[int, List[np.ndarray]] = {}
        self.pool_size = max(1, min(pool_size, len(self.cases)))

    def _next_case(self) -> int:
        if self.position >= len(self.order):
            self.order, self.position = [int(i) for i in self.rng.permutation(len(self.cases))], 0
        self.position += 1
        return self.order[self.position - 1]

    def _load(self, index: int) -> None:
        if index not in self.pool:
            self.pool[index] = read_slices(self.cases[index])

    def fill(self) -> None:
        while len(self.pool_ids) < self.pool_size:
            self.pool_ids.append(self._next_case())
        for index in self.pool_ids:
            self._load(index)
        self.pool = {i: self.pool[i] for i in self.pool_ids}
        if not any(self.pool.values()) and self.pool_size == len(self.cases):
            raise PretrainDataError(f"the {len(self.cases)} selected case(s) hold no non-constant slice: "
                                    f"nothing to pretrain on")

    def refresh(self) -> None:
        """Swap one pooled case (chosen at random) for the next case of the stream."""
        if self.pool_size < len(self.cases):
            slot = int(self.rng.integers(len(self.pool_ids)))
            self.pool_ids[slot] = self._next_case()
        self.fill()

    def sample(self, count: int) -> List[np.ndarray]:
        for _ in range(len(self.cases) + 1):  # a pool of constant images only: draw other cases
            usable = [i for i in self.pool_ids if self.pool[i]]
            if usable:
                break
            self.refresh()
        else:
            raise PretrainDataError(f"the {len(self.cases)} selected case(s) hold no non-constant slice: "
                                    f"nothing to pretrain on")
        out = []
        for _ in range(count):
            slices = self.pool[usable[int(self.rng.integers(len(usable)))]]
            out.append(slices[int(self.rng.integers(len(slices)))])
        return out

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "order": list(self.order), "position": self.position,
                "pool_ids": list(self.pool_ids)}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.order, self.position = list(state["order"]), int(state["position"])
        self.pool_ids, self.pool = list(state["pool_ids"]), {}
        self.fill()
