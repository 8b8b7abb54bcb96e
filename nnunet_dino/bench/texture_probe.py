"""`python -m nnunet_dino.bench.texture_probe WORKDIR [--seeds 0 1 2 3 4] [--set FIELD=VALUE ...]`: what
`nnunet-dino pretrain` teaches a frozen encoder, over several pretraining seeds.

A tiny DINOv3-style ViT (dim 64, 4 blocks, patch 16) is pretrained from RANDOM weights on unlabelled
texture slices (`datasets/textures.py`), with the recipe below, once per seed; a linear probe of its
frozen patch features (`pretrain/probe.py`) is scored against the same probe on the random weights, on
labelled slices that pretraining never saw. `tests/test_pretrain_effect.py` runs this configuration
(seed 0) and asserts its margin; this command measures the spread of the effect across seeds, which
is what that margin must sit below. Prints one row per seed on stderr, then JSON on stdout.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from ..backbones import get_backbone_spec
from ..backbones.registry import register_backbone
from ..datasets.textures import texture_slices, write_texture_folder
from ..pretrain.data import select_cases
from ..pretrain.loop import PretrainJob, pretrain
from ..pretrain.probe import probe_weights
from ..pretrain.recipe import Recipe
from .gpu_check import TINY_BACKBONE
from .run import machine_info

#: iBOT and KoLeo only: from random weights the class-token DINO loss collapses to uniform outputs
#: (no local crops: they feed the DINO loss alone)
TEXTURE_RECIPE = dict(steps=1000, batch_size=16, global_size=96, local_crops=0, prototypes=256,
                      head_hidden=128, head_bottleneck=64, lr=2e-3, mask_probability=1.0, dino_weight=0.0)
UNLABELLED_SLICES = 64
PROBE_TRAIN_SLICES, PROBE_TEST_SLICES = 384, 96  # labelled; a probe fitted on fewer overfits the features
CLASSES = 3             # background, horizontal stripes, vertical stripes


def texture_backbone():
    """The tiny DINOv3-style ViT spec (registered, so weights files can name it)."""
    spec = get_backbone_spec("dinov3_vits16").variant("tiny_dinov3_vits16", **TINY_BACKBONE)
    return register_backbone(spec)


def _stack(slices):
    images = torch.from_numpy(np.stack([(image - 0.5) / 0.2 for image, _ in slices]))[:, None]
    labels = torch.from_numpy(np.stack([label for _, label in slices]))
    return images, labels


def probe_slices():
    """(train, test): labelled slices from other seeds than the unlabelled pretraining slices."""
    return _stack(texture_slices(PROBE_TRAIN_SLICES, seed=1)), _stack(texture_slices(PROBE_TEST_SLICES, seed=2))


def pretrain_from_random(spec, cases, groups, recipe: Recipe, out: str, progress: bool = False) -> str:
    """Pretrain `spec` from random weights on `cases` (pretrain.data.select_cases) into `out`."""
    recipe = dataclasses.replace(recipe, save_every=recipe.steps)
    pretrain(PretrainJob(spec, "random", cases, groups, recipe, out, device="cpu", overwrite=True, restart=True,
                         progress=progress))
    return out


def pretrain_on_textures(spec, work: str, seed: int, recipe: Recipe = Recipe(**TEXTURE_RECIPE),
                         progress: bool = False) -> str:
    """Pretrain `spec` from random weights on the unlabelled texture slices with `recipe` (its seed
    replaced by `seed`); returns the weights file."""
    folder = os.path.join(work, "unlabelled")
    if not os.path.isdir(folder):
        write_texture_folder(folder, UNLABELLED_SLICES, seed=0)
    cases, groups = select_cases(folders=[folder])
    return pretrain_from_random(spec, cases, groups, dataclasses.replace(recipe, seed=seed),
                                os.path.join(work, f"textures_seed{seed}.pth"), progress)


def probe_dice(spec, setting: str, train, test) -> float:
    """Mean foreground Dice of the linear probe on `spec` with weights `setting` ('random' or a file)."""
    return round(float(np.mean(probe_weights(spec, setting, train, test, CLASSES))), 4)


def probe_effect(spec, weights: str, train, test, random_dice: Optional[float] = None) -> Dict[str, float]:
    """The probe's Dice on the random and on the pretrained weights, and their difference
    (`random_dice`: the random weights' score where it is known already)."""
    if random_dice is None:
        random_dice = probe_dice(spec, "random", train, test)
    pretrained_dice = probe_dice(spec, weights, train, test)
    return {"random": random_dice, "pretrained": pretrained_dice, "effect": round(pretrained_dice - random_dice, 4)}


def recipe_with(changes: Sequence[str]) -> Recipe:
    """The test's recipe with FIELD=VALUE changes (each value parsed as the field's type)."""
    recipe = Recipe(**TEXTURE_RECIPE)
    for change in changes:
        field, _, value = change.partition("=")
        current = getattr(recipe, field)
        parsed = tuple(float(v) for v in value.split(",")) if isinstance(current, tuple) else type(current)(value)
        recipe = dataclasses.replace(recipe, **{field: parsed})
    return recipe


def spread(work: str, seeds: Sequence[int], recipe: Recipe) -> dict:
    spec, (train, test) = texture_backbone(), probe_slices()
    random_dice = probe_dice(spec, "random", train, test)  # the same for every seed
    rows = []
    for seed in seeds:
        wall = time.time()
        row = {"seed": seed, **probe_effect(spec, pretrain_on_textures(spec, work, seed, recipe), train, test,
                                                 random_dice)}
        row["wall_s"] = round(time.time() - wall, 1)
        print(f"seed {seed}: random {row['random']:.4f}  pretrained {row['pretrained']:.4f}  "
              f"effect {row['effect']:+.4f}  ({row['wall_s']:.0f} s)", file=sys.stderr, flush=True)
        rows.append(row)
    effects = [r["effect"] for r in rows]
    return {"backbone": "tiny DINOv3-style ViT (dim 64, 4 blocks, patch 16), pretrained from RANDOM weights",
            "recipe": recipe.record(), "machine": machine_info(torch.device("cpu")), "rows": rows,
            "effect": {"mean": round(float(np.mean(effects)), 4), "min": min(effects), "max": max(effects)}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                        help="recipe fields to change from the test's recipe, e.g. steps=2000 mask_ratio=0.3,0.6")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.work, exist_ok=True)
    print(json.dumps(spread(args.work, args.seeds, recipe_with(args.set)), indent=1))
