"""Domain-adapted DINO weights for medical images: rows of the two DINO families.

- RAD-DINO (microsoft/rad-dino): a DINOv2 ViT-B/14 without registers trained further on chest
  X-rays; a transformers `Dinov2Model` folder whose `preprocessor_config.json` holds its
  normalisation (its `backbone_compatible.safetensors` is in the official DINOv2 layout and reads
  the same file when it lies beside it).
- MedDINOv3 (ricklisz/MedDINOv3, CT-3M): a DINOv3 ViT-B/16 trained further on CT slices, without
  query/value biases and with LayerNorm eps 1e-6; its file is a training checkpoint (`teacher`,
  `backbone.*`, heads). Its published name `model.pth` is too generic to search for: rename it
  `meddinov3_vitb16_ct3m.pth` (or keep the downloaded folder `MedDINOv3-ViTB-16-CT-3M/`) or point
  `nnUNet_dino_weights` at the file itself.
"""
from __future__ import annotations

import functools

from torch import nn

from .normalization import MEDDINOV3_CT
from .registry import BackboneSpec, register_backbone

RAD_DINO = register_backbone(BackboneSpec(
    name="rad_dino_vitb14", family="dinov2", timm_name="vit_base_patch14_dinov2", embed_dim=768, depth=12,
    num_heads=12, patch_size=14, num_register_tokens=0, default_taps=(2, 5, 8, 11), native_grid=37,
    weight_files=("rad-dino", "rad_dino*", "microsoft--rad-dino*"), hf_repo="microsoft/rad-dino",
    normalization=None, pretraining="cxr",
    licence="MIT per the current model card (earlier revisions: MSRLA); see the model card"))

MEDDINOV3 = register_backbone(BackboneSpec(
    name="meddinov3_vitb16", family="dinov3", timm_name="vit_base_patch16_dinov3", embed_dim=768, depth=12,
    num_heads=12, patch_size=16, num_register_tokens=4, default_taps=(2, 5, 8, 11),
    weight_files=("meddinov3*.pth", "MedDINOv3*.pth", "meddinov3*.safetensors", "MedDINOv3*/model.pth",
                  "meddinov3*/model.pth"),
    hf_repo="ricklisz123/MedDINOv3-ViTB-16-CT-3M",
    timm_overrides=(("norm_layer", functools.partial(nn.LayerNorm, eps=1e-6)),),
    normalization=MEDDINOV3_CT, pretraining="ct3m",
    licence="see the model card (ricklisz/MedDINOv3 repository licence; not verified here)"))
