"""Texture slices for measuring what self-supervised pretraining teaches an encoder.

Each slice holds two regions (a disk or a square each) filled with stripes of random phase, horizontal
(label 1) or vertical (label 2), on a flat noisy background. Every region has the background's mean
intensity and a stripe of either phase is the negative of the other: a linear map of a patch's pixels
(what a random ViT with timm's 1e-5 layer scales is, nearly) cannot tell the classes apart, features
that respond to orientation can.
"""
from __future__ import annotations

import os
from typing import List, Tuple

import numpy as np

PERIOD = 8  # pixels per stripe cycle


def texture_slice(rng: np.random.Generator, size: int = 128) -> Tuple[np.ndarray, np.ndarray]:
    """(image float32 around 0.5, label uint8 0 / 1 horizontal / 2 vertical), both (size, size)."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    image = 0.5 + rng.normal(0, 0.05, (size, size))
    label = np.zeros((size, size), np.uint8)
    for half in range(2):  # one region in each half, so they do not overlap
        r = rng.uniform(0.14, 0.23) * size
        cy = rng.uniform(r, size - r)
        cx = rng.uniform(r + half * (size / 2 - r), size / 2 + half * (size / 2 - r))
        if rng.random() < 0.5:
            region = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        else:
            region = (abs(yy - cy) <= 0.85 * r) & (abs(xx - cx) <= 0.85 * r)
        vertical = rng.random() < 0.5
        along = xx if vertical else yy
        image[region] = 0.5 + 0.3 * np.cos(2 * np.pi * along[region] / PERIOD + rng.uniform(0, 2 * np.pi))
        label[region] = 2 if vertical else 1
    return image.astype(np.float32), label


def texture_slices(count: int, seed: int, size: int = 128) -> List[Tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [texture_slice(rng, size) for _ in range(count)]


def write_texture_folder(folder: str, count: int, seed: int, size: int = 128) -> List[str]:
    """`count` unlabelled 8-bit PNG slices in `folder` (for `nnunet-dino pretrain --folder`)."""
    from skimage.io import imsave
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, (image, _) in enumerate(texture_slices(count, seed, size)):
        paths.append(os.path.join(folder, f"texture_{i:03d}.png"))
        imsave(paths[-1], (image * 255).clip(0, 255).astype(np.uint8), check_contrast=False)
    return paths
