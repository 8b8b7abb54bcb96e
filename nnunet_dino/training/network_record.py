"""The network's own arguments, recorded in the plans.

A trainer's `network_kwargs` (U-DFA's SPA, its fusion modules, SegDINO's head, ...) are class
attributes, which a release or a user's subclass may change. So the arguments a model is trained with
go into its configuration (`NETWORK_RECORD_KEY`) before nnU-Net writes anything, and
`build_network_architecture`, which the predictor calls in a fresh process, builds from that record;
plans without it (nnU-Net's preprocessed plans, the benchmark's, models trained before the record
existed) build from the class attributes.

All folds of a model folder share one `plans.json`, and the predictor builds one network for all of
them. So a fold trained into a folder whose `plans.json` already exists takes that file's arguments:
existing folds keep predicting, and `--c` resumes the network its checkpoint holds.
"""
from __future__ import annotations

import json
import os
from typing import Optional, Tuple

NETWORK_RECORD_KEY = "nnunet_dino_network"


def _as_json(kwargs: dict) -> dict:
    """The arguments as they read back from plans.json (tuples become lists)."""
    try:
        return json.loads(json.dumps(kwargs))
    except TypeError as error:
        raise TypeError(f"network_kwargs must be JSON values to be recorded in the plans: {error}") from None


def network_kwargs_for(trainer_cls, configuration: dict) -> dict:
    """The arguments `trainer_cls` builds its network with from this configuration (a plans dict's entry)."""
    return dict(configuration.get(NETWORK_RECORD_KEY, trainer_cls.network_kwargs))


def _model_folder_configuration(plans_file: str, configuration: str) -> Optional[dict]:
    try:
        with open(plans_file) as f:
            return json.load(f)["configurations"][configuration]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no model yet (or an unreadable file, which nnU-Net rewrites)


def network_record(trainer_cls, model_folder: str, configuration: str) -> Tuple[dict, Optional[str]]:
    """(the arguments to record for a fold trained into `model_folder`, a log line when they are the
    folder's rather than the class's)."""
    own = _as_json(trainer_cls.network_kwargs)
    existing = _model_folder_configuration(os.path.join(model_folder, "plans.json"), configuration)
    if existing is None:
        return own, None
    kept = _as_json(network_kwargs_for(trainer_cls, existing))
    if kept == own:
        return own, None
    return kept, (f"nnunet-dino: this model folder's plans.json builds the network with {kept}, so this fold "
                  f"does too (every fold of a folder predicts with one network), not with the class's {own}; "
                  f"train into another nnUNet_results folder for the class's network")
