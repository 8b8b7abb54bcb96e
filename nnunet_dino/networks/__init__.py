"""Segmentation networks around a frozen DINO encoder, one file per paper, each ending with its family's row
(registry.py); shared blocks apart. The imports below fix the families' order in every table."""
from .base import DinoSegmentationNetwork, InputToRGB, count_parameters, pad_to_multiple
from .segdino import SegDINO
from .segdino_v2 import SegDINOv2
from .udfa import UDFA
from .dino_unet import DinoUNet
from .registry import NetworkFamily, get_network_family, network_families

__all__ = ["DinoSegmentationNetwork", "InputToRGB", "count_parameters", "pad_to_multiple",
           "DinoUNet", "SegDINO", "SegDINOv2", "UDFA", "NetworkFamily", "get_network_family", "network_families"]
