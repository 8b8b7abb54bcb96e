"""DINO backbones: registry, frozen feature extractor, weight loading (the only place that knows
timm internals and checkpoint formats)."""
from .registry import BackboneSpec, get_backbone_spec, list_backbones, register_backbone
from .frozen import FrozenDinoBackbone
from .weights import (WEIGHTS_ENV_VAR, WeightsError, WeightsSource, load_backbone_weights,
                      locate_weights)

__all__ = ["BackboneSpec", "get_backbone_spec", "list_backbones", "register_backbone",
           "FrozenDinoBackbone", "WEIGHTS_ENV_VAR", "WeightsError", "WeightsSource",
           "load_backbone_weights", "locate_weights"]
