"""DICOM as it arrives from a scanner or PACS: a case's image is a folder of slices (one series), its mask
a DICOM-SEG file drawn on that series.

Series are read by SimpleITK's series reader (GDCM orders the slices by position along the slice normal);
a folder must hold exactly one series, with evenly spaced slices, since a missing slice would silently
stretch the volume. SEG files are read with highdicom, frame by frame onto the image series' own slices,
so the mask has the image's grid by construction. RTSTRUCT contours are refused: turning polygons into
voxels is not exact, and the choice of rasteriser belongs to the user.
"""
from __future__ import annotations

import os
from typing import List, Optional, Tuple

import numpy as np

from .geometry import Geometry, UnsupportedImage

DICOM_FOLDER = "/"            # the pseudo-extension naming gives a series folder (its name ends with '/')
DICOM_FILE = ".dcm"
SPACING_TOLERANCE = 0.01      # relative deviation between neighbouring slice distances that is not a gap
RTSTRUCT_FIX = ("DICOM RTSTRUCT (contours) is not supported: turning contours into voxels is not exact. Convert "
                "it to a DICOM-SEG or NIfTI label image on the image series, e.g. with plastimatch (`plastimatch "
                "convert --input RTSTRUCT.dcm --referenced-ct SERIES_FOLDER --output-labelmap mask.nii.gz`) or 3D "
                "Slicer (SlicerRT: load both, export the segmentation as a labelmap), and onboard that")


def is_dicom_mask(path: str) -> bool:
    """A mask given as a .dcm file, or as a folder holding one."""
    return os.path.isdir(path) or path.lower().endswith(DICOM_FILE)


def _header(path: str):
    import pydicom
    return pydicom.dcmread(path, stop_before_pixels=True, force=True)


def _series_ids(folder: str) -> Tuple[str, ...]:
    import SimpleITK as sitk
    return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder))


def _describe_series(folder: str, uid: str) -> str:
    import SimpleITK as sitk
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, uid)
    header = _header(files[0])
    what = " ".join(str(getattr(header, key, "")) for key in ("Modality", "SeriesDescription")).strip()
    return f"{uid} ({len(files)} file(s){', ' + what if what else ''})"


def _slice_positions(files: List[str]) -> np.ndarray:
    """Each slice's position along the slice normal (mm), in the reader's order."""
    headers = [_header(f) for f in files]
    orientation = np.asarray(headers[0].ImageOrientationPatient, float)
    normal = np.cross(orientation[:3], orientation[3:])
    return np.array([float(np.dot(np.asarray(h.ImagePositionPatient, float), normal)) for h in headers])


def _check_spacing(positions: np.ndarray) -> None:
    """Refuse repeated positions and uneven gaps; they mean missing, extra or mixed-in slices."""
    steps = np.abs(np.diff(positions))
    if not len(steps):
        return
    usual = float(np.median(steps))
    if usual <= 0 or steps.min() <= 0:
        raise UnsupportedImage("two slices share one position (a repeated or mixed-in slice): keep one file per "
                               "slice position, or export the series again")
    odd = np.flatnonzero(np.abs(steps - usual) > SPACING_TOLERANCE * usual)
    if len(odd):
        where = ", ".join(f"{steps[i]:g} mm after slice {i + 1}" for i in odd[:3])
        raise UnsupportedImage(f"uneven slice spacing (usually {usual:g} mm, but {where}): slices are missing. "
                               f"Export the complete series again")


def series_files(folder: str) -> Tuple[str, List[str]]:
    """(series instance UID, slice files ordered by position) of the one series in `folder`."""
    import SimpleITK as sitk
    uids = _series_ids(folder)
    if not uids:
        raise UnsupportedImage("no DICOM series in this folder (a case folder must hold the DICOM slices of one "
                               "series)")
    if len(uids) > 1:
        raise UnsupportedImage(f"{len(uids)} DICOM series in one folder: "
                               + "; ".join(_describe_series(folder, uid) for uid in uids)
                               + ". Move each series into a folder of its own: one series per case "
                                 "(a DICOM-SEG belongs in the masks folder)")
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, uids[0]))
    _check_spacing(_slice_positions(files))
    return uids[0], files


def read_series(folder: str) -> Tuple[np.ndarray, Geometry, str]:
    """(array (z, y, x), geometry, series instance UID) of the DICOM series in `folder`."""
    import SimpleITK as sitk
    uid, files = series_files(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    image = reader.Execute()
    geometry = Geometry(image.GetDimension(), tuple(float(s) for s in image.GetSpacing()[::-1]),
                        tuple(image.GetOrigin()), tuple(image.GetDirection()))
    return sitk.GetArrayFromImage(image), geometry, uid


def mask_file(path: str) -> str:
    """A DICOM mask given as a folder holding one file -> that file."""
    if not os.path.isdir(path):
        return path
    files = [os.path.join(path, f) for f in sorted(os.listdir(path)) if not f.startswith(".")]
    if len(files) != 1:
        raise UnsupportedImage(f"a DICOM mask folder must hold one DICOM-SEG file, this one holds {len(files)}: "
                               f"keep the SEG file only (or give the file itself)")
    return files[0]


def check_is_image(path: str) -> None:
    """A single .dcm file among the images must not be a segmentation."""
    modality = str(getattr(_header(path), "Modality", ""))
    if modality in ("SEG", "RTSTRUCT"):
        raise UnsupportedImage(f"DICOM {modality} is a segmentation, not an image: put it in the masks folder")


def read_segmentation(path: str, image: Optional[str]) -> np.ndarray:
    """Label array (z, y, x) of a DICOM-SEG on the case's image series: segment numbers as values, on the
    series' own slices (so on its grid exactly)."""
    path = mask_file(path)
    modality = str(getattr(_header(path), "Modality", ""))
    if modality == "RTSTRUCT":
        raise UnsupportedImage(RTSTRUCT_FIX)
    if modality != "SEG":
        raise UnsupportedImage(f"DICOM {modality or 'file without a modality'} is not a segmentation: masks in "
                               f"DICOM must be DICOM-SEG")
    if image is None or not os.path.isdir(image):
        raise UnsupportedImage("a DICOM-SEG mask needs its image as a DICOM series folder (the slices it was drawn "
                               "on); convert the mask to NIfTI to pair it with other image files")
    import highdicom
    segmentation = highdicom.seg.segread(path)
    series_uid, files = series_files(image)
    referenced = sorted({series for _, series, _ in segmentation.get_source_image_uids()})
    if referenced != [series_uid]:
        raise UnsupportedImage(f"this DICOM-SEG was drawn on series {', '.join(referenced) or '(none named)'}, but "
                               f"the case's image {image} is series {series_uid}: pair each SEG with the series it "
                               f"refers to")
    instances = [str(_header(f).SOPInstanceUID) for f in files]
    try:
        labels = segmentation.get_pixels_by_source_instance(instances, combine_segments=True)
    except (ValueError, KeyError, RuntimeError) as error:  # overlapping segments, frames of other instances
        raise UnsupportedImage(f"the DICOM-SEG cannot be mapped onto its series' slices: {error}") from None
    return np.asarray(labels)
