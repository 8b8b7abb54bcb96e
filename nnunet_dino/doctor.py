"""`nnunet-dino doctor`: what a user (or a bug report) needs to know about this installation."""
from __future__ import annotations

import importlib.metadata as md
import os
import platform
from typing import Dict, List, Optional, Tuple


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def trainer_names() -> List[str]:
    from .training import trainers
    return list(trainers.__all__)


def resolve_trainers() -> List[Tuple[str, str]]:
    """Each plugin trainer as nnU-Net's own resolver finds it (name, module or error)."""
    import contextlib
    import io
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    rows = []
    for name in trainer_names():
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the resolver prints every folder it scans
                cls = recursive_find_trainer_class_by_name(name)
            rows.append((name, f"found ({cls.__module__})"))
        except Exception as e:  # noqa: BLE001 - reported, not raised
            rows.append((name, f"NOT FOUND: {str(e).splitlines()[0][:120]}"))
    return rows


def _fit_status(spec, source, read: Dict[object, object]) -> Tuple[str, bool]:
    """(status, whether the source serves `spec`); `read` caches each source's (state, config) or error."""
    from .backbones import WeightsError
    from .backbones.weights import read_source
    from .backbones.weights_check import check_fits
    if source not in read:
        try:
            read[source] = read_source(source, dry=True)
        except WeightsError as error:
            read[source] = error
    try:
        if isinstance(read[source], WeightsError):
            raise read[source]
        state, config = read[source]
        check_fits(state, spec, source.path, config)
    except WeightsError as error:
        return f"UNUSABLE: {error}", False
    return f"found: {source.describe()}", True


def missing_weights_path(setting: Optional[str]) -> Optional[str]:
    """The absolute path `nnUNet_dino_weights` names when it does not exist (a typo), else None."""
    from .backbones import is_random_setting
    setting = (setting or "").strip()
    if not setting or is_random_setting(setting) or setting.lower() == "hub":
        return None
    path = os.path.abspath(os.path.expanduser(setting))
    return None if os.path.exists(path) else path


def backbone_weights() -> List[Tuple[str, str, str, bool]]:
    """(backbone, status, located source or '', whether it serves the backbone) per backbone. Found
    files are checked cheaply (header, key names and shapes; see backbones.weights_check): a corrupt,
    truncated or other-model file is not reported as found weights."""
    from .backbones import WEIGHTS_ENV_VAR, WeightsError, get_backbone_spec, list_backbones, locate_weights
    read: Dict[object, object] = {}
    rows = []
    one_file = os.path.isfile(os.path.expanduser(os.environ.get(WEIGHTS_ENV_VAR, "").strip()))
    missing = missing_weights_path(os.environ.get(WEIGHTS_ENV_VAR))
    for name in list_backbones():
        spec = get_backbone_spec(name)
        try:
            source = locate_weights(spec)
        except WeightsError as error:  # a single file named for another model is refused when located
            status = f"UNUSABLE: {error}" if one_file else "no weights found"
            rows.append((name, f"no weights: {missing} does not exist" if missing else status, "", False))
            continue
        if source.kind in ("file", "folder"):
            status, serves = _fit_status(spec, source, read)
            rows.append((name, status, source.describe(), serves))
        else:
            rows.append((name, source.describe(), "", True))
    return rows


def files_served(rows: List[Tuple[str, str, str, bool]]) -> List[str]:
    """One line per found weights file or folder: the backbones it serves."""
    served: Dict[str, List[str]] = {}
    for name, _, source, serves in rows:
        if source:
            served.setdefault(source, []).extend([name] if serves else [])
    return [f"  {source}: " + (", ".join(names) if names else "serves NO backbone (unusable, see above)")
            for source, names in served.items()]


def report() -> Tuple[str, bool]:
    """The doctor's text, and whether every trainer was found."""
    import torch
    from ._autoregister import ENV_VAR, trainer_folder
    from .backbones import WEIGHTS_ENV_VAR, is_random_setting
    lines = [f"nnunet-dino {_version('nnunet-dino')}  (python {platform.python_version()}, {platform.platform()})",
             "versions: " + ", ".join(f"{d} {_version(d)}" for d in
                                      ("torch", "nnunetv2", "timm", "dynamic-network-architectures",
                                       "batchgeneratorsv2", "transformers"))]
    if torch.cuda.is_available():
        lines.append(f"device: cuda ({torch.cuda.get_device_name(0)}, bf16 "
                     f"{'yes' if torch.cuda.is_bf16_supported() else 'no'}), {torch.cuda.device_count()} GPU(s)")
    else:
        lines.append(f"device: cpu only ({os.cpu_count()} cores); train with `-device cpu`")
    from .networks.base import cpu_has_native_bf16
    lines.append("CPU precision of the plugin networks (cpu_precision=auto): " +
                 ("bf16 autocast (native bf16 on this CPU)" if cpu_has_native_bf16() else "fp32 (no native bf16)"))
    folder = trainer_folder()
    listed = folder in os.environ.get(ENV_VAR, "").split(os.pathsep)
    lines.append(f"{ENV_VAR}: {os.environ.get(ENV_VAR, '(unset)')}  -> plugin folder "
                 f"{'registered' if listed else 'NOT registered: run `eval $(nnunet-dino env)`'}")
    lines.append("trainers (resolved by nnU-Net's recursive_find_trainer_class_by_name):")
    rows = resolve_trainers()
    lines += [f"  {name:<34} {status}" for name, status in rows]
    setting = os.environ.get(WEIGHTS_ENV_VAR)
    lines.append(f"weights: {WEIGHTS_ENV_VAR}={setting if setting else '(unset: training refuses to start)'}")
    if is_random_setting(setting):
        lines.append("  RANDOM frozen backbones: for tests and demos only, results mean nothing clinically")
    missing = missing_weights_path(setting)
    if missing:
        lines.append(f"  {missing} DOES NOT EXIST: check the path for a typo (training and prediction refuse it)")
    lines.append("backbones (each found file checked: readable, and key names and shapes fit the backbone):")
    weights = backbone_weights()
    lines += [f"  {name:<22} {status}" for name, status, _, _ in weights]
    if any(source for _, _, source, _ in weights):
        lines += ["weights files and the backbones they serve:"] + files_served(weights)
    return "\n".join(lines), all(status.startswith("found") for _, status in rows)
