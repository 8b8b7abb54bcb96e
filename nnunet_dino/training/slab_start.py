"""A slab model that starts where the 2d model ends: configuration `2.5d+2d` (plans/slab.py).

The trainer loads its own trained `2d` fold (same trainer, plans and fold: `<results>/<Dataset>/
<TRAINER>__<PLANS>__2d/fold_F/checkpoint_final.pth`) into the slab network after the backbone weights.
Every tensor of the 2d network has its twin in the slab network; only the cross-slice fusions are new,
and they are zero, and the slab keeps each slice's own channels (training/slab.py), so at step 0 the
slab model predicts every slice exactly as the 2d model does. Training then learns what the neighbours
add.

nnU-Net's `-pretrained_weights` cannot do this: `load_pretrained_weights` requires every key of the
network in the file, and a slim 2d checkpoint has neither the frozen backbone (a record instead) nor
the fusions. Loading through the network's own `load_state_dict` restores and verifies the backbone.

The fine-tuning schedule (`start_parameter_groups`, `start_warmup_epochs`):
- the fusions, new and zero, learn at the trainer's full rate: a short stage must move them;
- everything the 2d model trained learns at `slab_start_lr_scale` (0.1) of it. It sits where the poly
  schedule left it, at a rate near zero; Adam's first steps move every weight by about the rate whatever
  its gradient, so the full rate would first undo the 2d model and spend the stage recovering it;
- a linear warm-up over the first `slab_start_warmup_fraction` (5 %) of the epochs, at least one, while
  Adam's moment estimates settle, so the stage leaves the 2d model's predictions gradually; then
  nnU-Net's poly decay.
"""
from __future__ import annotations

import math
import os
from typing import List

import torch
from torch import nn

from ..errors import MissingInputError, UserError

#: the checkpoint of the start configuration's fold that a chained stage loads
START_CHECKPOINT = "checkpoint_final.pth"


class IncompatibleStartError(UserError, RuntimeError):
    """The 2d fold's weights do not fit the slab network (another network record or adaptation)."""


def start_checkpoint(output_folder_base: str, trainer_name: str, plans_name: str, start: str, fold) -> str:
    """The start fold's final checkpoint beside this model folder; one clear line if it is not there."""
    folder = os.path.join(os.path.dirname(output_folder_base), f"{trainer_name}__{plans_name}__{start}", f"fold_{fold}")
    path = os.path.join(folder, START_CHECKPOINT)
    if not os.path.isfile(path):
        dataset = os.path.basename(os.path.dirname(output_folder_base))
        raise MissingInputError(f"{os.path.basename(output_folder_base)} fold {fold} starts from the trained {start} "
                                f"fold, but {path} does not exist: train it first, `nnUNetv2_train {dataset} {start} "
                                f"{fold} -tr {trainer_name} -p {plans_name}` (or `nnunet-dino crossval` with "
                                f"{trainer_name}:{os.path.basename(output_folder_base).rsplit('__', 1)[-1]}, which "
                                f"runs both)")
    return path


def load_start(network: nn.Module, path: str) -> str:
    """Load a 2d checkpoint (nnU-Net's format, slim or bundled) into the slab network: every tensor but the
    fusions, which stay as they are (zero). Returns a log line."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)  # nnU-Net's own checkpoint format
    weights = checkpoint["network_weights"]
    try:
        result = network.load_state_dict(weights, strict=False)
    except RuntimeError as error:  # shapes differ
        raise IncompatibleStartError(f"the 2d checkpoint {path} does not fit this slab network: "
                                     f"{str(error).splitlines()[0]}") from None
    missing = [k for k in result.missing_keys if not k.startswith("slab.fusions.")]
    if missing or result.unexpected_keys:
        raise IncompatibleStartError(
            f"the 2d checkpoint {path} does not fit this slab network (trained with another network or adaptation?): "
            f"missing {missing[:3]}, unexpected {list(result.unexpected_keys)[:3]}")
    return (f"nnunet-dino: starts from the 2d model {path} (epoch {checkpoint.get('current_epoch')}); its "
            f"cross-slice fusions start at zero, so step 0 predicts every slice as the 2d model does")


def start_parameter_groups(groups: List[dict], network: nn.Module, lr_scale: float) -> List[dict]:
    """Each optimiser group split in two: the slab fusions at the group's rate, the rest (what the 2d model
    trained) at `lr_scale` of it (an `lr_scale` the group has already, an adapted encoder's, multiplies)."""
    fusions = {id(p) for p in network.slab.fusions.parameters()}
    out = []
    for group in groups:
        scale = group.get("lr_scale", 1.0)
        new = [p for p in group["params"] if id(p) in fusions]
        trained = [p for p in group["params"] if id(p) not in fusions]
        out += [dict(group, params=params, lr_scale=s) for params, s in ((new, scale), (trained, scale * lr_scale))
                if params]
    return out


def start_warmup_epochs(num_epochs: int, fraction: float, warmup_epochs: int = 0) -> int:
    """Epochs of linear warm-up of a chained stage: `fraction` of its epochs, at least one (and at least the
    trainer's own warm-up)."""
    return max(warmup_epochs, 1, math.ceil(fraction * num_epochs))
