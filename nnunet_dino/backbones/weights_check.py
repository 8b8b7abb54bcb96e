"""Cheap checks of a weights source: is it readable, and does it fit a backbone -- without loading it.

Only the names and shapes of the tensors are read: a safetensors file's JSON header (checked
against the file's size, so a truncated download is caught) or a PyTorch file opened with
`torch.load(mmap=True, weights_only=True)` (nothing is copied into memory). They are converted to
timm's layout and compared with the backbone's state dict built on the `meta` device, so the
check costs milliseconds to seconds even for a ViT-7B. Used before training creates any folder,
and by `nnunet-dino doctor` to say which backbones each found file serves.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Dict, Optional, Tuple

import torch

from .frozen import build_timm_vit
from .registry import BackboneSpec
from .layouts import unwrap_checkpoint
from .weights import (WeightsError, WeightsSource, _describe_config, check_state_dict, convert_to_timm,
                      folder_files, torch_load)

SAFETENSORS_HEADER_LIMIT = 100 * 1024 * 1024  # the format's own limit on the JSON header


def _corrupt(path: str, why: str) -> WeightsError:
    return WeightsError(f"Could not read weights file {path} ({why}). It is probably truncated or corrupt: "
                        f"download it again.")


def _safetensors_shapes(path: str) -> Dict[str, torch.Tensor]:
    """Meta tensors named and shaped as in the file's header; the data must end where the file does."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _corrupt(path, f"{size} bytes, shorter than a safetensors header")
        (length,) = struct.unpack("<Q", head)
        if length > min(size - 8, SAFETENSORS_HEADER_LIMIT):
            raise _corrupt(path, f"header length {length} does not fit the file's {size} bytes")
        try:
            header = json.loads(f.read(length))
        except ValueError as e:
            raise _corrupt(path, f"header is not JSON: {e}") from None
    header.pop("__metadata__", None)
    try:
        end = max((int(entry["data_offsets"][1]) for entry in header.values()), default=0)
        state = {name: torch.empty(entry["shape"], device="meta") for name, entry in header.items()}
    except (KeyError, TypeError, IndexError, ValueError, RuntimeError) as e:
        raise _corrupt(path, f"malformed header: {type(e).__name__}") from None
    if 8 + length + end != size:
        raise _corrupt(path, f"the header describes {8 + length + end} bytes, the file has {size}")
    return state


def file_state(path: str) -> Dict[str, torch.Tensor]:
    """A weights file's tensors, not loaded into memory (meta or memory-mapped); WeightsError if the
    file is unreadable, not a checkpoint, holds pickled code, or holds no tensors."""
    if path.endswith(".safetensors"):
        return _safetensors_shapes(path)
    try:
        state = torch_load(path, mmap=True)
    except WeightsError:
        raise
    except RuntimeError:  # legacy (non-zip) torch files cannot be memory-mapped
        state = torch_load(path)
    return unwrap_checkpoint(state, path)


def source_state(source: WeightsSource) -> Tuple[Dict[str, torch.Tensor], Optional[dict]]:
    """(tensors as in `file_state`, config.json of a model folder or None) of a file or folder source."""
    if source.kind == "file":
        return file_state(source.path), None
    files, config = folder_files(source.path)
    state = {}
    for path in files:
        state.update(file_state(path))
    return state, config


def meta_vit(spec: BackboneSpec):
    """The backbone's timm ViT on the meta device: its state dict's names and shapes, no memory."""
    with torch.device("meta"):
        return build_timm_vit(spec)


def check_fits(state: Dict[str, torch.Tensor], spec: BackboneSpec, origin: str, config: Optional[dict] = None,
               vit=None) -> None:
    """WeightsError unless `state` (any supported layout) holds exactly `spec`'s tensors and shapes."""
    vit = meta_vit(spec) if vit is None else vit
    try:
        converted, _ = convert_to_timm(state, spec, vit)
    except ValueError as e:
        raise WeightsError(f"Cannot load {origin} into {spec.label}: {e}") from None
    check_state_dict(converted, vit, spec, origin, _describe_config(config))


def check_weights_source(source: WeightsSource, spec: BackboneSpec) -> None:
    """The cheap check of a located source before anything is written; random and hub pass."""
    if source.kind in ("file", "folder"):
        state, config = source_state(source)
        check_fits(state, spec, source.path, config)
