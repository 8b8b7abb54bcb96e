"""Second pass: write one case in nnU-Net's naming (`CASE_XXXX<ending>` images, `CASE<ending>` label).

Runs in worker processes. 3D cases (and 2D data PNG cannot hold) are written as NIfTI with the
geometry of the case's first channel file, so every channel and the label share one grid exactly,
as nnU-Net's integrity check demands. 2D natural images stay PNG: RGB as one 3-channel file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from .imageio import read_array, write_png, write_sitk

PNG = ".png"
NIFTI = ".nii.gz"


@dataclass
class WriteJob:
    case: str
    images: List[str]                  # source channel files, in channel order
    mask: Optional[str]
    images_dir: str                    # imagesTr or imagesTs of the output
    labels_dir: Optional[str]          # labelsTr (None for test images)
    file_ending: str                   # PNG or NIFTI
    keep_geometry: bool                # copy spacing/origin/direction from the first channel file
    lookup: Optional[np.ndarray] = None   # mask value -> nnU-Net label


def choose_file_ending(ndims: Sequence[int], natural: bool, ranges, components: Sequence[int]) -> str:
    """PNG for 2D natural images PNG can hold losslessly; NIfTI otherwise.

    PNG holds 8-bit grey/RGB and 16-bit grey integers; a float or negative 2D image (e.g. a
    float TIFF) becomes a one-slice NIfTI, which nnU-Net's 2d configuration reads just as well.
    """
    if not natural or any(n != 2 for n in ndims):
        return NIFTI
    for (vmin, vmax, integer_valued), comps in zip(ranges, components):
        limit = 255 if comps > 1 else 65535
        if not integer_valued or vmin < 0 or vmax > limit:
            return NIFTI
    return PNG


def _label_array(job: WriteJob) -> np.ndarray:
    mask, _ = read_array(job.mask, as_mask=True, image=job.images[0])
    labels = job.lookup[np.asarray(mask).astype(np.int64)]
    return labels.astype(np.uint8 if job.lookup.max() < 256 else np.uint16)


def write_case(job: WriteJob) -> None:
    """Write the case's channel files and, for a training case, its label file."""
    reference = None  # geometry of the first channel file, given to every written file
    index = 0
    for path in job.images:
        array, geometry = read_array(path)
        if reference is None and job.keep_geometry:
            reference = geometry
        if job.file_ending == PNG:  # one file per source file: an RGB PNG stays one 3-channel file
            write_png(np.asarray(array), os.path.join(job.images_dir, f"{job.case}_{index:04d}{PNG}"))
            index += 1
            continue
        components = [array] if array.ndim == geometry.ndim else [array[..., c] for c in range(array.shape[-1])]
        for component in components:
            if component.dtype == bool:
                component = component.astype(np.uint8)
            target = os.path.join(job.images_dir, f"{job.case}_{index:04d}{job.file_ending}")
            write_sitk(np.ascontiguousarray(component), target, reference)
            index += 1
    if job.mask is not None:
        target = os.path.join(job.labels_dir, job.case + job.file_ending)
        labels = _label_array(job)
        if job.file_ending == PNG:
            write_png(labels, target)
        else:
            write_sitk(labels, target, reference)
