"""Label efficiency: training on a seeded fraction of each fold's training cases, through nnU-Net's own
custom-split mechanism, for any trainer (nnU-Net's own, residual-encoder plans, the plugin's, a third
party's) without a line of trainer code.

nnU-Net reads the folds from `<nnUNet_preprocessed>/<Dataset>/splits_final.json`, a list of
`{"train": [...], "val": [...]}` that may hold any number of entries; `nnUNetv2_train D C N` trains on
entry N. A fraction f < 1 of fold k is one more entry appended after the dataset's own folds: the
same `val` cases as fold k, and as `train` the first round(f * n) (at least 1) of fold k's n training
cases in a seeded permutation (`numpy.random.default_rng([seed, k])`), so the subsets are nested
(0.1 within 0.25 within 0.5) and the same for every model, configuration and plans. The results land
in the model's own folder as `fold_<N>` with N >= the number of the dataset's folds: the full-data
folds (entries and folders 0..n-1) are never touched. Fraction 1.0 *is* fold k.

Which appended entry is which lives in `nnunet_dino_train_fractions.json` beside the splits (written
first, then the splits, each atomically; a run killed in between is repaired on the next call). Every
read checks that the splits still hold exactly the recorded entries. When the dataset has no
splits_final.json yet, the one nnU-Net would create is written first (its own
`generate_crossval_split` of the sorted case identifiers, seed 12345, 5 folds).

Why not a copy of the plans with a fraction key read by the trainer: nnU-Net's own `nnUNetTrainer`
(and any trainer outside this plugin) would ignore the key and silently train on every case into a
folder named after the fraction.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import OptionError
from ..files import write_atomically
from ..nnunet import preprocessed_folder

SPLITS_FILE = "splits_final.json"
RECORD_FILE = "nnunet_dino_train_fractions.json"
FULL = 1.0
NNUNET_SPLIT_SEED, NNUNET_SPLIT_FOLDS = 12345, 5  # nnU-Net's own default split (nnUNetTrainer.do_split)

Run = Tuple[int, float]   # (the dataset's fold, fraction of its training cases)


def check_fractions(fractions: Sequence[float]) -> List[float]:
    """Sorted distinct fractions, each in (0, 1]."""
    bad = [f for f in fractions if not 0 < f <= 1]
    if bad:
        raise OptionError(f"--train-fractions {bad}: each fraction must be in (0, 1] (1.0 = the full-data run)")
    return sorted(set(float(f) for f in fractions))


def subset_size(n_train: int, fraction: float) -> int:
    return max(1, int(np.floor(fraction * n_train + 0.5)))


def training_subset(train_cases: Sequence[str], fraction: float, seed: int, fold: int) -> List[str]:
    """The seeded, nested subset of a fold's training cases (sorted, as nnU-Net lists them)."""
    cases = sorted(train_cases)
    order = np.random.default_rng([seed, fold]).permutation(len(cases))
    return sorted(cases[i] for i in order[:subset_size(len(cases), fraction)])


def _path(name: str, file: str) -> str:
    return os.path.join(preprocessed_folder(name), file)


def _read(path: str, default):
    if not os.path.isfile(path):
        return default
    with open(path) as f:
        return json.load(f)


def _write(path: str, content) -> None:
    def dump(temporary: str) -> None:
        with open(temporary, "w") as f:
            json.dump(content, f, indent=2)
    write_atomically(path, dump)


def _nnunet_default_splits(name: str) -> list:
    from nnunetv2.utilities.crossval_split import generate_crossval_split
    from ..evaluation.folders import case_name
    folder = os.path.join(preprocessed_folder(name), "gt_segmentations")
    ending = _read(_path(name, "dataset.json"), {}).get("file_ending", "")
    cases = sorted(case_name(f, ending) for f in os.listdir(folder) if f.endswith(ending))
    return [{"train": list(map(str, s["train"])), "val": list(map(str, s["val"]))}
            for s in generate_crossval_split(cases, seed=NNUNET_SPLIT_SEED, n_splits=NNUNET_SPLIT_FOLDS)]


def _entry(splits: list, base_fold: int, fraction: float, seed: int) -> dict:
    return {"train": training_subset(splits[base_fold]["train"], fraction, seed, base_fold),
            "val": list(splits[base_fold]["val"])}


def _checked(name: str, splits: list, record: dict) -> list:
    """The splits, with recorded entries that a killed write left out appended; refuses any that differ."""
    splits = list(splits)
    for subset in sorted(record["subsets"], key=lambda s: s["fold"]):
        expected = _entry(splits, subset["base_fold"], subset["fraction"], subset["seed"])
        if subset["fold"] == len(splits):
            splits.append(expected)
        elif subset["fold"] > len(splits) or splits[subset["fold"]] != expected:
            raise OptionError(f"{_path(name, SPLITS_FILE)} entry {subset['fold']} is not the training subset "
                              f"{_path(name, RECORD_FILE)} records (fold {subset['base_fold']} at "
                              f"{subset['fraction']:g}): the splits were changed. Restore them, or move both files "
                              f"and the fold_{subset['fold']} folders of your models away")
    return splits


def base_fold_count(name: str) -> Optional[int]:
    """The dataset's own folds (entries of splits_final.json not added for a fraction); None without splits."""
    record = _read(_path(name, RECORD_FILE), None)
    if record:
        return int(record["base_folds"])
    splits = _read(_path(name, SPLITS_FILE), None)
    return None if splits is None else len(splits)


def fraction_folds(name: str, folds: Sequence[int], fractions: Sequence[float], seed: int = 0,
                   create: bool = False) -> Dict[Run, int]:
    """(fold, fraction) -> the nnU-Net fold number to train / read. Fraction 1.0 is the fold itself.
    `create`: append the entries that do not exist yet (crossval); otherwise they are left out (report)."""
    fractions = check_fractions(fractions)
    runs: Dict[Run, int] = {(k, f): k for k in folds for f in fractions if f == FULL}
    wanted = [(k, f) for k in folds for f in fractions if f != FULL]
    if not wanted:
        return runs
    if "all" in folds:
        raise OptionError("--train-fractions needs numbered folds: fold 'all' has no validation cases to keep")
    record = _read(_path(name, RECORD_FILE), None)
    splits = _read(_path(name, SPLITS_FILE), None)
    if splits is None and not create:
        return runs
    splits = _nnunet_default_splits(name) if splits is None else splits
    record = record or {"base_folds": len(splits), "subsets": []}
    splits = _checked(name, splits, record)
    known = {(s["base_fold"], float(s["fraction"]), int(s["seed"])): s["fold"] for s in record["subsets"]}
    added = []
    for k, f in wanted:
        if (k, f, seed) not in known and create:
            fold = len(splits)
            splits.append(_entry(splits, k, f, seed))
            known[(k, f, seed)] = fold
            added.append({"fold": fold, "base_fold": k, "fraction": f, "seed": seed,
                          "n_train": len(splits[fold]["train"]), "n_train_full": len(splits[k]["train"])})
        if (k, f, seed) in known:
            runs[(k, f)] = known[(k, f, seed)]
    if create and (added or splits != _read(_path(name, SPLITS_FILE), None)):
        _write(_path(name, RECORD_FILE), {**record, "subsets": record["subsets"] + added})
        _write(_path(name, SPLITS_FILE), splits)
    return runs


def training_case_counts(name: str) -> Dict[int, int]:
    """nnU-Net fold number -> its number of training cases, from splits_final.json."""
    return {i: len(entry["train"]) for i, entry in enumerate(_read(_path(name, SPLITS_FILE), []))}


def validation_cases(name: str, fold: int) -> Optional[List[str]]:
    """The validation cases splits_final.json gives fold `fold` (None without an entry)."""
    splits = _read(_path(name, SPLITS_FILE), [])
    return list(splits[fold]["val"]) if isinstance(fold, int) and fold < len(splits) else None
