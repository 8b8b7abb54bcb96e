"""Medical and satellite DINO weights: MedDINOv3-style training checkpoints (no q/v bias, storage
tokens, heads), other training checkpoints, RAD-DINO-style transformers folders with their own
preprocessor config, and SAT-493M files -- each loads strictly, gives the reference model's features
and records the normalisation its source was trained with.

References are tiny randomised transformers / Meta models; features are compared at <= 3e-6.
"""
from __future__ import annotations

import functools
import json
import logging

import pytest
import torch
from torch import nn

from dino_weights_helpers import TINY_ARCH, hf_dinov3_to_meta_layout, randomize_, tiny_spec
from nnunet_dino.backbones import (FrozenDinoBackbone, WeightsError, get_backbone_spec, load_backbone_weights,
                                   locate_weights)
from nnunet_dino.backbones.normalization import IMAGENET, MEDDINOV3_CT, SAT493M

import transformers  # noqa: E402  (test dependency)

TOL = 3e-6
TAPS = [0, 2, 3]
DEPTH = TINY_ARCH["depth"]
EPS6 = functools.partial(nn.LayerNorm, eps=1e-6)
pytestmark = pytest.mark.usefixtures("one_thread")


def _image(size=(160, 224), seed=0):
    return torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(seed))


def _ours(backbone, x):
    return [m.flatten(2).transpose(1, 2) for m in backbone(x, TAPS)]


@torch.no_grad()
def _hf_features(model, x):
    out = model(pixel_values=x, output_hidden_states=True)
    norm = model.layernorm if hasattr(model, "layernorm") else model.norm
    n_prefix = 1 + getattr(model.config, "num_register_tokens", 0)
    return [norm(out.hidden_states[t + 1])[:, n_prefix:] for t in TAPS]


def _max_diff(ours, refs):
    assert all(a.shape == b.shape for a, b in zip(ours, refs))
    return max(float((a - b).abs().max()) for a, b in zip(ours, refs))


def _load(spec, path):
    backbone = FrozenDinoBackbone(spec)
    return backbone, load_backbone_weights(backbone, locate_weights(spec, str(path)))


def _hf_dinov3(seed=0, **config):
    config = transformers.DINOv3ViTConfig(hidden_size=64, num_hidden_layers=DEPTH, num_attention_heads=4,
                                          intermediate_size=256, num_register_tokens=4, **config)
    return randomize_(transformers.DINOv3ViTModel(config), seed)


def _training_checkpoint(backbone_state, dim=64):
    """Meta's DINO training layout: {'teacher': {'backbone.*', 'dino_head.*', 'ibot_head.*'}}."""
    teacher = {f"backbone.{k}": v for k, v in backbone_state.items()}
    teacher.update({"dino_head.mlp.0.weight": torch.randn(32, dim), "dino_head.last_layer.weight_g": torch.ones(8, 1),
                    "ibot_head.mlp.0.weight": torch.randn(32, dim)})
    return {"teacher": teacher}


# --- MedDINOv3 ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def meddinov3(tmp_path_factory):
    """A MedDINOv3-like model (no q/v bias, eps 1e-6, 4 storage tokens), its training checkpoint and HF folder."""
    model = _hf_dinov3(seed=3, query_bias=False, value_bias=False, layer_norm_eps=1e-6)
    root = tmp_path_factory.mktemp("meddinov3")
    meta = hf_dinov3_to_meta_layout(model)
    assert not any(k.endswith("qkv.bias") for k in meta) and meta["storage_tokens"].shape[1] == 4
    torch.save(_training_checkpoint(meta), root / "model.pth")
    model.save_pretrained(root / "hf")
    return model, root / "model.pth", root / "hf"


def test_meddinov3_training_checkpoint_loads_strictly_and_matches(meddinov3, caplog):
    model, pth, folder = meddinov3
    spec = tiny_spec("meddinov3_vitb16")
    with caplog.at_level(logging.INFO, logger="nnunet_dino.backbones"):
        backbone, info = _load(spec, pth)  # strict: nothing missing, nothing unexpected
    assert info["format"] == "meta" and info["variant"] == {"qkv_bias": False}
    assert "dropped dino_head.* (2 tensors), ibot_head.* (1 tensors)" in caplog.text
    assert any("teacher -> backbone" in note for note in info["notes"])
    assert info["normalization"] == MEDDINOV3_CT.record()
    reference, _ = _load(spec, folder)
    assert all(torch.equal(v, reference.vit.state_dict()[k]) for k, v in backbone.vit.state_dict().items())
    x = _image()
    diff = _max_diff(_ours(backbone, x), _hf_features(model, x))
    print(f"\n[medical] MedDINOv3 training checkpoint vs transformers: {diff:.2e}")
    assert diff <= TOL


def test_no_bias_checkpoint_into_a_row_with_biases_gets_exact_zero_biases(meddinov3):
    """Any DINOv3 training checkpoint without q/v biases: the variant is inferred and recorded."""
    model, pth, _ = meddinov3
    backbone, info = _load(tiny_spec("dinov3_vitb16", norm_layer=EPS6), pth)
    assert info["variant"] == {"qkv_bias": False}
    assert not any(bool(v.any()) for k, v in backbone.vit.state_dict().items() if k.endswith(("q_bias", "v_bias")))
    x = _image()
    assert _max_diff(_ours(backbone, x), _hf_features(model, x)) <= TOL


def test_weights_with_biases_are_refused_by_the_row_without(tmp_path):
    model = _hf_dinov3(seed=4)
    torch.save(hf_dinov3_to_meta_layout(model), tmp_path / "lvd_like.pth")
    with pytest.raises(WeightsError, match="query/value biases"):
        _load(tiny_spec("meddinov3_vitb16"), tmp_path / "lvd_like.pth")


def test_meddinov3_folder_search_finds_renamed_file_not_generic_model_pth(tmp_path):
    spec = get_backbone_spec("meddinov3_vitb16")
    (tmp_path / "model.pth").write_bytes(b"")
    with pytest.raises(WeightsError, match="meddinov3"):
        locate_weights(spec, str(tmp_path))
    (tmp_path / "MedDINOv3-ViTB-16-CT-3M").mkdir()
    (tmp_path / "MedDINOv3-ViTB-16-CT-3M" / "model.pth").write_bytes(b"")
    assert locate_weights(spec, str(tmp_path)).path.endswith("MedDINOv3-ViTB-16-CT-3M/model.pth")


# --- DINOv2 training checkpoint without qkv bias --------------------------------------------------------
def test_dinov2_flattened_training_checkpoint_without_qkv_bias(tmp_path):
    from dinov2.layers import MemEffAttention, NestedTensorBlock
    from dinov2.models.vision_transformer import DinoVisionTransformer
    model = randomize_(DinoVisionTransformer(img_size=518, patch_size=14, mlp_ratio=4, init_values=1.0, qkv_bias=False,
                                             block_fn=functools.partial(NestedTensorBlock, attn_class=MemEffAttention),
                                             block_chunks=0, **TINY_ARCH), seed=5)
    state = {}
    for role in ("teacher", "student"):
        state.update({f"{role}.backbone.{k}": v for k, v in model.state_dict().items()})
        state[f"{role}.dino_head.mlp.0.weight"] = torch.randn(8, 64)
    torch.save({"model": state, "iteration": torch.tensor(10)}, tmp_path / "training_ckpt.pth")
    backbone, info = _load(tiny_spec("dinov2_vits14"), tmp_path / "training_ckpt.pth")
    assert info["variant"] == {"qkv_bias": False} and info["normalization"] == IMAGENET.record()
    student = len(model.state_dict()) + 1  # its backbone and head
    assert f"dropped dino_head.* (1 tensors), student.* ({student} tensors)" in info["notes"][0]
    x = _image((224, 168))
    with torch.no_grad():
        refs = list(model.get_intermediate_layers(x, n=TAPS, norm=True))
    assert _max_diff(_ours(backbone, x), refs) <= TOL


# --- RAD-DINO -----------------------------------------------------------------------------------------
RAD_MEAN, RAD_STD = [0.5307, 0.5307, 0.5307], [0.2583, 0.2583, 0.2583]


def test_rad_dino_folder_carries_its_preprocessor_normalisation(tmp_path):
    config = transformers.Dinov2Config(hidden_size=64, num_hidden_layers=DEPTH, num_attention_heads=4, patch_size=14,
                                       image_size=518)
    model = randomize_(transformers.Dinov2Model(config), seed=6)
    folder = tmp_path / "rad-dino"
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": RAD_MEAN, "image_std": RAD_STD}))
    backbone, info = _load(tiny_spec("rad_dino_vitb14"), folder)
    assert info["format"] == "hf"
    norm = info["normalization"]
    assert (norm["mean"], norm["std"], norm["space"]) == (RAD_MEAN, RAD_STD, "rgb01")
    assert "preprocessor_config.json" in norm["origin"]
    x = _image((224, 168))
    assert _max_diff(_ours(backbone, x), _hf_features(model, x)) <= TOL
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(WeightsError, match="preprocessor_config.json"):
        _load(tiny_spec("rad_dino_vitb14"), folder)


# --- SAT-493M -----------------------------------------------------------------------------------------
SAT_FILE, LVD_FILE = "dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth", "dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth"


def test_sat493m_file_loads_with_sat_normalisation_and_matches(tmp_path):
    model = _hf_dinov3(seed=8)
    meta = hf_dinov3_to_meta_layout(model)
    meta.update({"local_cls_norm.weight": torch.randn(64), "local_cls_norm.bias": torch.randn(64)})  # SAT ViT-L only
    torch.save(meta, tmp_path / SAT_FILE)
    backbone, info = _load(tiny_spec("dinov3_vitl16_sat493m"), tmp_path / SAT_FILE)
    assert info["normalization"] == SAT493M.record()
    x = _image()
    assert _max_diff(_ours(backbone, x), _hf_features(model, x)) <= TOL
    with pytest.raises(WeightsError, match="SAT493M weights.*dinov3_vitl16_sat493m"):
        _load(tiny_spec("dinov3_vitl16"), tmp_path / SAT_FILE)


def test_sat_and_lvd_name_searches_never_take_each_others_files(tmp_path):
    lvd, sat = get_backbone_spec("dinov3_vitl16"), get_backbone_spec("dinov3_vitl16_sat493m")
    (tmp_path / SAT_FILE).write_bytes(b"")
    with pytest.raises(WeightsError, match="No weights for backbone dinov3_vitl16 "):
        locate_weights(lvd, str(tmp_path))
    assert locate_weights(sat, str(tmp_path)).path.endswith(SAT_FILE)
    (tmp_path / SAT_FILE).unlink()
    (tmp_path / LVD_FILE).write_bytes(b"")
    with pytest.raises(WeightsError, match="No weights for backbone dinov3_vitl16_sat493m"):
        locate_weights(sat, str(tmp_path))
    assert locate_weights(lvd, str(tmp_path)).path.endswith(LVD_FILE)
    assert "sat493m" in sat.timm_hub_id and "sat493m" not in lvd.timm_hub_id
    (tmp_path / SAT_FILE).write_bytes(b"")
    with pytest.raises(WeightsError, match="holds SAT493M weights, but backbone dinov3_vitl16 "):
        locate_weights(lvd, str(tmp_path / SAT_FILE))  # an explicit file: refused by its name, before reading
