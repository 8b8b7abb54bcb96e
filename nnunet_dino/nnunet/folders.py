"""nnU-Net's folders as nnU-Net itself names them: dataset id <-> name, plans files, preprocessed and
results folders, and the -p / -c options a suggested command needs.

The one reader of nnU-Net's folder variables (`nnUNet_raw`, `nnUNet_preprocessed`, `nnUNet_results`) in the
plugin: `raw_root`, `preprocessed_root`, `results_root`. An unset (or blank) variable is an error that says
so, never an empty string that would quietly become a path relative to the working directory.
(The plugin's own variables, `nnUNet_dino_*`, are in nnunet_dino/environment.py.)"""
from __future__ import annotations

import contextlib
import io
import json
import os
from typing import Dict, Optional, Sequence

from ..errors import MissingInputError, OptionError

FOLDER_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


def nnunet_environment(workdir: str, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment with nnU-Net's three folders under `workdir`, sized for a small CPU machine."""
    env = dict(os.environ if base is None else base)
    for var, sub in zip(FOLDER_VARIABLES, ("raw", "preprocessed", "results")):
        env[var] = os.path.join(workdir, sub)
        os.makedirs(env[var], exist_ok=True)
    env.setdefault("nnUNet_def_n_proc", "1")   # validation export / metric pools
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _root(var: str, alternative: str = "") -> str:
    value = os.environ.get(var, "").strip()
    if not value:
        raise MissingInputError(f"{var} is not set: export nnUNet_raw, nnUNet_preprocessed and nnUNet_results "
                                 f"(nnU-Net's folders) first{alternative}")
    return value


def raw_root(override: Optional[str] = None, alternative: str = "") -> str:
    """$nnUNet_raw, or `override` (e.g. a --raw option) when given; `alternative` ends the error message
    (e.g. ' or pass --raw DIR')."""
    return override or _root("nnUNet_raw", alternative)


def preprocessed_root(required: bool = True) -> Optional[str]:
    """$nnUNet_preprocessed; unset is an error, or None where it is not `required`."""
    if not required:
        return os.environ.get("nnUNet_preprocessed", "").strip() or None
    return _root("nnUNet_preprocessed")


def results_root() -> str:
    return _root("nnUNet_results")


def dataset_name(dataset) -> str:
    """nnU-Net's dataset folder name (e.g. 'Dataset042_Liver') for an id or a name."""
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    for var in FOLDER_VARIABLES[1:]:
        _root(var)
    try:
        return maybe_convert_to_dataset_name(dataset)
    except (RuntimeError, ValueError) as error:
        raise MissingInputError(str(error).strip()) from None


def dataset_id(name: str) -> str:
    """'Dataset042_Liver' -> '42', as users type it."""
    from nnunetv2.utilities.dataset_name_id_conversion import convert_dataset_name_to_id
    return str(convert_dataset_name_to_id(name))


def preprocessed_folder(name: str) -> str:
    return os.path.join(_root("nnUNet_preprocessed"), name)


def gt_folder(name: str) -> str:
    """The reference segmentations nnU-Net's preprocessing copies for validation."""
    folder = os.path.join(preprocessed_folder(name), "gt_segmentations")
    if not os.path.isdir(folder):
        raise MissingInputError(f"no reference segmentations in {folder}: run nnUNetv2_plan_and_preprocess "
                                 f"-d {dataset_id(name)} (it copies them there)")
    return folder


def plans_file(name: str, plans: str) -> str:
    return os.path.join(preprocessed_folder(name), plans + ".json")


def model_folder(name: str, trainer: str, plans: str = "nnUNetPlans", configuration: str = "2d",
                 results: Optional[str] = None) -> str:
    """<nnUNet_results>/<Dataset>/<Trainer>__<Plans>__<configuration> (nnU-Net's get_output_folder);
    `results` overrides $nnUNet_results (e.g. the folders of a subprocess environment)."""
    return os.path.join(results or _root("nnUNet_results"), name, f"{trainer}__{plans}__{configuration}")


def fold_folder(name: str, trainer: str, plans: str, configuration: str, fold: int) -> str:
    return os.path.join(model_folder(name, trainer, plans, configuration), f"fold_{fold}")


def plans_flags(plans: str, configuration: str) -> str:
    """The -p / -c options a suggested command needs (none for nnU-Net's defaults)."""
    return (f" -p {plans}" if plans != "nnUNetPlans" else "") + (f" -c {configuration}" if configuration != "2d" else "")


def require_plans(name: str, plans: str, configuration: str) -> dict:
    """The plans of a dataset, which must hold `configuration`."""
    path = plans_file(name, plans)
    if not os.path.isfile(path):
        raise MissingInputError(f"no plans {path}: run `nnUNetv2_plan_and_preprocess -d {dataset_id(name)}` "
                                 f"(or pass the plans you made with -p)")
    with open(path) as f:
        content = json.load(f)
    if configuration not in content.get("configurations", {}):
        raise OptionError(f"configuration {configuration!r} is not in {path}; it has "
                          f"{sorted(content.get('configurations', {}))}")
    return content


def require_trainers(trainers: Sequence[str]) -> None:
    """Every trainer must be findable by nnU-Net (else every fold would fail after minutes of startup)."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    missing = []
    for trainer in trainers:
        with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net prints its whole search
            try:
                recursive_find_trainer_class_by_name(trainer)
            except RuntimeError:
                missing.append(trainer)
    if missing:
        raise OptionError(f"nnU-Net cannot find trainer(s) {missing}: check the spelling (class names are "
                          f"case-sensitive) and, for trainers outside nnunetv2, nnUNet_extTrainer "
                          f"(now {os.environ.get('nnUNet_extTrainer', 'unset')!r})")
