"""`python -m nnunet_dino.bench.pretrain_probe WORKDIR [--steps N]`: what `nnunet-dino pretrain` teaches
a frozen encoder on real anatomy, measured with a linear probe.

Builds the Colin27/AAL dataset (1 mm, grey-matter structures; needs the `make realdata` files) in
WORKDIR, pretrains a tiny DINOv3-style ViT (dim 64, 4 blocks, patch 16: CPU-sized) from RANDOM weights
on the training slabs' slices (labels unused), then trains the same linear probe (`pretrain/probe.py`,
all four blocks' patch features of 2x-upsampled slices) for the random and the pretrained encoder on
the training slices and scores it on the held-out test slabs (Dice per structure at the patch grid).
Prints JSON: the Dice of both, the pretraining CPU and wall time, the recipe.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..datasets.colin27 import make_colin27_dataset
from ..nnunet import nnunet_environment
from ..onboarding.imageio import read_array
from ..pretrain.data import select_cases
from ..pretrain.probe import probe_weights
from ..pretrain.recipe import Recipe
from .run import machine_info
from .texture_probe import TEXTURE_RECIPE, pretrain_from_random, texture_backbone

#: the texture benchmark's recipe, with larger global crops for the larger slices
RECIPE = {**TEXTURE_RECIPE, "global_size": 112}


def _slices(folder: str, split: str):
    """Every slice of the split's cases, z-scored per case: (N, 1, 2H', 2W') images, (N, 2H', 2W') labels."""
    images, labels = [], []
    image_folder = os.path.join(folder, f"images{split}")
    for name in sorted(os.listdir(image_folder)):
        volume = read_array(os.path.join(image_folder, name))[0].astype(np.float32)
        label = read_array(os.path.join(folder, f"labels{split}", name.replace("_0000", "")), True)[0]
        images += list((volume - volume.mean()) / volume.std())
        labels += list(label)
    x = torch.from_numpy(np.stack(images))[:, None]
    y = torch.from_numpy(np.stack(labels).astype(np.int64))[:, None].float()
    size = [2 * s // 16 * 16 for s in x.shape[-2:]]
    return F.interpolate(x, size=size, mode="bilinear"), F.interpolate(y, size=size, mode="nearest")[:, 0].long()


def run(work: str, steps: int) -> dict:
    env = nnunet_environment(work)
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")})
    spec = texture_backbone()
    dataset = make_colin27_dataset(env["nnUNet_raw"], 904, grouping="grey", overwrite=True)
    out = os.path.join(work, f"colin27_tiny_{steps}.pth")
    cases, groups = select_cases(datasets=["904"], source="raw")
    cpu, wall = time.process_time(), time.time()
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON alone
        pretrain_from_random(spec, cases, groups, Recipe(**{**RECIPE, "steps": steps}), out)
    cpu, wall = time.process_time() - cpu, time.time() - wall
    train, test = _slices(dataset.folder, "Tr"), _slices(dataset.folder, "Ts")
    classes = len(dataset.labels)
    result = {"backbone": "tiny DINOv3-style ViT (dim 64, 4 blocks, patch 16), pretrained from RANDOM weights",
              "steps": steps, "recipe": RECIPE, "machine": machine_info(torch.device("cpu")),
              "pretrain_cpu_s": round(cpu, 1), "pretrain_wall_s": round(wall, 1),
              "train_slices": len(train[0]), "test_slices": len(test[0]),
              "structures": [n for n, v in sorted(dataset.labels.items(), key=lambda kv: kv[1]) if v]}
    for setting, key in (("random", "random"), (out, "pretrained")):
        dice = probe_weights(spec, setting, train, test, classes)
        result[key] = {"dice": [round(d, 4) for d in dice], "mean": round(float(np.mean(dice)), 4)}
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work")
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(json.dumps(run(args.work, args.steps), indent=1))
