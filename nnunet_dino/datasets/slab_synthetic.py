"""A synthetic volume dataset that one slice cannot solve: columns and flakes (tests of 2.5D slabs).

Every object is the same bright disk. A *column* (label 1) is a disk repeated on 3 consecutive
slices, a *flake* (label 2) a disk on one slice; objects along the same in-plane cell are separated
by at least one empty slice, so a flake never touches another object across slices. Radii and
centres are drawn from the same distribution for both, so a single slice of a column and a flake are
identically distributed: a model that sees one slice can only guess. Three flakes are drawn per
column, so both classes hold the same number of voxels in expectation; then any slice-wise rule that
labels a fraction a of the disk voxels column and b flake (a + b <= 1, the same fractions for both,
as it cannot tell them apart) scores Dice 2a / (1 + 2a) and 2b / (1 + 2b): a mean foreground Dice
of at most 0.5 (a = b = 1/2). With its neighbours in view the task is trivial. Mirroring along z
(nnU-Net's augmentation) keeps every label valid.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from .synthetic import _dataset_folder, _write_dataset_json, write_volume_case

LABELS = {"background": 0, "column": 1, "flake": 2}
COLUMN_SLICES = 3
FLAKES_PER_COLUMN = 3


def _cell_objects(rng: np.random.Generator, depth: int) -> list:
    """(first slice, number of slices, label) of the objects along one cell, >= 1 empty slice apart."""
    objects, z = [], int(rng.integers(0, 2))
    while True:
        column = rng.random() < 1 / (1 + FLAKES_PER_COLUMN)
        n = COLUMN_SLICES if column else 1
        if z + n > depth:
            return objects
        objects.append((z, n, 1 if column else 2))
        z += n + 1 + int(rng.integers(0, 2))


def columns_and_flakes(rng: np.random.Generator, shape: Sequence[int], cells: int = 2) -> Tuple[np.ndarray, np.ndarray]:
    """One volume (z, y, x): image (float32, ~N(0, 0.1) background, disks at 1) and label (uint8)."""
    depth, h, w = shape
    image = rng.normal(0.0, 0.1, shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    ch, cw = h // cells, w // cells
    yy, xx = np.mgrid[:h, :w]
    for i in range(cells):
        for j in range(cells):
            for z, n, value in _cell_objects(rng, depth):
                r = rng.uniform(0.22, 0.36) * min(ch, cw)
                cy = i * ch + rng.uniform(r + 1, ch - r - 1)
                cx = j * cw + rng.uniform(r + 1, cw - r - 1)
                disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
                label[z:z + n, disk] = value
                image[z:z + n, disk] += 1.0
    return image, label


def make_synthetic_slabs(raw_root: str, dataset_id: int = 992, num_train: int = 8, num_test: int = 2,
                         shape: Tuple[int, int, int] = (12, 40, 40), spacing=(3.0, 1.0, 1.0), seed: int = 0,
                         origin=(12.5, -30.0, 4.0), direction=(-1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0),
                         overwrite: bool = True) -> str:
    """NIfTI volumes of columns and flakes (one channel), with a non-trivial origin and direction so
    that predictions can be checked to keep the input's geometry."""
    with _dataset_folder(raw_root, dataset_id, "SynthSlabs", overwrite) as (folder, final):
        rng = np.random.default_rng(seed)
        for i in range(num_train + num_test):
            image, label = columns_and_flakes(rng, shape)
            write_volume_case(folder, "Tr" if i < num_train else "Ts", f"case_{i:03d}", [image * 100.0], label,
                              spacing, origin, direction)
        _write_dataset_json(folder, {"0": "MR"}, num_train, ".nii.gz", LABELS,
                            "nnunet-dino synthetic volumes: columns (3 slices) and flakes (1 slice) look alike per slice")
    return final
