"""Shared helpers for the weight-loading tests (kept out of conftest so tests import them)."""
from __future__ import annotations

import torch
from torch import nn

from nnunet_dino.backbones import BackboneSpec, get_backbone_spec
from nnunet_dino.bench.gpu_check import TINY_BACKBONE as TINY_ARCH


def tiny_spec(base: str = "dinov2_vits14", **arch) -> BackboneSpec:
    """A dim-64, 4-block, 4-head variant of a registered backbone (`arch` overrides / adds)."""
    return get_backbone_spec(base).variant(f"tiny_{base}", **{**TINY_ARCH, **arch})


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Overwrite EVERY parameter with random values, in place; returns the module in eval().

    Defaults such as a 1e-5 layer scale or zero biases would hide mapping errors (a swapped or dropped
    tensor would change nothing), so layer scales get std 0.5 and norms random affine maps. Buffers
    are left alone: in these models they are derived tables (RoPE frequencies).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            owner = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
            if isinstance(owner, nn.LayerNorm) and name.endswith("weight"):
                param.copy_(1.0 + 0.2 * noise)
            elif "gamma" in name or "lambda" in name:  # layer scale
                param.copy_(0.5 * noise)
            else:
                param.copy_(0.2 * noise)
    return module.eval()


def hf_dinov3_to_meta_layout(model, k_bias_third=None):
    """A transformers DINOv3ViTModel's weights in Meta's published `.pth` layout (written here,
    independently of the loader). The k third of qkv.bias is zero, as is its bias_mask; a model
    without query/value biases gets no qkv.bias at all."""
    hf, dim = model.state_dict(), model.config.hidden_size
    gated = model.config.use_gated_mlp
    meta = {"cls_token": hf["embeddings.cls_token"], "storage_tokens": hf["embeddings.register_tokens"],
            "mask_token": torch.randn(1, dim), "norm.weight": hf["norm.weight"], "norm.bias": hf["norm.bias"],
            "patch_embed.proj.weight": hf["embeddings.patch_embeddings.weight"],
            "patch_embed.proj.bias": hf["embeddings.patch_embeddings.bias"],
            "rope_embed.periods": 1.0 / model.rope_embeddings.inv_freq}
    mlp = {"gate_proj": "w1", "up_proj": "w2", "down_proj": "w3"} if gated else {"up_proj": "fc1", "down_proj": "fc2"}
    for i in range(model.config.num_hidden_layers):
        h, m = f"model.layer.{i}.", f"blocks.{i}."
        k_bias = torch.zeros(dim) if k_bias_third is None else k_bias_third
        meta[m + "attn.qkv.weight"] = torch.cat([hf[h + f"attention.{n}_proj.weight"] for n in "qkv"])
        if h + "attention.q_proj.bias" in hf:  # absent in models trained without q/v biases (MedDINOv3)
            meta[m + "attn.qkv.bias"] = torch.cat(
                [hf[h + "attention.q_proj.bias"], k_bias, hf[h + "attention.v_proj.bias"]])
            meta[m + "attn.qkv.bias_mask"] = torch.cat([torch.ones(dim), torch.zeros(dim), torch.ones(dim)])
        meta[m + "attn.proj.weight"] = hf[h + "attention.o_proj.weight"]
        meta[m + "attn.proj.bias"] = hf[h + "attention.o_proj.bias"]
        meta[m + "ls1.gamma"] = hf[h + "layer_scale1.lambda1"]
        meta[m + "ls2.gamma"] = hf[h + "layer_scale2.lambda1"]
        for part in ("weight", "bias"):
            for norm in ("norm1", "norm2"):
                meta[m + f"{norm}.{part}"] = hf[h + f"{norm}.{part}"]
            for hf_name, meta_name in mlp.items():
                meta[m + f"mlp.{meta_name}.{part}"] = hf[h + f"mlp.{hf_name}.{part}"]
    return meta
