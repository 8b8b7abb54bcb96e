"""Reading the user's images and masks, and writing them in nnU-Net's formats.

Arrays are in numpy order ((y, x) or (z, y, x)) with colour/vector components on a last axis when
there are several. Spacing, origin and direction come from SimpleITK for 3D formats; 2D natural
images (PNG, JPEG, BMP, TIFF) have none.
"""
from __future__ import annotations

import gzip
import os
import zlib
from typing import BinaryIO, Optional, Tuple

import numpy as np

from . import dicom
from .geometry import Geometry, UnsupportedImage
from .naming import EXTENSIONS_2D, split_extension

__all__ = ["Geometry", "UnsupportedImage", "check_complete", "components_of", "is_natural_2d", "read_array",
           "write_png", "write_sitk"]


def is_natural_2d(path: str) -> bool:
    return split_extension(os.path.basename(path))[1] in EXTENSIONS_2D


def _read_natural(path: str, as_mask: bool) -> np.ndarray:
    from PIL import Image
    if split_extension(path)[1] in (".tif", ".tiff"):
        import tifffile
        array = tifffile.imread(path)
        if array.ndim == 3 and array.shape[-1] not in (3, 4):
            raise UnsupportedImage(f"{array.shape} TIFF is a stack, not a 2D image: save 3D data as NIfTI (.nii.gz)")
    else:
        with Image.open(path) as image:
            if image.mode == "P" and not as_mask:
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
            elif image.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                image = image.convert("RGB")
            elif image.mode == "1":
                image = image.convert("L")
            array = np.asarray(image)  # palette masks stay palette indices: the label values
    if array.ndim > 3 or array.ndim < 2:
        raise UnsupportedImage(f"{array.shape} is not a 2D grey or colour image")
    if array.ndim == 3 and array.shape[-1] in (2, 4):  # drop alpha (grey + alpha, RGBA)
        array = array[..., :-1]
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if as_mask and array.ndim == 3:
        if not all(np.array_equal(array[..., 0], array[..., c]) for c in range(1, array.shape[-1])):
            raise UnsupportedImage("colour mask (RGB channels differ): save masks as one-channel label images "
                                   "(one integer per class)")
        array = array[..., 0]
    return array


CHUNK = 1 << 20          # compressed bytes read at a time
MAX_OUTPUT = 1 << 24     # decompressed bytes produced at a time (highly compressible masks)


def _inflate_to_end(stream: BinaryIO, decompressor) -> bool:
    """Feed the rest of `stream` to a zlib decompressor, discarding the output; True if the
    compressed stream reached its end marker (a truncated file never does)."""
    while not decompressor.eof:
        data = stream.read(CHUNK)
        if not data:
            return False
        while data and not decompressor.eof:
            decompressor.decompress(data, MAX_OUTPUT)
            data = decompressor.unconsumed_tail
    return True


def _header_fields(stream: BinaryIO, separator: bytes, last_key: Optional[bytes]) -> dict:
    """Text header fields (lower-case keys) up to a blank line (NRRD) or the `last_key` line (MetaImage);
    `stream` is left at the first data byte."""
    fields = {}
    for line in iter(stream.readline, b""):
        text = line.strip()
        if not text and last_key is None:
            break
        key, _, value = text.partition(separator)
        fields[key.strip().lower()] = value.strip().lower()
        if last_key is not None and key.strip().lower() == last_key:
            break
    return fields


def check_complete(path: str) -> None:
    """Read a compressed file's whole stream and check that it ends properly: SimpleITK reads a
    truncated .nii.gz (or compressed .nrrd/.mha) without complaint and pads it with zeros."""
    lower = path.lower()
    try:
        if lower.endswith(".gz"):
            with gzip.open(path, "rb") as stream:  # checks the end marker, CRC and length
                while stream.read(MAX_OUTPUT):
                    pass
            return
        if not lower.endswith((".nrrd", ".mha")):
            return
        with open(path, "rb") as stream:
            if lower.endswith(".nrrd"):
                fields = _header_fields(stream, b":", None)
                compressed = fields.get(b"encoding") in (b"gzip", b"gz")
                wbits = 16 + zlib.MAX_WBITS
            else:
                fields = _header_fields(stream, b"=", b"elementdatafile")
                compressed = fields.get(b"compresseddata") == b"true" and fields.get(b"elementdatafile") == b"local"
                wbits = zlib.MAX_WBITS
            if compressed and not _inflate_to_end(stream, zlib.decompressobj(wbits)):
                raise EOFError("the compressed data ends before its end marker")
    except (EOFError, OSError, zlib.error) as error:
        raise UnsupportedImage(f"truncated or corrupt compressed file ({error}): SimpleITK would fill the "
                               f"missing part with zeros; copy or export the file again") from None


def _check_spatial(image, as_mask: bool):
    """A 4D file (time points or channels stacked in one file) is named with its fix; a 4th axis of one
    voxel is dropped."""
    import SimpleITK as sitk
    size = image.GetSize()
    if image.GetDimension() == 4 and size[3] == 1:
        return sitk.Extract(image, (*size[:3], 0), (0, 0, 0, 0))
    if image.GetDimension() <= 3:
        return image
    shape = " x ".join(str(n) for n in size)
    if as_mask:
        raise UnsupportedImage(f"{image.GetDimension()}D mask ({shape} voxels, x y z ...): a mask is one 2D or 3D "
                               f"label image per case")
    raise UnsupportedImage(f"{image.GetDimension()}D image ({shape} voxels, x y z and {size[3]} along the 4th axis): "
                           f"time points or channels stacked in one file. nnU-Net wants one 3D file per channel: "
                           f"split it into CASE_0000.nii.gz, CASE_0001.nii.gz, ... (e.g. `fslsplit FILE CASE_ -t`, "
                           f"or SimpleITK's Extract per index), keep the channels you mean, and onboard with "
                           f"--image-pattern '{{case}}_{{channel}}'")


def read_array(path: str, as_mask: bool = False,
               image: Optional[str] = None) -> Tuple[np.ndarray, Optional[Geometry]]:
    """(array, geometry) of one image or mask file, or of a DICOM series folder; raises UnsupportedImage
    with a fix. A DICOM mask (DICOM-SEG) is read onto the slices of `image`, its case's series folder,
    and has that series' grid: its geometry is None."""
    if is_natural_2d(path):
        return _read_natural(path, as_mask), Geometry(ndim=2)
    if as_mask and dicom.is_dicom_mask(path):
        return dicom.read_segmentation(path, image), None
    if os.path.isdir(path):
        array, geometry, _ = dicom.read_series(path)
        return array, geometry
    if path.lower().endswith(dicom.DICOM_FILE):
        dicom.check_is_image(path)
    import SimpleITK as sitk
    loaded = _check_spatial(sitk.ReadImage(path), as_mask)
    array = sitk.GetArrayFromImage(loaded)  # (z, y, x[, components])
    if as_mask and loaded.GetNumberOfComponentsPerPixel() > 1:
        raise UnsupportedImage(f"mask has {loaded.GetNumberOfComponentsPerPixel()} components per voxel: "
                               f"save masks with one integer label per voxel")
    geometry = Geometry(loaded.GetDimension(), tuple(float(s) for s in loaded.GetSpacing()[::-1]),
                        tuple(loaded.GetOrigin()), tuple(loaded.GetDirection()))
    return array, geometry


def components_of(array: np.ndarray, geometry: Geometry) -> int:
    return array.shape[-1] if array.ndim > geometry.ndim else 1


# --- writing ------------------------------------------------------------------------------------

def write_png(array: np.ndarray, path: str) -> None:
    """Grey (uint8/uint16) or RGB (uint8) PNG, lossless."""
    from PIL import Image
    if array.ndim == 3:
        Image.fromarray(array.astype(np.uint8), mode="RGB").save(path)
    elif array.max(initial=0) > 255:
        Image.fromarray(array.astype(np.uint16)).save(path)
    else:
        Image.fromarray(array.astype(np.uint8), mode="L").save(path)


def write_sitk(array: np.ndarray, path: str, geometry: Optional[Geometry]) -> None:
    """NIfTI (or other SimpleITK format) with `geometry` as read from the source (None: spacing 1)."""
    import SimpleITK as sitk
    image = sitk.GetImageFromArray(array)
    if geometry is not None and geometry.spacing is not None:
        image.SetSpacing(geometry.spacing[::-1])
        image.SetOrigin(geometry.origin)
        image.SetDirection(geometry.direction)
    sitk.WriteImage(image, path, useCompression=True)
