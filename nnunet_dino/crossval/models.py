"""Model specifications: which trained nnU-Net model a row of `crossval` / `report` is.

A model is `TRAINER[:CONFIGURATION[:PLANS]]`, e.g. `nnUNetTrainer:3d_fullres:nnUNetResEncUNetMPlans`,
`nnUNetTrainerUDFA:2d` or `nnUNetTrainerSegDINO`; omitted parts take the command's `-c` / `-p`
(default `2d`, `nnUNetPlans`). Any configuration name the plans hold is accepted (`2d`, `3d_fullres`,
`3d_lowres`, a custom one). The model's folder is nnU-Net's
`<nnUNet_results>/<Dataset>/<TRAINER>__<PLANS>__<CONFIGURATION>`.

A configuration `STAGE+START` (the `2.5d+2d` of `nnunet-dino plan --preset 2.5d`) is a chain: each fold
starts from the same trainer's trained fold in configuration START (`ModelSpec.start`), so
`nnUNetTrainerUDFA:2.5d+2d` is a 2.5D model fine-tuned from `nnUNetTrainerUDFA:2d`, a row of its own.

A model's *label* (its row name in reports, logs and files) leaves out what equals nnU-Net's defaults
of this plugin (`2d`, `nnUNetPlans`), so `nnUNetTrainerSegDINO` and `nnUNetTrainerSegDINO:2d` are the
same model and the same row.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional, Sequence

from ..errors import OptionError
from ..plans.slab import start_configuration

DEFAULT_CONFIGURATION = "2d"
DEFAULT_PLANS = "nnUNetPlans"
SEPARATOR = ":"
NNUNET_OWN_TRAINER = re.compile(r"nnUNetTrainer(_\w+)?")  # nnUNetTrainer and its nnUNetTrainer_<variant> twins


@dataclass(frozen=True)
class ModelSpec:
    trainer: str
    configuration: str = DEFAULT_CONFIGURATION
    plans: str = DEFAULT_PLANS

    @property
    def label(self) -> str:
        if self.plans != DEFAULT_PLANS:
            return SEPARATOR.join((self.trainer, self.configuration, self.plans))
        if self.configuration != DEFAULT_CONFIGURATION:
            return SEPARATOR.join((self.trainer, self.configuration))
        return self.trainer

    @property
    def file_stem(self) -> str:
        """The label as a file-name part (':' is not portable)."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.label.replace(SEPARATOR, "__"))

    @property
    def start(self) -> Optional["ModelSpec"]:
        """The model whose trained folds this one starts from (a chained configuration), else None."""
        start = start_configuration(self.configuration)
        return ModelSpec(self.trainer, start, self.plans) if start else None

    def to_json(self) -> dict:
        return {"trainer": self.trainer, "configuration": self.configuration, "plans": self.plans}


def parse_model(text: str, configuration: str = DEFAULT_CONFIGURATION, plans: str = DEFAULT_PLANS) -> ModelSpec:
    """`TRAINER[:CONFIGURATION[:PLANS]]`; omitted parts are `configuration` and `plans`."""
    if isinstance(text, ModelSpec):
        return text
    parts = text.split(SEPARATOR)
    if len(parts) > 3 or not all(parts) or any(not re.fullmatch(r"[A-Za-z0-9_.\-+]+", p) for p in parts):
        raise OptionError(f"{text!r} is not a model: give TRAINER[:CONFIGURATION[:PLANS]], e.g. "
                          f"nnUNetTrainer:3d_fullres:nnUNetResEncUNetMPlans or nnUNetTrainerUDFA:2d")
    if any("__" in p for p in parts[1:]):
        raise OptionError(f"{text!r}: a configuration or plans name must not contain '__' (nnU-Net splits its "
                          f"model folder names <trainer>__<plans>__<configuration> there)")
    return ModelSpec(parts[0], *(parts[1:] + [configuration, plans][len(parts) - 1:]))


def parse_models(texts: Sequence, configuration: str = DEFAULT_CONFIGURATION,
                 plans: str = DEFAULT_PLANS) -> List[ModelSpec]:
    """Every -tr entry as a ModelSpec; the same model named twice is refused."""
    models = [parse_model(t, configuration, plans) for t in texts]
    twice = sorted({m.label for m in models if models.count(m) > 1})
    if twice:
        raise OptionError(f"model(s) named twice: {', '.join(twice)} (TRAINER[:CONFIGURATION[:PLANS]], omitted "
                          f"parts are -c {configuration} and -p {plans})")
    return models


def _trainer_of(label: str) -> str:
    return label.split(SEPARATOR)[0]


def choose_reference(labels: Sequence[str], requested: Optional[str] = None, configuration: str = DEFAULT_CONFIGURATION,
                     plans: str = DEFAULT_PLANS) -> str:
    """The label of the reference model: `requested` (a label, a full specification, or a trainer name that
    only one model has), else the first of nnU-Net's own trainers (nnUNetTrainer or an nnUNetTrainer_<variant>
    twin such as nnUNetTrainer_250epochs), else the first model."""
    labels = list(labels)
    if requested:
        if requested in labels:
            return requested
        try:
            label = parse_model(requested, configuration, plans).label
        except OptionError:
            label = None
        by_trainer = [lab for lab in labels if _trainer_of(lab) == requested]
        if label in labels:
            return label
        if len(by_trainer) == 1:
            return by_trainer[0]
        why = f"; {requested} is the trainer of {by_trainer}: give the full TRAINER:CONFIGURATION[:PLANS]" \
            if by_trainer else ""
        raise OptionError(f"--reference {requested!r} is not among the models {labels}{why}")
    own = [lab for lab in labels if NNUNET_OWN_TRAINER.fullmatch(_trainer_of(lab))]
    return own[0] if own else labels[0]
