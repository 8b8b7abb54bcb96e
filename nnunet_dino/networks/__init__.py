"""Segmentation networks around a frozen DINO encoder, one file per paper; shared blocks apart."""
from .base import DinoSegmentationNetwork, InputToRGB, count_parameters, pad_to_multiple
from .dino_unet import DinoUNet
from .segdino import SegDINO
from .udfa import UDFA

__all__ = ["DinoSegmentationNetwork", "InputToRGB", "count_parameters", "pad_to_multiple",
           "DinoUNet", "SegDINO", "UDFA"]
