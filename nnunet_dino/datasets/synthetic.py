"""Tiny synthetic nnU-Net raw datasets (2D PNG grey or RGB, 3D NIfTI) for tests and the offline demo.

Each case holds one bright disk (label 1) and one darker square (label 2) on a noisy background:
an easy task a frozen encoder with a small head can learn in a few iterations, with two classes so
multi-class handling is exercised.
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Optional, Sequence, Tuple

import numpy as np

from .folders import require_dataset_target, staged_dataset


def _shapes(rng: np.random.Generator, shape: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """One 2D slice: (image float32 in ~[0, 1], label uint8)."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    label = np.zeros((h, w), np.uint8)
    r = rng.uniform(0.18, 0.28) * min(h, w)
    cy, cx = rng.uniform(r, h - r), rng.uniform(r, w / 2)
    label[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    s = int(rng.uniform(0.25, 0.35) * min(h, w))
    y0, x0 = int(rng.uniform(0, h - s)), int(rng.uniform(w / 2, w - s))
    label[y0:y0 + s, x0:x0 + s] = 2
    image = np.where(label == 1, 0.9, np.where(label == 2, 0.55, 0.2)) + rng.normal(0, 0.07, (h, w))
    return image.astype(np.float32), label


@contextlib.contextmanager
def _dataset_folder(raw_root: str, dataset_id: int, name: str, overwrite: bool):
    """Yield (staging folder to write the dataset into, final folder); see datasets.folders."""
    replaced = require_dataset_target(raw_root, dataset_id, name, overwrite)
    final_name = f"Dataset{dataset_id:03d}_{name}"
    with staged_dataset(raw_root, final_name, replaced) as folder:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            os.makedirs(os.path.join(folder, sub))
        yield folder, os.path.join(raw_root, final_name)


def _write_dataset_json(folder: str, channel_names: dict, num_training: int, file_ending: str,
                        labels: Optional[dict] = None,
                        description: str = "nnunet-dino synthetic dataset (disks and squares)") -> None:
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump({"channel_names": channel_names, "labels": labels or {"background": 0, "disk": 1, "square": 2},
                   "numTraining": num_training, "file_ending": file_ending, "description": description}, f, indent=2)


def make_synthetic_2d(raw_root: str, dataset_id: int = 990, num_train: int = 10, num_test: int = 2,
                      shape: Tuple[int, int] = (64, 80), rgb: bool = False, seed: int = 0,
                      overwrite: bool = True) -> str:
    """PNG dataset; grey (channel 'gray', z-score) or RGB (one 3-channel PNG, 'rgb_to_0_1')."""
    from skimage.io import imsave
    with _dataset_folder(raw_root, dataset_id, "SynthRGB2D" if rgb else "Synth2D", overwrite) as (folder, final):
        rng = np.random.default_rng(seed)
        for i in range(num_train + num_test):
            image, label = _shapes(rng, shape)
            pixels = (np.clip(image, 0, 1) * 255).astype(np.uint8)
            if rgb:  # colour the shapes differently per channel so all three channels carry signal
                pixels = np.stack([pixels, (pixels * 0.8).astype(np.uint8), 255 - pixels], axis=-1)
            split = "Tr" if i < num_train else "Ts"
            case = f"case_{i:03d}"
            imsave(os.path.join(folder, f"images{split}", f"{case}_0000.png"), pixels, check_contrast=False)
            imsave(os.path.join(folder, f"labels{split}", f"{case}.png"), label, check_contrast=False)
        channels = {str(c): "rgb_to_0_1" for c in range(3)} if rgb else {"0": "gray"}
        _write_dataset_json(folder, channels, num_train, ".png")
    return final


def write_volume_case(folder: str, split: str, case: str, channels: Sequence[np.ndarray], label: np.ndarray,
                      spacing: Sequence[float], origin: Optional[Sequence[float]] = None,
                      direction: Optional[Sequence[float]] = None) -> None:
    """One NIfTI case, arrays (z, y, x), `spacing` (z, y, x); `origin` and `direction` in ITK's (x, y, z)."""
    import SimpleITK as sitk
    for c, array in enumerate([*channels, label]):
        itk = sitk.GetImageFromArray(array if c == len(channels) else array.astype(np.float32))
        itk.SetSpacing(tuple(float(s) for s in spacing[::-1]))
        if origin is not None:
            itk.SetOrigin(tuple(float(o) for o in origin))
        if direction is not None:
            itk.SetDirection(tuple(float(d) for d in direction))
        name = f"labels{split}/{case}.nii.gz" if c == len(channels) else f"images{split}/{case}_{c:04d}.nii.gz"
        sitk.WriteImage(itk, os.path.join(folder, name))


def make_synthetic_3d(raw_root: str, dataset_id: int = 991, num_train: int = 6, num_test: int = 2,
                      shape: Tuple[int, int, int] = (6, 48, 64), spacing=(3.0, 1.0, 1.0), seed: int = 0,
                      num_channels: int = 1, overwrite: bool = True) -> str:
    """NIfTI volumes (z, y, x) of stacked 2D slices; segmented by nnU-Net's `2d` configuration."""
    with _dataset_folder(raw_root, dataset_id, "Synth3D", overwrite) as (folder, final):
        rng = np.random.default_rng(seed)
        for i in range(num_train + num_test):
            slices = [_shapes(rng, shape[1:]) for _ in range(shape[0])]
            image = np.stack([s[0] for s in slices]) * 1000.0
            label = np.stack([s[1] for s in slices])
            write_volume_case(folder, "Tr" if i < num_train else "Ts", f"case_{i:03d}",
                              [image * (1 + 0.5 * c) for c in range(num_channels)], label, spacing)
        _write_dataset_json(folder, {str(c): f"MR{c}" for c in range(num_channels)}, num_train, ".nii.gz")
    return final
