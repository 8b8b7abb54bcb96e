"""The backbone registry: every supported DINO encoder is one row of data, and every DINO
generation one `BackboneFamily` object.

A row names the timm constructor that builds the architecture, the published weight file names
that `nnUNet_dino_weights` is searched for, the Hugging Face ids, and the default feature taps
(0-based block indices) the papers use for that depth. A family holds what differs between DINO
generations side by side -- token embedding, block call, checkpoint layouts and their converters,
the position-embedding rule -- so no other module branches on the family's name.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

from .errors import WeightsError
from .normalization import DATASET_TAGS, IMAGENET, Normalization, dataset_tag

_REGISTRY: Dict[str, "BackboneSpec"] = {}
_FAMILIES: Dict[str, "BackboneFamily"] = {}


@dataclass(frozen=True)
class BackboneFamily:
    """One DINO generation. Each callable is a pure function of its arguments:

    embed_tokens(vit, x, pos_embed_resize) -> (tokens, rope or None, grid); run_block(block, tokens, rope);
    detect_format(state) -> 'hf' | 'meta' | 'timm' | None; to_timm(state, fmt, vit) -> timm state dict;
    pos_embed_rule(fmt, spec, current) -> the resize rule that reproduces the weights' source;
    timm_kwargs(spec) -> extra `timm.create_model` arguments;
    timm_to_meta(state, vit) -> the official (Meta) layout of a timm state dict (`weights convert`);
    timm_to_hf(state, spec, vit) -> (transformers state dict, config.json dict);
    rope_table(vit, grid, rescale) -> the RoPE table of a patch grid, its coordinates scaled by a fresh
    log-uniform factor in [1/rescale, rescale] when given (RoPE families only: the train-mode
    `rope_rescale` augmentation needs it)."""
    name: str
    where_to_get: str
    embed_tokens: Callable
    run_block: Callable
    detect_format: Callable[[dict], Optional[str]]
    to_timm: Callable
    pos_embed_rule: Callable
    timm_kwargs: Callable = lambda spec: {}
    pos_embed_modes: Tuple[str, ...] = ()   # accepted `pos_embed_resize` values, the default first (empty: not used)
    timm_to_meta: Optional[Callable] = None
    timm_to_hf: Optional[Callable] = None
    rope_table: Optional[Callable] = None   # (vit, grid, rescale) -> RoPE table; None: no RoPE (no rope_rescale)


    @property
    def default_pos_embed_resize(self) -> Optional[str]:
        """The position-embedding resize rule of an encoder built before weights are loaded (None: the family
        has no learned position embedding to resize)."""
        return self.pos_embed_modes[0] if self.pos_embed_modes else None


def register_family(family: BackboneFamily) -> BackboneFamily:
    _FAMILIES[family.name] = family
    return family


def get_family(name: str) -> BackboneFamily:
    return _FAMILIES[name]


def families() -> Tuple[BackboneFamily, ...]:
    return tuple(_FAMILIES.values())


@dataclass(frozen=True)
class BackboneSpec:
    name: str                       # our id, the official hub entry name (e.g. 'dinov3_vits16')
    family: str                     # 'dinov2' (learned abs. pos-embed, patch 14) or 'dinov3' (RoPE, patch 16)
    timm_name: str                  # timm constructor building the architecture (pretrained=False)
    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int
    num_register_tokens: int
    default_taps: Tuple[int, ...]
    weight_files: Tuple[str, ...]   # glob patterns of published files/folders, searched in order
    hf_repo: str = ""               # transformers model id (facebook/...)
    timm_hub_id: str = ""           # timm weights on the HF hub, used for `nnUNet_dino_weights=hub`
    native_grid: int = 0            # DINOv2 pos-embed grid of the published weights (518/14 = 37)
    timm_overrides: Tuple[Tuple[str, object], ...] = field(default=())  # e.g. tiny test configs
    normalization: Optional[Normalization] = IMAGENET  # None: read from the model's preprocessor config
    pretraining: str = ""           # pre-training data ('lvd142m', 'lvd1689m', 'sat493m', ...)
    licence: str = ""               # of the published weights

    @property
    def family_ops(self) -> BackboneFamily:
        return get_family(self.family)

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + self.num_register_tokens

    @property
    def label(self) -> str:
        return f"{self.family.upper()} ViT ({self.name}: dim {self.embed_dim}, {self.depth} blocks, patch {self.patch_size})"

    def variant(self, name: str, **arch) -> "BackboneSpec":
        """A derived architecture (used for tiny test models): same family, other sizes. Other
        keywords go to `timm.create_model`; for DINOv2, `img_size` sets the pos-embed grid
        (`native_grid`), so both always agree."""
        taps = arch.pop("default_taps", None)
        depth = arch.get("depth", self.depth)
        if taps is None:
            taps = tuple(sorted({max(0, round(depth * k / 4) - 1) for k in (1, 2, 3, 4)}))
        fields = {k: v for k, v in arch.items() if k in ("embed_dim", "depth", "num_heads", "native_grid")}
        if self.native_grid and "img_size" in arch:  # build_timm_vit derives img_size from native_grid
            fields["native_grid"] = arch.pop("img_size") // self.patch_size
        arch.pop("native_grid", None)
        overrides = dict(self.timm_overrides)
        overrides.update(arch)
        return dataclasses.replace(self, name=name, default_taps=tuple(taps), weight_files=(f"{name}*",),
                                   hf_repo="", timm_hub_id="", timm_overrides=tuple(overrides.items()), **fields)


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    if spec.name in _REGISTRY and _REGISTRY[spec.name] != spec:
        raise ValueError(f"backbone {spec.name!r} is already registered with another definition")
    _REGISTRY[spec.name] = spec
    return spec


def get_backbone_spec(name: str) -> BackboneSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown DINO backbone {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def list_backbones() -> Tuple[str, ...]:
    return tuple(_REGISTRY)


def check_dataset(spec: BackboneSpec, path: str) -> None:
    """Refuse SAT-493M weights for an LVD-1689M backbone row and vice versa (same shapes, other data); the
    message names the rows that take them."""
    tag = dataset_tag(path)
    if tag and spec.pretraining in DATASET_TAGS and tag != spec.pretraining:
        rows = [name for name, row in _REGISTRY.items() if row.pretraining == tag and row.timm_name == spec.timm_name]
        raise WeightsError(f"{path} holds {tag.upper()} weights, but backbone {spec.name} is the "
                           f"{spec.pretraining.upper()} model (another input normalisation). Use backbone "
                           f"{' or '.join(rows) or 'a ' + tag.upper() + ' row'} for these weights, or the "
                           f"{spec.pretraining.upper()} file.")
