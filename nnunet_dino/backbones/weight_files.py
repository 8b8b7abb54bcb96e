"""Managing weights files: what is found where (`list`), whether a file loads and what it is
(`verify`), lossless format changes (`convert`) and hub downloads (`fetch`). The logic behind
`nnunet-dino weights`; loading itself stays in `weights.py`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Dict, List, Optional, Tuple

import torch

from ..errors import ExistingOutputError, MissingInputError, OptionError, UserError
from .frozen import FrozenDinoBackbone
from .normalization import METADATA_KEY, PREPROCESSOR_CONFIG, RGB_SPACE, source_normalization
from .registry import BackboneSpec, get_backbone_spec, list_backbones
from .weights import (WEIGHTS_ENV_VAR, WeightsError, WeightsSource, _detect, load_backbone_weights, locate_weights,
                      read_source)
from .weights_check import check_fits

CONVERT_TARGETS = ("safetensors", "meta", "hf")
_CHUNK = 1 << 22


def _progress(total: int, desc: str):
    from tqdm import tqdm
    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, leave=False, disable=total < (64 << 20))


def sha256_file(path: str) -> str:
    """sha256 of a file, with a progress bar for large ones."""
    digest = hashlib.sha256()
    with open(path, "rb") as f, _progress(os.path.getsize(path), f"sha256 {os.path.basename(path)}") as bar:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _weight_file_of(source: WeightsSource) -> str:
    """The file whose bytes identify a source (a folder's model.safetensors / pytorch_model.bin)."""
    if source.kind == "file":
        return source.path
    for name in ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json"):
        if os.path.isfile(os.path.join(source.path, name)):
            return os.path.join(source.path, name)
    return ""


def _size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def list_weights(setting: Optional[str] = None, with_hash: bool = True) -> List[Dict[str, str]]:
    """One row per registered backbone: found where (or not), container, size, sha256, licence."""
    rows = []
    for name in list_backbones():
        spec = get_backbone_spec(name)
        row = {"backbone": name, "licence": spec.licence or "see the model card"}
        try:
            source = locate_weights(spec, setting)
        except WeightsError:
            row["found"] = "not found"
            rows.append(row)
            continue
        row["found"] = source.describe()
        if source.kind in ("file", "folder"):
            ident = _weight_file_of(source)
            row["format"] = "transformers folder" if source.kind == "folder" else os.path.splitext(source.path)[1]
            row["size"] = f"{_size(source.path) / 1e6:.1f} MB"
            row["sha256"] = sha256_file(ident) if with_hash and ident else "-"
        rows.append(row)
    return rows


def _source_for(path: str) -> WeightsSource:
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isfile(path):
        return WeightsSource("file", path)
    if os.path.isfile(os.path.join(path, "config.json")):
        return WeightsSource("folder", path)
    raise MissingInputError(f"{path} is neither a weights file nor a model folder (with config.json)")


def _fits(state: dict, spec: BackboneSpec) -> bool:
    try:
        check_fits(state, spec, "")
        return True
    except (WeightsError, ValueError, KeyError, RuntimeError):
        return False


def identify(path: str, backbone: Optional[str] = None) -> Tuple[WeightsSource, BackboneSpec]:
    """The source at `path` and the backbone it is for: `backbone`, else the first registered row
    (of the file's DINO family, preferring rows whose name pattern matches) whose tensors fit."""
    source = _source_for(path)
    if backbone:
        return source, get_backbone_spec(backbone)
    state, _ = read_source(source)
    family, _ = _detect(state)
    if family is None:
        raise WeightsError(f"{path} is not a DINOv2/DINOv3 checkpoint in any layout nnunet-dino knows "
                           f"(Meta .pth, timm, transformers); its first keys: {', '.join(list(state)[:5])}")
    import fnmatch
    name = os.path.basename(source.path)
    candidates = sorted((get_backbone_spec(n) for n in list_backbones() if get_backbone_spec(n).family == family),
                        key=lambda s: not any(fnmatch.fnmatch(name, p.split("/")[-1]) for p in s.weight_files))
    for spec in candidates:
        if _fits(state, spec):
            return source, spec
    raise WeightsError(f"{path} holds {family.upper()} weights of no registered size; name one with --backbone "
                       f"NAME to see its missing and unexpected keys")


def verify(path: str, backbone: Optional[str] = None) -> dict:
    """Load `path` strictly into its backbone; the load record (layout, variant, normalisation, notes).
    WeightsError (a UserError) names missing, unexpected and mis-shaped keys."""
    source, spec = identify(path, backbone)
    net = FrozenDinoBackbone(spec)
    info = load_backbone_weights(net, source)
    info["missing"], info["unexpected"] = [], []  # a strict load succeeded
    return info


def _equal(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> List[str]:
    """Names whose tensors differ (or exist on one side only)."""
    return sorted(k for k in set(a) | set(b) if k not in a or k not in b or a[k].dtype != b[k].dtype
                  or a[k].shape != b[k].shape or not torch.equal(a[k], b[k]))


def _write_safetensors(state: dict, out: str, normalization: dict) -> None:
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in state.items()}, out, metadata={METADATA_KEY: json.dumps(normalization)})


def convert(path: str, to: str, out: str, backbone: Optional[str] = None, overwrite: bool = False) -> dict:
    """Write the weights at `path` as `to` into `out`, reload the output and check that every tensor
    is equal (the file's own tensors for a change of container; the backbone's tensors for a change
    of layout). Returns {'backbone', 'layout', 'tensors', 'out', 'normalization', 'notes'}."""
    if to not in CONVERT_TARGETS:
        raise OptionError(f"--to must be one of {', '.join(CONVERT_TARGETS)}, got {to!r}")
    if os.path.exists(out) and not overwrite:
        raise ExistingOutputError(f"{out} exists; choose another output or remove it first")
    source, spec = identify(path, backbone)
    normalization = source_normalization(spec, source.kind, source.path).record()
    raw, _ = read_source(source)
    _, layout = _detect(raw)
    notes = list(getattr(raw, "notes", ()))
    if to == "meta" and (spec.normalization is None or normalization != spec.normalization.record()):
        _write_sidecar(_sidecar_path(out), normalization)  # before reloading, which reads it
    if to == "safetensors" or (to == "meta" and layout == "meta"):  # same keys, another container
        written = dict(raw)
        if to == "safetensors":
            _write_safetensors(written, out, normalization)
        else:
            torch.save(written, out)
        differing = _equal(written, dict(read_source(WeightsSource("file", os.path.abspath(out)))[0]))
    else:
        written, differing, note = _through_timm(source, spec, to, out, normalization)
        notes.extend([note] if note else [])
    if differing:
        for written_path in (out, _sidecar_path(out)):
            if os.path.isdir(written_path):
                shutil.rmtree(written_path)
            elif os.path.exists(written_path):
                os.remove(written_path)
        raise WeightsError(f"converting {path} to {to} changed tensors {', '.join(differing[:8])}; nothing was kept")
    return {"backbone": spec.name, "layout": layout, "tensors": len(written), "out": out,
            "normalization": normalization, "notes": notes}


def _through_timm(source: WeightsSource, spec: BackboneSpec, to: str, out: str, normalization: dict):
    """Another layout: load into the backbone, write with the family's inverse converter, reload and
    compare the backbone's tensors. Returns (written tensors, differing names, note or '')."""
    reference = FrozenDinoBackbone(spec)
    load_backbone_weights(reference, source)
    state = reference.vit.state_dict()
    if to == "meta":
        written = spec.family_ops.timm_to_meta(state, reference.vit)
        torch.save(written, out)
        target = WeightsSource("file", os.path.abspath(out))
    else:
        written, config = spec.family_ops.timm_to_hf(state, spec, reference.vit)
        os.makedirs(out)
        _write_safetensors(written, os.path.join(out, "model.safetensors"), normalization)
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        if normalization["space"] == RGB_SPACE:
            _write_sidecar(os.path.join(out, PREPROCESSOR_CONFIG), normalization)
        target = WeightsSource("folder", os.path.abspath(out))
    reloaded = FrozenDinoBackbone(spec)
    load_backbone_weights(reloaded, target)
    note = ""
    if reloaded.pos_embed_resize != reference.pos_embed_resize:
        note = (f"the source resizes the position embedding the '{reference.pos_embed_resize}' way, the {to} "
                f"output the '{reloaded.pos_embed_resize}' way: features are equal at the native grid and "
                f"differ slightly at other input sizes")
    return written, _equal(state, reloaded.vit.state_dict()), note


def _sidecar_path(out: str) -> str:
    return f"{os.path.splitext(out)[0]}.{PREPROCESSOR_CONFIG}"


def _write_sidecar(path: str, normalization: dict) -> None:
    """A `.pth` holds tensors only: its normalisation travels as a preprocessor config beside it."""
    with open(path, "w") as f:
        json.dump({"image_mean": normalization["mean"], "image_std": normalization["std"]}, f, indent=1)


def fetch(name: str, folder: Optional[str] = None) -> Dict[str, str]:
    """Download `name`'s weights from the Hugging Face hub into `folder` (default: nnUNet_dino_weights),
    under a name the folder search finds; returns {file: sha256}, also written to SHA256SUMS."""
    spec = get_backbone_spec(name)
    folder = folder or os.environ.get(WEIGHTS_ENV_VAR, "")
    if not folder or not os.path.isdir(folder):
        raise MissingInputError(f"give an existing folder to download into (--to FOLDER, or {WEIGHTS_ENV_VAR})")
    if not (spec.timm_hub_id or spec.hf_repo):
        raise OptionError(f"backbone {name} has no hub id; get it from {spec.family_ops.where_to_get}")
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
        if spec.timm_hub_id:
            target = os.path.join(folder, spec.timm_hub_id.split("/", 1)[1] + ".safetensors")
            downloaded = hf_hub_download(spec.timm_hub_id, "model.safetensors")
            _copy(downloaded, target)
            files = [target]
        else:
            target = os.path.join(folder, spec.hf_repo.split("/", 1)[1])
            snapshot_download(spec.hf_repo, local_dir=target)
            files = [os.path.join(r, f) for r, _, fs in os.walk(target) for f in fs if ".cache" not in r]
    except Exception as e:  # offline, gated, no such repo, ...
        raise UserError(f"could not download {spec.timm_hub_id or spec.hf_repo} from the Hugging Face hub "
                        f"({type(e).__name__}; offline, or access not granted?). On an offline machine, "
                        f"download it elsewhere and copy it into {folder} (see `nnunet-dino weights list`).") from None
    sums = {f: sha256_file(f) for f in sorted(files)}
    with open(os.path.join(folder, "SHA256SUMS"), "a") as f:
        f.writelines(f"{digest}  {os.path.relpath(path, folder)}\n" for path, digest in sums.items())
    return sums


def _copy(src: str, dst: str) -> None:
    bar = _progress(os.path.getsize(src), f"copy {os.path.basename(dst)}")
    with open(src, "rb") as fi, open(dst, "wb") as fo, bar:
        for chunk in iter(lambda: fi.read(_CHUNK), b""):
            fo.write(chunk)
            bar.update(len(chunk))
