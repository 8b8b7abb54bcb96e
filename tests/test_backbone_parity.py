"""Weight-loading parity: our frozen timm backbone, loaded from each published weight layout, gives
the features of the weights' own implementation (transformers, Meta's DINOv2 code, timm).

Every reference is a tiny model (dim 64, 4 blocks, 4 heads) with EVERY parameter randomised (layer
scales included), in eval() and fp32. Our tap i is compared with the reference's output of block i
after its final LayerNorm, patch tokens only. Run with `-s` to print the measured differences.
"""
from __future__ import annotations

import os
from functools import partial

import pytest
import torch
from safetensors.torch import save_file

from dino_weights_helpers import TINY_ARCH, hf_dinov3_to_meta_layout, randomize_, tiny_spec
from nnunet_dino.backbones import FrozenDinoBackbone, load_backbone_weights, locate_weights
from nnunet_dino.backbones.dinov2 import resize_patch_pos_embed

import transformers  # noqa: E402  (test dependency, installed by make test)

TOL = 1e-4
TAPS = [0, 2, 3]  # first, middle and last block
DEPTH = TINY_ARCH["depth"]
# DINOv2: the native grid (518 = 37 x 14 for the published pos-embed), a smaller square size and a
# non-square one. DINOv3 has RoPE (no grid): its usual 224 and non-square sizes of both orientations.
DINOV2_SIZES = [(518, 518), (224, 224), (224, 168)]
DINOV3_SIZES = [(224, 224), (160, 224), (224, 176)]


# --- helpers ---------------------------------------------------------------------------------------
pytestmark = pytest.mark.usefixtures("one_thread")


def _image(size, seed=0):
    return torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(seed))


def _ours(backbone, x, taps=TAPS):
    """Our maps as (B, h*w, D) token rows, the layout the references return."""
    return [m.flatten(2).transpose(1, 2) for m in backbone(x, taps)]


@torch.no_grad()
def _hf_features(model, x, taps=TAPS):
    """transformers: hidden_states[i + 1] is block i's output; final norm applied; prefix stripped."""
    out = model(pixel_values=x, output_hidden_states=True)
    norm = model.layernorm if hasattr(model, "layernorm") else model.norm
    n_prefix = 1 + getattr(model.config, "num_register_tokens", 0)
    return [norm(out.hidden_states[t + 1])[:, n_prefix:] for t in taps]


def _assert_close(case, ours, refs):
    diff = max(float((a - b).abs().max()) for a, b in zip(ours, refs))
    print(f"\n[parity] {case}: max abs diff {diff:.3e}")
    assert all(a.shape == b.shape for a, b in zip(ours, refs)), case
    assert diff <= TOL, f"{case}: max abs diff {diff:.3e} > {TOL}"
    return diff


def _load(spec, setting):
    backbone = FrozenDinoBackbone(spec)
    info = load_backbone_weights(backbone, locate_weights(spec, str(setting)))
    return backbone, info


def _assert_same_weights(a, b):
    sa, sb = a.vit.state_dict(), b.vit.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


# --- Hugging Face DINOv2 -----------------------------------------------------------------------------
def _hf_dinov2(registers=0, swiglu=False, seed=0):
    kw = dict(hidden_size=64, num_hidden_layers=DEPTH, num_attention_heads=4, patch_size=14, image_size=518)
    if registers:
        model = transformers.Dinov2WithRegistersModel(
            transformers.Dinov2WithRegistersConfig(num_register_tokens=registers, **kw))
    else:
        model = transformers.Dinov2Model(transformers.Dinov2Config(use_swiglu_ffn=swiglu, **kw))
    return randomize_(model, seed)


def _to_old_hub_layout(state):
    """transformers >= 5 names -> the names of the checkpoints on the hub (written independently of
    the loader): attention.attention.query/key/value, attention.output.dense, mlp.weights_in/out."""
    renames = {"attention.q_proj.": "attention.attention.query.", "attention.k_proj.": "attention.attention.key.",
               "attention.v_proj.": "attention.attention.value.", "attention.o_proj.": "attention.output.dense.",
               "mlp.down_proj.": "mlp.weights_out."}
    old = {}
    for key, value in state.items():
        if ".mlp.gate_proj." in key:  # packed SwiGLU: [gate; up]
            old[key.replace("mlp.gate_proj.", "mlp.weights_in.")] = torch.cat(
                [value, state[key.replace("gate_proj", "up_proj")]])
            continue
        if ".mlp.up_proj." in key:
            continue
        for new_name, old_name in renames.items():
            key = key.replace(new_name, old_name)
        old[key] = value
    return old


@pytest.fixture(scope="module")
def hf_dinov2(tmp_path_factory):
    model = _hf_dinov2()
    folder = tmp_path_factory.mktemp("hf") / "dinov2-small"
    model.save_pretrained(folder)
    return model, folder


@pytest.mark.parametrize("size", DINOV2_SIZES)
def test_hf_dinov2_matches_transformers(hf_dinov2, size):
    model, folder = hf_dinov2
    backbone, info = _load(tiny_spec("dinov2_vits14"), folder)
    assert info["format"] == "hf" and backbone.pos_embed_resize == "hf"
    x = _image(size)
    _assert_close(f"HF Dinov2Model {size}", _ours(backbone, x), _hf_features(model, x))


def test_hf_dinov2_every_key_layout_loads_identically(hf_dinov2, tmp_path):
    """save_pretrained's folder, the in-memory state dict (q_proj/k_proj/v_proj names) and the old hub
    names (attention.attention.query, ...) all load to the same tensors."""
    model, folder = hf_dinov2
    spec = tiny_spec("dinov2_vits14")
    reference, _ = _load(spec, folder)
    state = model.state_dict()
    assert "encoder.layer.0.attention.q_proj.weight" in state
    save_file(state, str(tmp_path / "tiny_new_names.safetensors"))
    old = tmp_path / "old-hub-layout"
    old.mkdir()
    (old / "config.json").write_text(model.config.to_json_string())
    old_state = _to_old_hub_layout(state)
    assert "encoder.layer.0.attention.attention.query.weight" in old_state
    torch.save(old_state, old / "pytorch_model.bin")
    for setting in (tmp_path / "tiny_new_names.safetensors", old):
        backbone, info = _load(spec, setting)
        assert info["format"] == "hf"
        _assert_same_weights(backbone, reference)
    x = _image((224, 168))
    _assert_close("HF Dinov2 old hub key layout (224, 168)", _ours(backbone, x), _hf_features(model, x))


@pytest.mark.parametrize("size", DINOV2_SIZES)
def test_hf_dinov2_with_registers_matches_transformers(tmp_path_factory, size):
    model = _hf_dinov2(registers=4, seed=1)
    folder = tmp_path_factory.mktemp("hfreg") / "dinov2-with-registers-small"
    model.save_pretrained(folder)
    backbone, info = _load(tiny_spec("dinov2_vits14_reg4"), folder)
    assert backbone.pos_embed_resize == "timm"  # Dinov2WithRegisters resizes with antialias
    x = _image(size)
    _assert_close(f"HF Dinov2WithRegistersModel {size}", _ours(backbone, x), _hf_features(model, x))


def test_hf_dinov2_giant_swiglu_matches_transformers(tmp_path):
    """The giant's SwiGLU MLP: packed on the hub (weights_in), split in transformers >= 5."""
    model = _hf_dinov2(swiglu=True, seed=2)
    model.save_pretrained(tmp_path / "giant")
    save_file(model.state_dict(), str(tmp_path / "tiny_split_swiglu.safetensors"))
    # HF's hidden size: 2/3 of 4 x 64, rounded up to 8 = 176; timm's packed fc1 holds both halves
    spec = tiny_spec("dinov2_vitg14", mlp_ratio=2 * 176 / 64)
    x = _image((224, 168))
    for setting in (tmp_path / "giant", tmp_path / "tiny_split_swiglu.safetensors"):
        backbone, _ = _load(spec, setting)
        _assert_close(f"HF Dinov2 SwiGLU ({os.path.basename(setting)}) (224, 168)",
                      _ours(backbone, x), _hf_features(model, x))


# --- Meta DINOv2 -------------------------------------------------------------------------------------
def _meta_dinov2(img_size=518, block_chunks=0, seed=0, **kwargs):
    from dinov2.layers import MemEffAttention, NestedTensorBlock
    from dinov2.models.vision_transformer import DinoVisionTransformer
    # vit_small() fixes embed_dim/depth/num_heads itself (passing them is a TypeError), so build its
    # DinoVisionTransformer directly with vit_small's other settings, as the hub does (init_values=1).
    model = DinoVisionTransformer(img_size=img_size, patch_size=14, mlp_ratio=4, init_values=1.0,
                                  block_fn=partial(NestedTensorBlock, attn_class=MemEffAttention),
                                  block_chunks=block_chunks, **TINY_ARCH, **kwargs)
    return randomize_(model, seed)


@torch.no_grad()
def _meta_features(model, x, taps=TAPS):
    return list(model.get_intermediate_layers(x, n=taps, norm=True))


@pytest.fixture(scope="module")
def meta_dinov2(tmp_path_factory):
    model = _meta_dinov2()
    path = tmp_path_factory.mktemp("meta") / "dinov2_vits14_pretrain.pth"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.mark.parametrize("size", DINOV2_SIZES + [(168, 224)])
def test_meta_dinov2_matches_official_code(meta_dinov2, size):
    model, path = meta_dinov2
    backbone, info = _load(tiny_spec("dinov2_vits14"), path)
    assert info["format"] == "meta" and backbone.pos_embed_resize == "meta"
    x = _image(size)
    _assert_close(f"Meta DINOv2 {size}", _ours(backbone, x), _meta_features(model, x))


def test_meta_dinov2_at_another_native_grid(tmp_path):
    """A variant's img_size sets the pos-embed grid (native_grid) of our model, like Meta's img_size."""
    model = _meta_dinov2(img_size=224, seed=3)
    torch.save(model.state_dict(), tmp_path / "tiny224.pth")
    spec = tiny_spec("dinov2_vits14", img_size=224)
    assert spec.native_grid == 16
    backbone, _ = _load(spec, tmp_path / "tiny224.pth")
    for size in [(224, 224), (168, 224), (322, 266)]:
        x = _image(size)
        _assert_close(f"Meta DINOv2 native 224, input {size}", _ours(backbone, x), _meta_features(model, x))


def test_meta_dinov2_giant_swiglu_matches_official_code(tmp_path):
    model = _meta_dinov2(ffn_layer="swiglufused", seed=8)  # hidden: 2/3 of 4 x 64, rounded up to 8 = 176
    torch.save(model.state_dict(), tmp_path / "giant.pth")
    backbone, _ = _load(tiny_spec("dinov2_vitg14", mlp_ratio=2 * 176 / 64), tmp_path / "giant.pth")
    x = _image((224, 168))
    _assert_close("Meta DINOv2 SwiGLU (224, 168)", _ours(backbone, x), _meta_features(model, x))


def test_meta_dinov2_chunked_blocks_load_identically(meta_dinov2, tmp_path):
    """DinoVisionTransformer's default block_chunks=1 (and FSDP training) saves blocks.<chunk>.<i>.*"""
    model, path = meta_dinov2
    chunked = _meta_dinov2(block_chunks=2)
    chunked.load_state_dict({k.replace("blocks.", f"blocks.{int(k.split('.')[1]) // 2}.", 1)
                             if k.startswith("blocks.") else k: v for k, v in model.state_dict().items()})
    assert "blocks.1.3.attn.qkv.weight" in chunked.state_dict()
    torch.save(chunked.state_dict(), tmp_path / "chunked.pth")
    spec = tiny_spec("dinov2_vits14")
    backbone, _ = _load(spec, tmp_path / "chunked.pth")
    _assert_same_weights(backbone, _load(spec, path)[0])
    x = _image((224, 168))
    _assert_close("Meta DINOv2 chunked (224, 168)", _ours(backbone, x), _meta_features(chunked, x))


def _hf_dinov2_to_meta_layout(model):
    """A transformers Dinov2(WithRegisters)Model's weights in Meta's published `.pth` layout."""
    hf = model.state_dict()
    meta = {"cls_token": hf["embeddings.cls_token"], "pos_embed": hf["embeddings.position_embeddings"],
            "mask_token": hf["embeddings.mask_token"],
            "patch_embed.proj.weight": hf["embeddings.patch_embeddings.projection.weight"],
            "patch_embed.proj.bias": hf["embeddings.patch_embeddings.projection.bias"],
            "norm.weight": hf["layernorm.weight"], "norm.bias": hf["layernorm.bias"]}
    if "embeddings.register_tokens" in hf:
        meta["register_tokens"] = hf["embeddings.register_tokens"]
    for i in range(model.config.num_hidden_layers):
        h, m = f"encoder.layer.{i}.", f"blocks.{i}."
        for part in ("weight", "bias"):
            meta[m + f"attn.qkv.{part}"] = torch.cat([hf[h + f"attention.{n}_proj.{part}"] for n in "qkv"])
            meta[m + f"attn.proj.{part}"] = hf[h + f"attention.o_proj.{part}"]
            for name in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                meta[m + f"{name}.{part}"] = hf[h + f"{name}.{part}"]
        meta[m + "ls1.gamma"] = hf[h + "layer_scale1.lambda1"]
        meta[m + "ls2.gamma"] = hf[h + "layer_scale2.lambda1"]
    return meta


@pytest.mark.parametrize("size", DINOV2_SIZES)
def test_meta_layout_with_registers_matches_transformers_port(tmp_path, size):
    model = _hf_dinov2(registers=4, seed=4)
    torch.save(_hf_dinov2_to_meta_layout(model), tmp_path / "dinov2_vits14_reg4_pretrain.pth")
    backbone, info = _load(tiny_spec("dinov2_vits14_reg4"), tmp_path / "dinov2_vits14_reg4_pretrain.pth")
    assert info["format"] == "meta" and backbone.pos_embed_resize == "timm"
    x = _image(size)
    _assert_close(f"Meta-layout DINOv2 reg4 vs HF {size}", _ours(backbone, x), _hf_features(model, x))


# --- timm's own files --------------------------------------------------------------------------------
@pytest.mark.parametrize("base,timm_kwargs,size", [
    ("dinov2_vits14", dict(img_size=518), (224, 168)),
    ("dinov3_vits16", dict(), (160, 224)),
])
def test_timm_format_matches_timm(tmp_path, base, timm_kwargs, size):
    import timm
    spec = tiny_spec(base)
    model = randomize_(timm.create_model(spec.timm_name, pretrained=False, num_classes=0, dynamic_img_size=True,
                                         **TINY_ARCH, **timm_kwargs), seed=5)
    save_file(model.state_dict(), str(tmp_path / f"{spec.timm_name}.safetensors"))
    backbone, info = _load(spec, tmp_path / f"{spec.timm_name}.safetensors")
    assert info["format"] == "timm"
    x = _image(size)
    with torch.no_grad():
        refs = model.forward_intermediates(x, indices=TAPS, norm=True, output_fmt="NCHW", intermediates_only=True)
    _assert_close(f"timm {spec.timm_name} {size}", _ours(backbone, x), [r.flatten(2).transpose(1, 2) for r in refs])


# --- the three pos-embed resize rules really differ ------------------------------------------------------
def test_the_three_resize_modes_differ_at_224():
    """A wrong mode would fail the parity tests above: at 224 (16 x 16 from 37 x 37) every pair of
    rules gives clearly different embeddings and features; at the native grid all agree."""
    pos = torch.randn(1, 37 * 37, 64, generator=torch.Generator().manual_seed(6))
    resized = {mode: resize_patch_pos_embed(pos, (16, 16), mode) for mode in ("meta", "hf", "timm")}
    backbone = FrozenDinoBackbone(tiny_spec("dinov2_vits14"))
    randomize_(backbone.vit, seed=6)
    features, native = {}, {}
    for mode in ("meta", "hf", "timm"):
        backbone.pos_embed_resize = mode
        features[mode] = backbone(_image((224, 224)), [DEPTH - 1])[0]
        native[mode] = backbone(_image((518, 518)), [DEPTH - 1])[0]
    assert torch.equal(native["meta"], native["hf"]) and torch.equal(native["meta"], native["timm"])
    for a, b in [("meta", "hf"), ("meta", "timm"), ("hf", "timm")]:
        pos_diff = float((resized[a] - resized[b]).abs().max())
        feat_diff = float((features[a] - features[b]).abs().max())
        print(f"\n[resize] {a} vs {b} at 224: pos-embed {pos_diff:.3e}, features {feat_diff:.3e}")
        assert pos_diff > 100 * TOL and feat_diff > 100 * TOL


# --- DINOv3 --------------------------------------------------------------------------------------------
_DINOV3_CASES = {  # base -> (HF config extras, timm variant extras)
    "dinov3_vits16": (dict(intermediate_size=256), dict()),
    # gated SwiGLU MLP (S+, H+, 7B): hidden 176 in both; timm's ratio gives it (aligned to 8)
    "dinov3_vitsplus16": (dict(intermediate_size=176, use_gated_mlp=True, hidden_act="silu"),
                          dict(mlp_ratio=176 / 64)),
}


def _hf_dinov3(base, seed=0, **extra):
    config = transformers.DINOv3ViTConfig(hidden_size=64, num_hidden_layers=DEPTH, num_attention_heads=4,
                                          num_register_tokens=4, **_DINOV3_CASES[base][0], **extra)
    return randomize_(transformers.DINOv3ViTModel(config), seed)


@pytest.fixture(scope="module", params=list(_DINOV3_CASES))
def dinov3_case(request, tmp_path_factory):
    """One randomised HF DINOv3ViTModel, its save_pretrained folder and its Meta-layout `.pth`."""
    base = request.param
    model = _hf_dinov3(base, seed=7)
    root = tmp_path_factory.mktemp(base)
    model.save_pretrained(root / "hf")
    torch.save(hf_dinov3_to_meta_layout(model), root / f"{base}_pretrain_lvd1689m-tiny.pth")
    return base, model, root / "hf", root / f"{base}_pretrain_lvd1689m-tiny.pth"


@pytest.mark.parametrize("size", DINOV3_SIZES)
def test_hf_dinov3_matches_transformers(dinov3_case, size):
    base, model, folder, _ = dinov3_case
    assert not model.training  # in train mode transformers jitters the RoPE coordinates
    backbone, info = _load(tiny_spec(base, **_DINOV3_CASES[base][1]), folder)
    assert info["format"] == "hf"
    x = _image(size)
    _assert_close(f"HF DINOv3ViTModel {base} {size}", _ours(backbone, x), _hf_features(model, x))


@pytest.mark.parametrize("size", DINOV3_SIZES)
def test_meta_dinov3_layout_matches_hf_load_and_transformers(dinov3_case, size):
    base, model, folder, pth = dinov3_case
    spec = tiny_spec(base, **_DINOV3_CASES[base][1])
    backbone, info = _load(spec, pth)  # strict: nothing missing, nothing unexpected
    assert info["format"] == "meta"
    hf_backbone, _ = _load(spec, folder)
    _assert_same_weights(backbone, hf_backbone)
    x = _image(size)
    ours = _ours(backbone, x)
    _assert_close(f"Meta-layout DINOv3 {base} vs HF-format load {size}", ours, _ours(hf_backbone, x))
    _assert_close(f"Meta-layout DINOv3 {base} vs transformers {size}", ours, _hf_features(model, x))


def test_meta_dinov3_masked_key_bias_is_ignored(dinov3_case, tmp_path):
    """Official checkpoints store whatever sits under the zero bias_mask; it must not matter."""
    base, model, folder, _ = dinov3_case
    state = hf_dinov3_to_meta_layout(model, k_bias_third=torch.randn(model.config.hidden_size))
    torch.save(state, tmp_path / "masked.pth")
    spec = tiny_spec(base, **_DINOV3_CASES[base][1])
    _assert_same_weights(_load(spec, tmp_path / "masked.pth")[0], _load(spec, folder)[0])


def test_hf_dinov3_in_memory_key_names_load_identically(dinov3_case, tmp_path):
    """save_pretrained drops the `model.` prefix of the encoder; a raw state_dict() keeps it."""
    base, model, folder, _ = dinov3_case
    state = model.state_dict()
    assert "model.layer.0.norm1.weight" in state
    save_file(state, str(tmp_path / "raw.safetensors"))
    spec = tiny_spec(base, **_DINOV3_CASES[base][1])
    _assert_same_weights(_load(spec, tmp_path / "raw.safetensors")[0], _load(spec, folder)[0])
