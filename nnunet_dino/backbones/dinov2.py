"""DINOv2 family (Oquab et al. 2023): learned absolute position embedding, patch 14.

Holds the registry rows, the token embedding with the three position-embedding resize rules in
use (Meta's, Hugging Face's, timm's), and the Meta / Hugging Face -> timm key conversions.
"""
from __future__ import annotations

import math
import re
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from .hf_layout import rename_block_params, split_hf_state
from .registry import BackboneFamily, BackboneSpec, register_backbone, register_family

POS_EMBED_RESIZE_MODES = ("meta", "hf", "timm")
LICENCE = "Apache-2.0 (DINOv2 weights)"

_SIZES = {  # size -> (timm size word, embed_dim, depth, heads, taps, HF size word)
    "s": ("small", 384, 12, 6, (2, 5, 8, 11), "small"),
    "b": ("base", 768, 12, 12, (2, 5, 8, 11), "base"),
    "l": ("large", 1024, 24, 16, (4, 11, 17, 23), "large"),
    "g": ("giant", 1536, 40, 24, (9, 19, 29, 39), "giant"),
}
for _size, (_word, _dim, _depth, _heads, _taps, _hf) in _SIZES.items():
    for _reg in (False, True):
        _name = f"dinov2_vit{_size}14" + ("_reg4" if _reg else "")
        _timm = f"vit_{_word}_patch14" + ("_reg4" if _reg else "") + "_dinov2"
        register_backbone(BackboneSpec(
            name=_name, family="dinov2", timm_name=_timm, embed_dim=_dim, depth=_depth, num_heads=_heads,
            patch_size=14, num_register_tokens=4 if _reg else 0, default_taps=_taps, native_grid=37,
            weight_files=(f"{_name}_pretrain.pth", f"{_timm}.lvd142m", f"{_timm}.lvd142m.safetensors",
                          f"dinov2{'-with-registers' if _reg else ''}-{_hf}"),
            hf_repo=f"facebook/dinov2{'-with-registers' if _reg else ''}-{_hf}",
            timm_hub_id=f"timm/{_timm}.lvd142m", pretraining="lvd142m", licence=LICENCE,
        ))


def resize_patch_pos_embed(pos: torch.Tensor, new_grid: Tuple[int, int], mode: str) -> torch.Tensor:
    """Resize a (1, M*M, D) patch position embedding to `new_grid` (h, w) the way the weights'
    source does it, so features match the source implementation at any input size:
    - 'meta': official DINOv2 -- bicubic with scale factor (n + 0.1) / M, no antialias;
    - 'hf':   transformers Dinov2Model -- bicubic to the target size, no antialias;
    - 'timm': timm, and the register models of Meta and transformers -- bicubic to the target
              size with antialias.
    """
    n_old = pos.shape[1]
    m = int(math.isqrt(n_old))
    h, w = new_grid
    if (h, w) == (m, m):
        return pos
    grid = pos.float().reshape(1, m, m, -1).permute(0, 3, 1, 2)
    if mode == "meta":
        grid = F.interpolate(grid, scale_factor=((h + 0.1) / m, (w + 0.1) / m), mode="bicubic")
    elif mode == "hf":
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
    elif mode == "timm":
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
    else:
        raise ValueError(f"pos_embed_resize must be one of {POS_EMBED_RESIZE_MODES}, got {mode!r}")
    return grid.permute(0, 2, 3, 1).reshape(1, h * w, -1).to(pos.dtype)


def embed_tokens(vit, x: torch.Tensor, pos_embed_resize: str):
    """Image (B,3,H,W) -> tokens (B, prefix + h*w, D), rope None, grid (h, w)."""
    patches = vit.patch_embed(x)  # (B, h, w, D) with dynamic_img_size
    b, h, w, d = patches.shape
    n_pos_prefix = 0 if vit.no_embed_class else 1
    patch_pos = resize_patch_pos_embed(vit.pos_embed[:, n_pos_prefix:], (h, w), pos_embed_resize)
    tokens = patches.reshape(b, h * w, d) + patch_pos
    cls = vit.cls_token + vit.pos_embed[:, :1] if n_pos_prefix else vit.cls_token
    prefix = [cls.expand(b, -1, -1)]
    if vit.reg_token is not None:
        prefix.append(vit.reg_token.expand(b, -1, -1))
    tokens = vit.norm_pre(torch.cat(prefix + [tokens], dim=1))
    return tokens, None, (h, w)


def run_block(block, tokens: torch.Tensor, rope: Optional[torch.Tensor]) -> torch.Tensor:
    return block(tokens)


def source_resize_mode(fmt: str, has_registers: bool) -> str:
    """The pos-embed resize the weights' own implementation uses, so features match it at any size.
    Meta's hub models with registers (and HF's Dinov2WithRegisters, a port of them) resize to the
    target size with antialias (interpolate_offset=0, interpolate_antialias=True) -- timm's rule."""
    if has_registers:
        return "timm"
    return {"meta": "meta", "hf": "hf"}.get(fmt, "timm")


# Meta's FSDP layout (block_chunks > 0, the constructor's default): blocks.<chunk>.<i>.* -> blocks.<i>.*
_CHUNKED_BLOCK = re.compile(r"^blocks\.\d+\.(\d+)\.")


def unchunk_blocks(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {_CHUNKED_BLOCK.sub(r"blocks.\1.", k): v for k, v in state.items()}


def detect_format(state: Dict[str, torch.Tensor]) -> Optional[str]:
    """'hf', 'meta' or 'timm' if the keys look like a DINOv2 checkpoint of that layout, else None."""
    if any(k.endswith("embeddings.position_embeddings") for k in state):
        return "hf"
    has_ls = any(k.startswith("blocks.") and k.endswith(".ls1.gamma") for k in state)  # chunked or not
    if "pos_embed" in state and has_ls and ("mask_token" in state or "register_tokens" in state):
        return "meta"
    if "pos_embed" in state and any(k.startswith("blocks.") for k in state):
        return "timm"
    return None


_HF_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
_HF_TOP_LEVEL = {"embeddings.cls_token": "cls_token", "embeddings.register_tokens": "reg_token",
                 "embeddings.position_embeddings": "pos_embed",
                 "embeddings.patch_embeddings.projection.": "patch_embed.proj.", "layernorm.": "norm.",
                 "embeddings.mask_token": None}  # pre-training only
_HF_BLOCK_RENAMES = {
    "norm1.": "norm1.", "norm2.": "norm2.",
    "attention.o_proj.": "attn.proj.", "attention.output.dense.": "attn.proj.",
    "layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma",
    "mlp.fc1.": "mlp.fc1.", "mlp.fc2.": "mlp.fc2.",
    "mlp.weights_in.": "mlp.fc1.", "mlp.weights_out.": "mlp.fc2.",  # giant SwiGLU (packed, hub files)
    "mlp.down_proj.": "mlp.fc2.",                                    # giant SwiGLU (transformers >= 5)
}
# transformers >= 5 writes q_proj/k_proj/v_proj; checkpoints on the hub use attention.attention.query/...
_HF_QKV = {"q": ("attention.q_proj.", "attention.attention.query."),
           "k": ("attention.k_proj.", "attention.attention.key."),
           "v": ("attention.v_proj.", "attention.attention.value.")}


def hf_to_timm(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """transformers `Dinov2Model` / `Dinov2WithRegistersModel` state dict -> timm VisionTransformer."""
    state = {k[len("dinov2."):] if k.startswith("dinov2.") else k: v for k, v in state.items()}
    out, blocks = split_hf_state(state, _HF_LAYER, _HF_TOP_LEVEL)
    if {"reg_token", "cls_token", "pos_embed"} <= set(out):  # timm's reg4 models keep no pos-embed slot
        out["cls_token"] = out["cls_token"] + out["pos_embed"][:, :1]  # for the prefix tokens
        out["pos_embed"] = out["pos_embed"][:, 1:]
    for i, params in blocks.items():
        for part in ("weight", "bias"):
            qkv = []
            for names in _HF_QKV.values():
                found = [params.pop(n + part) for n in names if n + part in params]
                qkv.extend(found[:1])
            if len(qkv) == 3:
                out[f"blocks.{i}.attn.qkv.{part}"] = torch.cat(qkv, dim=0)
            if f"mlp.gate_proj.{part}" in params and f"mlp.up_proj.{part}" in params:
                # timm's packed SwiGLU computes silu(first half) * second half: gate first
                out[f"blocks.{i}.mlp.fc1.{part}"] = torch.cat(
                    [params.pop(f"mlp.gate_proj.{part}"), params.pop(f"mlp.up_proj.{part}")], dim=0)
        rename_block_params(out, i, params, _HF_BLOCK_RENAMES, "encoder.layer.")
    return out


_MLP_RENAME = re.compile(r"\.mlp\.(w12|w3)\.")
_MLP_NAMES = {"w12": "fc1", "w3": "fc2"}  # giant: packed [gate; up] and down projections


def meta_to_timm(state: Dict[str, torch.Tensor], vit=None) -> Dict[str, torch.Tensor]:
    """Official DINOv2 `.pth` -> timm VisionTransformer. The layout is timm's but for the mask token
    (pre-training only), the registers and the giant's SwiGLU names. Written here rather than through
    timm's `checkpoint_filter_fn`, which silently resamples a pos-embed or patch kernel of another size
    (antialiased, so no longer Meta's model) or crashes on one it cannot: the strict check reports them."""
    out = {k: v for k, v in unchunk_blocks(state).items() if k != "mask_token"}
    if "register_tokens" in out:  # timm's reg4 models keep no pos-embed slot for the prefix tokens
        out["reg_token"] = out.pop("register_tokens")
        if "pos_embed" in out and "cls_token" in out:
            out["cls_token"] = out["cls_token"] + out["pos_embed"][:, :1]
            out["pos_embed"] = out["pos_embed"][:, 1:]
    return {_MLP_RENAME.sub(lambda m: f".mlp.{_MLP_NAMES[m.group(1)]}.", k): v for k, v in out.items()}


def timm_to_meta(state: Dict[str, torch.Tensor], vit) -> Dict[str, torch.Tensor]:
    """timm VisionTransformer -> official DINOv2 `.pth` (the inverse of `meta_to_timm`). The prefix
    tokens' position slot, folded into cls_token by timm's register models, comes back as zeros; the
    pre-training mask token as zeros (never used for features)."""
    out = dict(state)
    if "reg_token" in out:
        out["register_tokens"] = out.pop("reg_token")
        out["pos_embed"] = torch.cat([torch.zeros_like(out["pos_embed"][:, :1]), out["pos_embed"]], dim=1)
    if type(vit.blocks[0].mlp).__name__ == "SwiGLUPacked":  # giant: fc1/fc2 are Meta's w12/w3
        out = {re.sub(r"\.mlp\.fc([12])\.", lambda m: {"1": ".mlp.w12.", "2": ".mlp.w3."}[m.group(1)], k): v
               for k, v in out.items()}
    out["mask_token"] = torch.zeros(1, out["cls_token"].shape[-1], dtype=out["cls_token"].dtype)
    return out


def timm_to_hf(state: Dict[str, torch.Tensor], spec, vit) -> Tuple[Dict[str, torch.Tensor], dict]:
    """timm VisionTransformer -> transformers `Dinov2Model` / `Dinov2WithRegistersModel` folder tensors
    and config (the inverse of `hf_to_timm`; written in transformers' current key names)."""
    dim, registers = state["cls_token"].shape[-1], "reg_token" in state
    pos = state["pos_embed"]
    out = {"embeddings.cls_token": state["cls_token"], "embeddings.mask_token": torch.zeros(1, dim),
           "embeddings.position_embeddings": torch.cat([torch.zeros_like(pos[:, :1]), pos], 1) if registers else pos,
           "embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
           "embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
           "layernorm.weight": state["norm.weight"], "layernorm.bias": state["norm.bias"]}
    if registers:
        out["embeddings.register_tokens"] = state["reg_token"]
    swiglu = type(vit.blocks[0].mlp).__name__ == "SwiGLUPacked"
    for i in range(len(vit.blocks)):
        b, h = f"blocks.{i}.", f"encoder.layer.{i}."
        for part in ("weight", "bias"):
            for name, tensor in zip("qkv", state[b + f"attn.qkv.{part}"].chunk(3)):
                out[h + f"attention.{name}_proj.{part}"] = tensor
            out[h + f"attention.o_proj.{part}"] = state[b + f"attn.proj.{part}"]
            for norm in ("norm1", "norm2"):
                out[h + f"{norm}.{part}"] = state[b + f"{norm}.{part}"]
            if swiglu:
                gate, up = state[b + f"mlp.fc1.{part}"].chunk(2)
                out.update({h + f"mlp.gate_proj.{part}": gate, h + f"mlp.up_proj.{part}": up,
                            h + f"mlp.down_proj.{part}": state[b + f"mlp.fc2.{part}"]})
            else:
                for fc in ("fc1", "fc2"):
                    out[h + f"mlp.{fc}.{part}"] = state[b + f"mlp.{fc}.{part}"]
        for n in (1, 2):
            out[h + f"layer_scale{n}.lambda1"] = state[b + f"ls{n}.gamma"]
    hidden = state["blocks.0.mlp.fc2.weight"].shape[1]
    config = {"model_type": "dinov2_with_registers" if registers else "dinov2",
              "architectures": ["Dinov2WithRegistersModel" if registers else "Dinov2Model"],
              "hidden_size": dim, "num_hidden_layers": len(vit.blocks), "num_attention_heads": spec.num_heads,
              "mlp_ratio": 4 if swiglu else hidden // dim, "patch_size": spec.patch_size,
              "image_size": spec.native_grid * spec.patch_size, "layer_norm_eps": vit.norm.eps, "qkv_bias": True,
              "layerscale_value": 1.0, "use_swiglu_ffn": swiglu, "hidden_act": "gelu", "num_channels": 3}
    if registers:
        config["num_register_tokens"] = spec.num_register_tokens
    return out, config


def to_timm(state: Dict[str, torch.Tensor], fmt: str, vit=None) -> Dict[str, torch.Tensor]:
    """A state dict of layout `fmt` (as `detect_format` says) -> timm keys."""
    return {"hf": hf_to_timm, "meta": meta_to_timm}.get(fmt, lambda st: st)(state)


FAMILY = register_family(BackboneFamily(
    name="dinov2",
    where_to_get="https://github.com/facebookresearch/dinov2 (e.g. dinov2_vitb14_pretrain.pth) or the Hugging Face "
                 "models facebook/dinov2-* / timm/vit_*_patch14_dinov2.lvd142m",
    embed_tokens=embed_tokens, run_block=run_block, detect_format=detect_format, to_timm=to_timm,
    pos_embed_rule=lambda fmt, spec, current: source_resize_mode(fmt, spec.num_register_tokens > 0),
    timm_kwargs=lambda spec: {"img_size": spec.native_grid * spec.patch_size},  # the published pos-embed grid
    pos_embed_modes=POS_EMBED_RESIZE_MODES, timm_to_meta=timm_to_meta, timm_to_hf=timm_to_hf,
))
