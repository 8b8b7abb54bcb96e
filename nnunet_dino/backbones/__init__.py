"""DINO backbones: registry, frozen feature extractor, weight loading (the only place that knows
timm internals and checkpoint formats). Importing the package registers every family."""
from .registry import BackboneFamily, BackboneSpec, families, get_backbone_spec, get_family, list_backbones, register_backbone
from . import dinov2, dinov3, medical  # noqa: F401,E402  (each module registers its family and/or its rows)
from .frozen import FrozenDinoBackbone
from .weights import (WEIGHTS_ENV_VAR, WeightsError, WeightsSource, is_random_setting, load_backbone_weights,
                      locate_weights, record_is_random)

__all__ = ["BackboneFamily", "BackboneSpec", "families", "get_backbone_spec", "get_family", "list_backbones",
           "register_backbone", "FrozenDinoBackbone", "WEIGHTS_ENV_VAR", "WeightsError", "WeightsSource",
           "is_random_setting", "load_backbone_weights", "locate_weights", "record_is_random"]
