"""DINOv3 family (Siméoni et al. 2025): RoPE positions, 4 storage tokens, patch 16.

timm builds these as `Eva` models. We use the `_qkvb` variants (query/value biases present) so
that the biases of official checkpoints are loaded rather than dropped. timm has no key bias: the
official layout masks it to zero (`bias_mask`) and transformers files carry none or zeros. A
non-zero one is refused, not dropped: RoPE rotates keys after the bias, so it would change
attention (without RoPE it would add the same q.b to a whole logit row and cancel).
"""
from __future__ import annotations

import math
import re
from typing import Dict, Optional, Tuple

import torch

from .hf_layout import rename_block_params, split_hf_state
from .normalization import IMAGENET, SAT493M
from .registry import BackboneFamily, BackboneSpec, register_backbone, register_family

_SIZES = (  # (id, timm size word, dim, depth, heads, taps, hash)
    ("s", "small", 384, 12, 6, (2, 5, 8, 11), "08c60483"),
    ("splus", "small_plus", 384, 12, 6, (2, 5, 8, 11), "4057cbaa"),
    ("b", "base", 768, 12, 12, (2, 5, 8, 11), "73cec8be"),
    ("l", "large", 1024, 24, 16, (4, 11, 17, 23), "8aa4cbdd"),
    ("hplus", "huge_plus", 1280, 32, 20, (7, 15, 23, 31), "7c1da9a5"),
    ("7b", "7b", 4096, 40, 32, (9, 19, 29, 39), "a955f4ea"),
)
LICENCE = "DINOv3 License (Meta; see the model card)"
_SAT = {"l": "eadcf0ff", "7b": "a6675841"}  # the two sizes with SAT-493M weights, and their file hashes


def _row(name: str, size: str, word: str, dim: int, depth: int, heads: int, taps, data: str, file_hash: str,
         normalization) -> BackboneSpec:
    """One published DINOv3 model: `data` is its pre-training set ('lvd1689m' or 'sat493m'). The file
    name patterns name the data set, so neither row's search finds the other's files."""
    meta, timm_name = f"dinov3_vit{size}16", f"vit_{word}_patch16_dinov3" + ("" if size == "7b" else "_qkvb")
    return register_backbone(BackboneSpec(
        name=name, family="dinov3", timm_name=timm_name, embed_dim=dim, depth=depth, num_heads=heads,
        patch_size=16, num_register_tokens=4, default_taps=taps,
        weight_files=(f"{meta}_pretrain_{data}-{file_hash}.pth", f"{meta}_pretrain_{data}-*.pth",
                      f"{timm_name}.{data}", f"{timm_name}.{data}.safetensors", f"dinov3-vit{size}16-pretrain-{data}"),
        hf_repo=f"facebook/dinov3-vit{size}16-pretrain-{data}", timm_hub_id=f"timm/{timm_name}.{data}",
        normalization=normalization, pretraining=data, licence=LICENCE))


for _size, _word, _dim, _depth, _heads, _taps, _hash in _SIZES:
    _row(f"dinov3_vit{_size}16", _size, _word, _dim, _depth, _heads, _taps, "lvd1689m", _hash, IMAGENET)
    if _size in _SAT:
        _row(f"dinov3_vit{_size}16_sat493m", _size, _word, _dim, _depth, _heads, _taps, "sat493m", _SAT[_size], SAT493M)


def embed_tokens(vit, x: torch.Tensor, pos_embed_resize: str = ""):
    """Image (B,3,H,W) -> tokens (B, 5 + h*w, D), RoPE table for the (h, w) grid, grid. What timm's Eva
    `forward_intermediates` does before its blocks, written with public attributes (its `_pos_embed` is
    private): DINOv3 has no absolute position embedding, and pos/patch dropout are off in an eval() ViT."""
    patches = vit.patch_embed(x)  # (B, h, w, D) with dynamic_img_size
    b, h, w, d = patches.shape
    if vit.pos_embed is not None:
        raise ValueError("a DINOv3 ViT has no absolute position embedding; this timm model has one")
    prefix = [t.expand(b, -1, -1) for t in (vit.cls_token, vit.reg_token) if t is not None]
    tokens = torch.cat(prefix + [patches.reshape(b, h * w, d)], dim=1)
    return vit.norm_pre(tokens), vit.rope.get_embed(shape=(h, w)), (h, w)


def rope_table(vit, grid: Tuple[int, int], rescale: Optional[float] = None) -> torch.Tensor:
    """timm's DINOv3 RoPE table for an (h, w) patch grid; with `rescale` r, its [-1, 1] coordinates
    multiplied by a fresh factor, log-uniform in [1/r, r] (the official train-mode augmentation), drawn
    from torch's CPU RNG. timm's public RoPE module does the same in train mode (`rescale_coords`; the
    tests hold this to it bit for bit) but builds the coordinates on the CPU and copies them to the
    device at every call, a blocking copy per block: here they are built on the device."""
    rope = vit.rope
    if rescale is None:
        return rope.get_embed(shape=grid)
    from timm.layers.pos_embed_sincos import make_coords_dinov3
    log_r = math.log(rescale)
    scale = float(torch.empty(()).uniform_(-log_r, log_r).exp())
    coords = make_coords_dinov3(grid[0], grid[1], normalize_coords=rope.normalize_coords,
                                grid_indexing=rope.grid_indexing, grid_offset=rope.grid_offset,
                                device=rope.periods.device) * scale
    angles = (2 * math.pi * coords[:, :, None] / rope.periods[None, None, :]).flatten(1)
    angles = angles.tile(2) if rope.rotate_half else angles.repeat_interleave(2, dim=-1)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def run_block(block, tokens: torch.Tensor, rope: Optional[torch.Tensor]) -> torch.Tensor:
    return block(tokens, rope=rope)


def detect_format(state: Dict[str, torch.Tensor]) -> Optional[str]:
    if "embeddings.patch_embeddings.weight" in state or any(".layer_scale1.lambda1" in k and "model.layer" in k for k in state):
        return "hf"
    if "storage_tokens" in state:
        return "meta"
    if "reg_token" in state and any(".gamma_1" in k for k in state):
        return "timm"
    return None


_HF_LAYER = re.compile(r"^(?:model\.)?layer\.(\d+)\.(.+)$")
_HF_BLOCK_RENAMES = {
    "norm1.": "norm1.", "norm2.": "norm2.", "attention.o_proj.": "attn.proj.",
    "layer_scale1.lambda1": "gamma_1", "layer_scale2.lambda1": "gamma_2",
    "mlp.gate_proj.": "mlp.fc1_g.", "mlp.down_proj.": "mlp.fc2.", "mlp.up_proj.": "mlp.fc1.",
    "mlp.fc1_x.": "mlp.fc1_x.",  # gated MLP: up_proj renamed before, since it means fc1_x there
}
_HF_TOP_LEVEL = {"embeddings.cls_token": "cls_token", "embeddings.register_tokens": "reg_token",
                 "embeddings.patch_embeddings.": "patch_embed.proj.", "norm.": "norm.",
                 "embeddings.mask_token": None}  # pre-training only


def hf_to_timm(state: Dict[str, torch.Tensor], gated_mlp: bool) -> Dict[str, torch.Tensor]:
    """transformers `DINOv3ViTModel` state dict -> timm Eva (`_qkvb` variant)."""
    out, blocks = split_hf_state({k: v for k, v in state.items() if not k.endswith("inv_freq")},
                                 _HF_LAYER, _HF_TOP_LEVEL)  # inv_freq: a derived RoPE buffer
    for i, params in blocks.items():
        if all(f"attention.{n}_proj.weight" in params for n in "qkv"):  # else: the strict check reports it
            out[f"blocks.{i}.attn.qkv.weight"] = torch.cat([params.pop(f"attention.{n}_proj.weight") for n in "qkv"])
        _require_zero_key_bias(f"layer.{i}.attention.k_proj.bias", params.pop("attention.k_proj.bias", None))
        for n in "qv":
            if f"attention.{n}_proj.bias" in params:
                out[f"blocks.{i}.attn.{n}_bias"] = params.pop(f"attention.{n}_proj.bias")
        if gated_mlp:
            params = {k.replace("mlp.up_proj.", "mlp.fc1_x."): v for k, v in params.items()}
        rename_block_params(out, i, params, _HF_BLOCK_RENAMES, "layer.")
    return out


def _require_zero_key_bias(name: str, bias: Optional[torch.Tensor]) -> None:
    if bias is not None and bool(bias.abs().max() > 0):
        raise ValueError(f"{name} is a non-zero key bias; DINOv3 has none (official checkpoints mask it "
                         f"to zero) and, under RoPE, dropping it would change the features. Is this "
                         f"file a DINOv3 checkpoint?")


def meta_to_timm(state: Dict[str, torch.Tensor], vit) -> Dict[str, torch.Tensor]:
    """Official DINOv3 `.pth` -> timm, through timm's own Eva converter (storage tokens, ls
    gammas, fused qkv bias split into q/v, rope periods and bias masks dropped)."""
    from timm.models.eva import checkpoint_filter_fn
    model_has_bias = any(k.endswith(".attn.q_bias") for k in vit.state_dict())
    for key, bias in state.items():
        if key.endswith(".attn.qkv.bias"):  # timm keeps the q and v thirds; the k third must be void
            mask = state.get(key + "_mask", torch.ones_like(bias))
            _require_zero_key_bias(key + " (k third)", (bias * mask).chunk(3)[1])
            if not model_has_bias and bool((bias * mask).abs().max() > 0):  # timm would drop them silently
                raise ValueError(f"{key} holds query/value biases, but this backbone row is the variant without "
                                 f"them (e.g. MedDINOv3); load these weights into the row with biases (dinov3_vit*16)")
    out = checkpoint_filter_fn(dict(state), vit)
    if "patch_embed.proj.weight" in state:  # timm would silently resample another patch size
        out["patch_embed.proj.weight"] = state["patch_embed.proj.weight"]
    return out


_TIMM_TO_META = ((".gamma_1", ".ls1.gamma"), (".gamma_2", ".ls2.gamma"), (".mlp.fc1_g.", ".mlp.w1."),
                 (".mlp.fc1_x.", ".mlp.w2."))


def timm_to_meta(state: Dict[str, torch.Tensor], vit) -> Dict[str, torch.Tensor]:
    """timm Eva -> official DINOv3 `.pth` (the inverse of `meta_to_timm`): q/v biases back into a fused
    qkv bias with a zero, masked key third; RoPE periods and the pre-training mask token rebuilt."""
    gated = any(".mlp.fc1_g." in k for k in state)
    out = {}
    for key, value in state.items():
        if key == "reg_token":
            key = "storage_tokens"
        for old, new in _TIMM_TO_META + (((".mlp.fc2.", ".mlp.w3."),) if gated else ()):
            key = key.replace(old, new)
        out[key] = value
    for key in [k for k in out if k.endswith(".attn.q_bias")]:
        q, v = out.pop(key), out.pop(key.replace("q_bias", "v_bias"))
        out[key.replace("q_bias", "qkv.bias")] = torch.cat([q, torch.zeros_like(q), v])
        out[key.replace("q_bias", "qkv.bias_mask")] = torch.cat([torch.ones_like(q), torch.zeros_like(q),
                                                                  torch.ones_like(v)])
    dim, heads = out["cls_token"].shape[-1], vit.blocks[0].attn.num_heads
    head_dim = dim // heads
    out["rope_embed.periods"] = 100.0 ** (2 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2))
    out["mask_token"] = torch.zeros(1, dim, dtype=out["cls_token"].dtype)
    return out


def timm_to_hf(state: Dict[str, torch.Tensor], spec, vit) -> Tuple[Dict[str, torch.Tensor], dict]:
    """timm Eva -> transformers `DINOv3ViTModel` folder tensors and config (the inverse of `hf_to_timm`)."""
    dim = state["cls_token"].shape[-1]
    out = {"embeddings.cls_token": state["cls_token"], "embeddings.mask_token": torch.zeros(1, 1, dim),
           "embeddings.register_tokens": state["reg_token"], "norm.weight": state["norm.weight"],
           "norm.bias": state["norm.bias"], "embeddings.patch_embeddings.weight": state["patch_embed.proj.weight"],
           "embeddings.patch_embeddings.bias": state["patch_embed.proj.bias"]}
    gated = "blocks.0.mlp.fc1_g.weight" in state
    mlp = ({"fc1_g": "gate_proj", "fc1_x": "up_proj", "fc2": "down_proj"} if gated
           else {"fc1": "up_proj", "fc2": "down_proj"})
    biases = "blocks.0.attn.q_bias" in state
    for i in range(len(vit.blocks)):
        b, h = f"blocks.{i}.", f"layer.{i}."
        for name, tensor in zip("qkv", state[b + "attn.qkv.weight"].chunk(3)):
            out[h + f"attention.{name}_proj.weight"] = tensor
        if biases:
            for n in "qv":
                out[h + f"attention.{n}_proj.bias"] = state[b + f"attn.{n}_bias"]
        out[h + "layer_scale1.lambda1"], out[h + "layer_scale2.lambda1"] = state[b + "gamma_1"], state[b + "gamma_2"]
        for part in ("weight", "bias"):
            out[h + f"attention.o_proj.{part}"] = state[b + f"attn.proj.{part}"]
            for norm in ("norm1", "norm2"):
                out[h + f"{norm}.{part}"] = state[b + f"{norm}.{part}"]
            for ours, theirs in mlp.items():
                out[h + f"mlp.{theirs}.{part}"] = state[b + f"mlp.{ours}.{part}"]
    config = {"model_type": "dinov3_vit", "architectures": ["DINOv3ViTModel"], "hidden_size": dim,
              "intermediate_size": state["blocks.0.mlp.fc2.weight"].shape[1], "num_hidden_layers": len(vit.blocks),
              "num_attention_heads": spec.num_heads, "patch_size": spec.patch_size, "layer_norm_eps": vit.norm.eps,
              "query_bias": biases, "key_bias": False, "value_bias": biases, "use_gated_mlp": gated,
              "hidden_act": "silu" if gated else "gelu", "num_register_tokens": spec.num_register_tokens,
              "rope_theta": 100.0, "layerscale_value": 1.0, "image_size": 224, "num_channels": 3}
    return out, config


def to_timm(state: Dict[str, torch.Tensor], fmt: str, vit) -> Dict[str, torch.Tensor]:
    """A state dict of layout `fmt` (as `detect_format` says) -> timm keys."""
    if fmt == "hf":
        return hf_to_timm(state, gated_mlp=any(".mlp.gate_proj." in k for k in state))
    return meta_to_timm(state, vit) if fmt == "meta" else state


FAMILY = register_family(BackboneFamily(
    name="dinov3",
    where_to_get="https://github.com/facebookresearch/dinov3 (request access; e.g. "
                 "dinov3_vits16_pretrain_lvd1689m-08c60483.pth) or the Hugging Face models facebook/dinov3-*",
    embed_tokens=embed_tokens, run_block=run_block, detect_format=detect_format, to_timm=to_timm,
    pos_embed_rule=lambda fmt, spec, current: current,  # RoPE: nothing is resized
    timm_to_meta=timm_to_meta, timm_to_hf=timm_to_hf, rope_table=rope_table,
))
