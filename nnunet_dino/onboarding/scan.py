"""First pass over the data: read every case once and keep only small facts (shapes, spacings, value
ranges, label counts), so folders larger than memory stream through. Runs in worker processes."""
from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from . import dicom
from .imageio import Geometry, UnsupportedImage, check_complete, components_of, read_array
from .naming import CaseFiles

NON_INTEGER_EXAMPLES = 5
NEAR_CONSTANT_SHARE = 0.999  # an image with one value in this share of its voxels is (nearly) constant


@dataclass
class FileFacts:
    path: str
    shape: Tuple[int, ...]                 # spatial, numpy order
    geometry: Geometry
    components: int = 1                    # 3 for RGB
    vmin: float = 0.0
    vmax: float = 0.0
    integer_valued: bool = True
    label_counts: Dict[int, int] = field(default_factory=dict)   # masks: value -> voxels
    non_integer_examples: List[float] = field(default_factory=list)
    series_uid: Optional[str] = None       # a DICOM series folder's series instance UID
    nan_voxels: int = 0
    inf_voxels: int = 0
    common_value: float = 0.0              # images: the median value, and the share of voxels holding it
    common_share: float = 0.0


@dataclass
class CaseScan:
    files: CaseFiles
    images: List[FileFacts] = field(default_factory=list)
    mask: Optional[FileFacts] = None
    unreadable: List[Tuple[str, str]] = field(default_factory=list)   # (path, why)


def _spatial_shape(array: np.ndarray, geometry: Geometry) -> Tuple[int, ...]:
    return tuple(int(n) for n in array.shape[: geometry.ndim])


def _common_value(values: np.ndarray) -> Tuple[float, float]:
    """(value, share of voxels) of the median: a value held by most voxels is the median."""
    if not values.size:
        return 0.0, 0.0
    median = np.median(values)
    return float(median), float(np.count_nonzero(values == median)) / values.size


def _image_facts(path: str) -> FileFacts:
    check_complete(path)
    series_uid = None
    if os.path.isdir(path):
        array, geometry, series_uid = dicom.read_series(path)
    else:
        array, geometry = read_array(path)
    values, nan_voxels, inf_voxels = array, 0, 0
    if np.issubdtype(array.dtype, np.floating):
        nan_voxels, inf_voxels = int(np.isnan(array).sum()), int(np.isinf(array).sum())
        if nan_voxels or inf_voxels:
            values = array[np.isfinite(array)]  # the value facts below are of the finite voxels
    integer_valued = (np.issubdtype(values.dtype, np.integer) or values.dtype == bool
                      or bool(np.all(values == np.round(values))))
    facts = FileFacts(path, _spatial_shape(array, geometry), geometry, components_of(array, geometry),
                      float(values.min(initial=0)), float(values.max(initial=0)), integer_valued,
                      series_uid=series_uid, nan_voxels=nan_voxels, inf_voxels=inf_voxels)
    facts.common_value, facts.common_share = _common_value(values)
    return facts


def count_labels(array: np.ndarray) -> Dict[int, int]:
    """value -> voxel count; bincount for small non-negative integers (fast on large volumes)."""
    flat = array.ravel()
    if flat.size and flat.min() >= 0 and flat.max() < 65536:
        counts = np.bincount(flat.astype(np.int64))
        return {int(v): int(counts[v]) for v in np.flatnonzero(counts)}
    values, counts = np.unique(flat, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


def _mask_facts(path: str, image: Optional[FileFacts]) -> FileFacts:
    """Facts of a mask; a DICOM-SEG is read onto the slices of its image series, whose grid it has."""
    check_complete(path)
    if image is None and dicom.is_dicom_mask(path):
        raise UnsupportedImage("its image cannot be read (see the image's line), so the slices this DICOM mask "
                               "refers to are unknown")
    array, geometry = read_array(path, as_mask=True, image=image.path if image else None)
    geometry = geometry or image.geometry
    facts = FileFacts(path, _spatial_shape(array, geometry), geometry)
    if np.issubdtype(array.dtype, np.floating):
        fractional = array != np.round(array)  # NaN counts as fractional too
        if fractional.any():
            facts.integer_valued = False
            facts.non_integer_examples = [float(v) for v in np.unique(array[fractional])[:NON_INTEGER_EXAMPLES]]
            return facts
    facts.label_counts = count_labels(array)
    return facts


def scan_case(files: CaseFiles) -> CaseScan:
    """Facts of one case's image files and mask; unreadable files are recorded, not raised."""
    scan = CaseScan(files)
    for path in files.images:
        try:
            scan.images.append(_image_facts(path))
        except Exception as error:  # a damaged or exotic file: report it with the others
            scan.unreadable.append((path, f"{type(error).__name__}: {error}"))
    if files.mask is not None:
        try:
            first = scan.images[0] if scan.images and scan.images[0].path == files.images[0] else None
            scan.mask = _mask_facts(files.mask, first)
        except Exception as error:
            scan.unreadable.append((files.mask, f"{type(error).__name__}: {error}"))
    return scan


def parallel_map(function: Callable, jobs: Sequence, num_processes: int, description: str,
                 progress: bool = True) -> List:
    """`function` over `jobs` in order, with a progress bar; `spawn` workers when num_processes > 1."""
    from tqdm import tqdm
    bar = dict(total=len(jobs), desc=description, unit="case", disable=not progress or not jobs)
    if num_processes <= 1 or len(jobs) <= 1:
        return [function(job) for job in tqdm(jobs, **bar)]
    # spawn: the caller may already hold torch threads, which fork can deadlock
    with multiprocessing.get_context("spawn").Pool(min(num_processes, len(jobs))) as pool:
        chunk = max(1, min(16, len(jobs) // (4 * num_processes)))
        return list(tqdm(pool.imap(function, jobs, chunksize=chunk), **bar))


def scan_cases(cases: Iterable[CaseFiles], num_processes: int = 1, progress: bool = True,
               description: str = "reading cases") -> List[CaseScan]:
    return parallel_map(scan_case, list(cases), num_processes, description, progress)
