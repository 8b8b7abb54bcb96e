"""Finding and loading DINO weights -- never by unpickling code.

`nnUNet_dino_weights` (an nnU-Net-style environment variable) is one of:
- a folder, searched for the published names of each backbone (Meta's `.pth`, timm's
  `.safetensors`, Hugging Face model folders);
- one weights file or one model folder;
- `random`: explicit random initialisation (tests and the demo only; logged loudly);
- `hub`: download timm's weights from the Hugging Face hub (needs network access).
Formats: Meta's official `.pth` (DINOv2, DINOv3), timm `.safetensors`/`.bin`, and transformers
folders (`config.json` + `model.safetensors`, sharded or not) of `Dinov2Model` and
`DINOv3ViTModel`. Every backbone tensor must be loaded; otherwise the error names the missing,
unexpected and mis-shaped keys.
"""
from __future__ import annotations

import glob
import json
import os
import pickle
import struct
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch

from .. import environment
from .errors import WeightsError
from .frozen import build_timm_vit
from .layouts import NotedState, complete_variant
from .layouts import unwrap_checkpoint
from .normalization import Normalization, source_normalization
from .registry import BackboneSpec, check_dataset, families

WEIGHTS_ENV_VAR = environment.WEIGHTS
RANDOM_SETTING = "random"
RANDOM_BACKBONE_SEED = 0  # `random` means this seeded initialisation: reproducible from a slim checkpoint


def is_random_setting(setting: Optional[str]) -> bool:
    """Whether a `nnUNet_dino_weights` value asks for a random frozen backbone (tests and demos only)."""
    return (setting or "").strip().lower() == RANDOM_SETTING


def record_is_random(weights_record: Optional[dict]) -> bool:
    """Whether a record of loaded weights (plans, checkpoint) says the backbone was random."""
    return (weights_record or {}).get("format") == RANDOM_SETTING


def random_backbone_banner(why: str) -> str:
    """The one loud banner of a random frozen backbone; `why` says where it comes from (the setting, at
    training; a checkpoint's record, at loading)."""
    rule = "!" * 78
    return (f"\n{rule}\n!! RANDOM FROZEN BACKBONE: {why}\n"
            "!! It shows that the pipeline runs, NOT what the method can do: its results are not\n"
            f"!! comparable to the papers. Point {WEIGHTS_ENV_VAR} at real DINO weights for real work.\n{rule}")


#: at training, in the log and in RANDOM_BACKBONE_WARNING.txt beside the checkpoints
RANDOM_BACKBONE_BANNER = random_backbone_banner(f"{WEIGHTS_ENV_VAR}=random, the DINO encoder has random weights.")
#: when a checkpoint trained on a random backbone is loaded (prediction, validation)
RANDOM_MODEL_BANNER = random_backbone_banner("this model was trained on a random backbone (its checkpoint says so).")


def describe_weights_record(record: dict) -> str:
    """'a RANDOM backbone (seeded)' or 'FILE (sha256 0123456789ab…)' for a checkpoint's backbone record."""
    weights = record.get("weights") or {}
    if record_is_random(weights):
        return "a RANDOM backbone (seeded)"
    return f"{weights.get('path') or weights.get('source') or '?'} (sha256 {str(record.get('sha256'))[:12]}…)"


@dataclass(frozen=True)
class WeightsSource:
    kind: str        # 'random' | 'file' | 'folder' | 'hub'
    path: str = ""   # file or folder path, or the hub repo id
    # what was resolved for a backbone (data-set check, normalisation), so the steps of one load
    # (locating, the trainer's input recipe, loading) resolve it once between them
    _resolved: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_random(self) -> bool:
        return self.kind == RANDOM_SETTING

    def check_dataset_for(self, spec: BackboneSpec) -> None:
        """Refuse a source named for another pre-training data set than `spec`'s (SAT-493M weights for an
        LVD-1689M row: same shapes, other normalisation), by name, before any reading."""
        if ("dataset", spec.name) not in self._resolved:
            check_dataset(spec, self.path)
            self._resolved["dataset", spec.name] = True

    def normalization(self, spec: BackboneSpec) -> Normalization:
        """The input normalisation this source was trained with (`normalization.source_normalization`),
        once its data set is checked against `spec`'s."""
        if ("normalization", spec.name) not in self._resolved:
            self.check_dataset_for(spec)
            self._resolved["normalization", spec.name] = source_normalization(spec, self.kind, self.path)
        return self._resolved["normalization", spec.name]

    def describe(self) -> str:
        return "RANDOM initialisation (no pretrained weights)" if self.is_random else f"{self.kind} {self.path}"


def _not_found(spec: BackboneSpec, looked: str) -> WeightsError:
    return WeightsError(
        f"No weights for backbone {spec.name} ({spec.label}). Looked in: {looked}. Expected one of: "
        f"{', '.join(spec.weight_files)}. Get them from {spec.family_ops.where_to_get}, then "
        f"`export {WEIGHTS_ENV_VAR}=/folder/with/weights` (or the file itself). For tests and demos "
        f"only, `export {WEIGHTS_ENV_VAR}=random` trains on a RANDOM frozen backbone.")


def locate_weights(spec: BackboneSpec, setting: Optional[str] = None) -> WeightsSource:
    """Resolve `nnUNet_dino_weights` (or `setting`) to a source for `spec`, or raise WeightsError."""
    setting = os.environ.get(WEIGHTS_ENV_VAR, "") if setting is None else setting
    setting = setting.strip()
    if not setting:
        raise _not_found(spec, f"nowhere: {WEIGHTS_ENV_VAR} is not set")
    if is_random_setting(setting):
        return WeightsSource(RANDOM_SETTING)
    if setting.lower() == "hub":
        if not spec.timm_hub_id:
            raise WeightsError(f"backbone {spec.name} has no hub id; set {WEIGHTS_ENV_VAR} to a local "
                               f"weights file or folder instead")
        return WeightsSource("hub", spec.timm_hub_id)
    path = os.path.abspath(os.path.expanduser(setting))
    if os.path.isfile(path):
        return _checked(WeightsSource("file", path), spec)
    if not os.path.isdir(path):
        raise WeightsError(f"{WEIGHTS_ENV_VAR}={setting!r}: {path} does not exist. Point it at a folder "
                           f"holding the published weights ({', '.join(spec.weight_files)}), at one weights "
                           f"file, or set it to 'random' (tests and demos only). Get the weights from "
                           f"{spec.family_ops.where_to_get}.")
    if os.path.isfile(os.path.join(path, "config.json")):
        return _checked(WeightsSource("folder", path), spec)
    for pattern in spec.weight_files:
        for match in sorted(glob.glob(os.path.join(glob.escape(path), pattern))):
            if os.path.isfile(match):
                return WeightsSource("file", match)
            if os.path.isfile(os.path.join(match, "config.json")):
                return WeightsSource("folder", match)
    raise _not_found(spec, path)


def _checked(source: WeightsSource, spec: BackboneSpec) -> WeightsSource:
    """A source the user named for `spec`: refused early if its name says another data set."""
    source.check_dataset_for(spec)
    return source


# --- reading -----------------------------------------------------------------------------------
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since 1.6
_PICKLE_MAGICS = tuple(bytes([0x80, protocol]) for protocol in range(2, 6))  # legacy torch.save, pickle.dump


def torch_load(path: str, mmap: bool = False):
    """torch.load(weights_only=True) that tells garbage, a broken file and pickled code apart."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith(_ZIP_MAGIC) and not head.startswith(_PICKLE_MAGICS):
        raise WeightsError(f"{path} is not a checkpoint: it is neither a PyTorch file (zip) nor a pickle "
                           f"({'empty file' if not head else 'unknown content'}). It is probably corrupt or "
                           f"another kind of file: download the weights again.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise WeightsError(
            f"Refusing to load {path}: it contains pickled Python objects, not only tensors, and loading "
            f"it could execute code. nnunet-dino loads tensors only (torch.load(weights_only=True)). Use "
            f"the published weights file, or re-save a plain state_dict / .safetensors. ({_unpickling_reason(e)})"
        ) from None
    except RuntimeError as e:
        if mmap and "mmap" in str(e):
            raise  # a legacy file: the caller loads it without mmap
        raise _unreadable(path, e) from None
    except Exception as e:  # truncated zip, bad header, ...
        raise _unreadable(path, e) from None


def _unreadable(path: str, why) -> WeightsError:
    """`why`: the exception that reading raised, or what a header check found."""
    if isinstance(why, Exception):
        why = f"{type(why).__name__}: {str(why).splitlines()[0]}"
    return WeightsError(f"Could not read weights file {path} ({why}). It is probably truncated or corrupt: "
                        f"download it again.")


SAFETENSORS_HEADER_LIMIT = 100 * 1024 * 1024  # the format's own limit on the JSON header


def _safetensors_shapes(path: str) -> Dict[str, torch.Tensor]:
    """Meta tensors named and shaped as in the file's header; the data must end where the file does."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _unreadable(path, f"{size} bytes, shorter than a safetensors header")
        (length,) = struct.unpack("<Q", head)
        if length > min(size - 8, SAFETENSORS_HEADER_LIMIT):
            raise _unreadable(path, f"header length {length} does not fit the file's {size} bytes")
        try:
            header = json.loads(f.read(length))
        except ValueError as e:
            raise _unreadable(path, f"header is not JSON: {e}") from None
    header.pop("__metadata__", None)
    try:
        end = max((int(entry["data_offsets"][1]) for entry in header.values()), default=0)
        state = {name: torch.empty(entry["shape"], device="meta") for name, entry in header.items()}
    except (KeyError, TypeError, IndexError, ValueError, RuntimeError) as e:
        raise _unreadable(path, f"malformed header: {type(e).__name__}") from None
    if 8 + length + end != size:
        raise _unreadable(path, f"the header describes {8 + length + end} bytes, the file has {size}")
    return state


def read_file(path: str, dry: bool = False) -> Dict[str, torch.Tensor]:
    """A weights file's tensors. `dry`: names and shapes without loading the data (a safetensors header
    as meta tensors, a PyTorch file memory-mapped), for the cheap check before anything is written."""
    if path.endswith(".safetensors"):
        if dry:
            return _safetensors_shapes(path)
        try:
            from safetensors.torch import load_file
            return unwrap_checkpoint(load_file(path), path)
        except Exception as e:  # truncated, bad header, ...
            raise _unreadable(path, e) from None
    if not dry:
        return unwrap_checkpoint(torch_load(path), path)
    try:
        state = torch_load(path, mmap=True)
    except WeightsError:
        raise
    except RuntimeError:  # legacy (non-zip) torch files cannot be memory-mapped
        state = torch_load(path)
    return unwrap_checkpoint(state, path)


def _unpickling_reason(error: Exception) -> str:
    """torch's refusal names the offending global deep in a long how-to-bypass text; keep just that."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    return text.strip().split(". ")[0].splitlines()[0]


def _read_json(path: str, key: Optional[str] = None):
    try:
        with open(path) as f:
            data = json.load(f)
        return data[key] if key else data
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise WeightsError(f"Could not read {path} ({type(e).__name__}: {e}). The model folder is probably "
                           f"incomplete or corrupt: download it again.") from None


def folder_files(path: str) -> Tuple[list, dict]:
    """(weights files, config.json) of a transformers model folder: its shards or its one file."""
    config = _read_json(os.path.join(path, "config.json"))
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index):
        shards = sorted(set(_read_json(index, "weight_map").values()))
        missing = [s for s in shards if not os.path.isfile(os.path.join(path, s))]
        if missing:
            raise WeightsError(f"The model folder {path} is incomplete: shard(s) {', '.join(missing)} listed in "
                               f"model.safetensors.index.json are missing. Download them again.")
        return [os.path.join(path, s) for s in shards], config
    for name in ("model.safetensors", "pytorch_model.bin"):
        if os.path.isfile(os.path.join(path, name)):
            return [os.path.join(path, name)], config
    raise WeightsError(f"The model folder {path} has config.json but no model.safetensors, sharded index or "
                       f"pytorch_model.bin. Download the weights files too.")


def read_source(source: WeightsSource, dry: bool = False) -> Tuple[Dict[str, torch.Tensor], Optional[dict]]:
    """(tensors, config.json of a model folder or None); `dry` as in `read_file` (file and folder sources)."""
    if source.kind == "file":
        return read_file(source.path, dry), None
    if source.kind == "folder":
        files, config = folder_files(source.path)
        state = {}
        for file in files:
            state.update(read_file(file, dry))
        return state, config
    if source.kind == "hub" and not dry:
        try:
            from huggingface_hub import hf_hub_download
            return read_file(hf_hub_download(source.path, "model.safetensors")), None
        except WeightsError:
            raise
        except Exception as e:
            raise WeightsError(f"Could not download {source.path} from the Hugging Face hub ({type(e).__name__}). "
                               f"Offline machines: download the file elsewhere and point {WEIGHTS_ENV_VAR} at it.") from None
    raise WeightsError(f"cannot read weights from a {source.kind} source")


# --- converting and loading ----------------------------------------------------------------------
def _detect(state: Dict[str, torch.Tensor]) -> Tuple[Optional[str], Optional[str]]:
    for family in families():
        fmt = family.detect_format(state)
        if fmt:
            return family.name, fmt
    return None, None


def convert_to_timm(state: Dict[str, torch.Tensor], spec: BackboneSpec, vit) -> Tuple[Dict[str, torch.Tensor], str]:
    """Any supported layout -> timm keys for `vit`; returns (state, format). The state is a `NotedState`:
    how the file was unwrapped and the architecture variant its keys reveal (`layouts`)."""
    notes = getattr(state, "notes", ())
    family, fmt = _detect(state)
    if family is None:
        return NotedState(state, notes), "unknown"  # the strict check explains what does not fit
    if family != spec.family:
        raise WeightsError(f"These are {family.upper()} weights, but the backbone is {spec.label}. Give "
                           f"{spec.family.upper()} weights (e.g. {spec.weight_files[0]}) or use a {family.upper()} trainer.")
    converted, variant = complete_variant(spec.family_ops.to_timm(state, fmt, vit), vit)
    return NotedState(converted, notes, variant), fmt


def _describe_config(config: Optional[dict]) -> str:
    if not config:
        return ""
    sizes = ", ".join(f"{k} {config[k]}" for k in ("hidden_size", "num_hidden_layers", "num_attention_heads")
                      if k in config)
    return f" Its config.json says {config.get('model_type', 'an unknown model type')}: {sizes}." if sizes else ""


def fit_state(state: Dict[str, torch.Tensor], spec: BackboneSpec, vit, origin: str,
              config: Optional[dict] = None) -> Tuple[Dict[str, torch.Tensor], str]:
    """`state` (any supported layout) in timm's keys for `vit`, and its format; WeightsError unless it
    holds exactly `vit`'s tensors and shapes. `vit` may be on the meta device (the cheap check)."""
    try:
        converted, fmt = convert_to_timm(state, spec, vit)
    except ValueError as e:  # a layout we recognise but cannot represent exactly
        raise WeightsError(f"Cannot load {origin} into {spec.label}: {e}") from None
    check_state_dict(converted, vit, spec, origin, _describe_config(config))
    return converted, fmt


def check_state_dict(state: Dict[str, torch.Tensor], vit, spec: BackboneSpec, origin: str,
                     note: str = "") -> None:
    expected = vit.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                    for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or shapes:
        def few(items):
            return ", ".join(items[:8]) + (f" (+{len(items) - 8} more)" if len(items) > 8 else "") if items else "none"
        raise WeightsError(
            f"The weights in {origin} do not fit backbone {spec.label}. Missing keys: {few(missing)}. "
            f"Unexpected keys: {few(unexpected)}. Mis-shaped: {few(shapes)}.{note} Is the file for another "
            f"model size? Expected a file like {spec.weight_files[0]}.")


def load_backbone_weights(backbone, source: WeightsSource) -> dict:
    """Load `source` into a FrozenDinoBackbone, strictly. Returns what was loaded (for plans/logs)."""
    spec = backbone.spec
    info = {"backbone": spec.name, "source": source.kind, "path": source.path}
    info["normalization"] = source.normalization(spec).record()
    if source.is_random:  # seeded, so a slim checkpoint can rebuild the very same random backbone
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_BACKBONE_SEED)
            backbone.vit.load_state_dict(build_timm_vit(spec).state_dict())
        info.update(format=RANDOM_SETTING, seed=RANDOM_BACKBONE_SEED, pos_embed_resize=backbone.pos_embed_resize)
        return _record_fingerprint(backbone, info)
    state, hf_config = read_source(source)
    state, fmt = fit_state(state, spec, backbone.vit, source.path, hf_config)
    backbone.vit.load_state_dict(state, strict=True)
    # reproduce the source's own position-embedding resize at other input sizes
    backbone.pos_embed_resize = spec.family_ops.pos_embed_rule(fmt, spec, backbone.pos_embed_resize)
    info.update(format=fmt, pos_embed_resize=backbone.pos_embed_resize, variant=state.variant,
                notes=list(state.notes))
    return _record_fingerprint(backbone, info)


def _record_fingerprint(backbone, info: dict) -> dict:
    backbone.loaded_fingerprint = info["sha256"] = backbone.fingerprint()
    backbone.weights_info = info
    return info
