"""Writing a dataset into nnUNet_raw, the one way every dataset writer here does it: the target is
checked first (nnU-Net allows one name per dataset id, across its three folders), the dataset is built
in a hidden staging folder beside the target, and only a finished folder is renamed into place --
without a moment where neither the old nor the new one exists."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from typing import Iterator, List, Sequence, Tuple

from ..errors import ExistingOutputError, OptionError


@dataclass(frozen=True)
class TargetProblem:
    kind: str            # what is wrong
    files: List[str]     # the folders concerned
    fix: str             # what to do about it


def dataset_target(raw: str, dataset_id: int, name: str, overwrite: bool,
                   replace_other_names: bool = False) -> Tuple[List[TargetProblem], List[str]]:
    """(problems, raw folders the new dataset replaces) for writing `Dataset{id:03d}_{name}` into `raw`.
    `overwrite` replaces a dataset of that id and name; with `replace_other_names` also one of that id
    under another name (nnU-Net allows one name per id). A bad id or name raises OptionError at once."""
    if not 1 <= dataset_id <= 999:
        raise OptionError(f"dataset id {dataset_id}: nnU-Net ids are 1..999 (three digits)")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise OptionError(f"dataset name {name!r}: use letters, digits, '_' and '-' (e.g. LiverCT)")
    prefix, problems = f"Dataset{dataset_id:03d}_", []
    existing = sorted(os.path.join(raw, d) for d in os.listdir(raw)
                      if d.startswith(prefix) and os.path.isdir(os.path.join(raw, d))) if os.path.isdir(raw) else []
    others = [p for p in existing if os.path.basename(p) != prefix + name]
    if others and not replace_other_names:
        problems.append(TargetProblem(f"dataset id {dataset_id} is already used by another dataset in nnUNet_raw",
                                      others, "choose another dataset id, or remove that folder yourself"))
    elif existing and not overwrite:
        problems.append(TargetProblem(f"dataset id {dataset_id} is already used in nnUNet_raw", existing,
                                      "choose another dataset id, or pass --overwrite to replace it"))
    for var in ("nnUNet_preprocessed", "nnUNet_results"):
        root = os.environ.get(var)
        if root and os.path.isdir(root):
            other = sorted(os.path.join(root, d) for d in os.listdir(root)
                           if d.startswith(prefix) and d != prefix + name)
            if other:
                problems.append(TargetProblem(f"dataset id {dataset_id} has another name in {var}", other,
                                              "nnU-Net refuses two names for one id: delete or rename these, "
                                              "or choose another dataset id"))
    return problems, existing


def require_dataset_target(raw: str, dataset_id: int, name: str, overwrite: bool) -> List[str]:
    """The raw folders the new dataset replaces (only one of this id and name); ExistingOutputError
    naming the first problem."""
    problems, existing = dataset_target(raw, dataset_id, name, overwrite)
    if problems:
        first = problems[0]
        raise ExistingOutputError(f"{first.kind}: {', '.join(first.files)}; {first.fix}")
    return existing


def _remove_stale_staging(raw: str, final_name: str, purpose: str) -> None:
    """Staging folders of runs that were killed (their process is gone)."""
    for entry in os.listdir(raw):
        match = re.fullmatch(rf"\.{re.escape(final_name)}\.{re.escape(purpose)}-(\d+)", entry)
        if not match:
            continue
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(raw, entry), ignore_errors=True)
        except PermissionError:  # alive, someone else's
            pass


@contextlib.contextmanager
def staged_dataset(raw: str, final_name: str, replaced: Sequence[str] = (), purpose: str = "building") -> Iterator[str]:
    """Yield an empty hidden folder `raw/.{final_name}.{purpose}-PID` to build the dataset in; on success it
    replaces `raw/final_name` (and `replaced`), on any failure or interruption it is removed."""
    os.makedirs(raw, exist_ok=True)
    _remove_stale_staging(raw, final_name, purpose)
    staging = os.path.join(raw, f".{final_name}.{purpose}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    try:
        yield staging
        move_into_place(staging, os.path.join(raw, final_name), replaced)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def move_into_place(built: str, final: str, replaced: Sequence[str] = ()) -> None:
    """Rename the finished folder `built` to `final`. Folders being replaced (`final` itself, and any
    other folder of the same dataset id in `replaced`) are first renamed aside, then deleted once the
    new folder is in place; if the final rename fails they are put back."""
    aside = []
    for old in dict.fromkeys([*replaced, *([final] if os.path.exists(final) else [])]):
        hidden = os.path.join(os.path.dirname(old), f".{os.path.basename(old)}.replaced-{uuid.uuid4().hex[:8]}")
        os.rename(old, hidden)
        aside.append((old, hidden))
    try:
        os.rename(built, final)
    except BaseException:
        for old, hidden in aside:
            os.rename(hidden, old)
        raise
    for _, hidden in aside:
        shutil.rmtree(hidden, ignore_errors=True)
