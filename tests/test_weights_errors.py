"""Every bad `nnUNet_dino_weights` input fails with a WeightsError that names the problem AND the fix,
and loading never unpickles code. Also: `random` is a seeded initialisation; loaded backbones stay frozen."""
from __future__ import annotations

import json
import pickle
from functools import partial

import pytest
import torch
from safetensors.torch import save_file

from dino_weights_helpers import TINY_ARCH, randomize_, tiny_spec
from nnunet_dino.backbones import (WEIGHTS_ENV_VAR, FrozenDinoBackbone, WeightsError, get_backbone_spec,
                                   load_backbone_weights, locate_weights)

import transformers  # noqa: E402  (test dependency, installed by make test)


pytestmark = pytest.mark.usefixtures("one_thread")


def _load(spec, setting):
    backbone = FrozenDinoBackbone(spec)
    return backbone, load_backbone_weights(backbone, locate_weights(spec, str(setting)))


def _error(spec, setting) -> str:
    with pytest.raises(WeightsError) as err:
        _load(spec, setting)
    return str(err.value)


def _hf_dinov2(seed=0):
    config = transformers.Dinov2Config(hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                                       patch_size=14, image_size=518)
    return randomize_(transformers.Dinov2Model(config), seed)


def _hf_dinov3(seed=0, **extra):
    config = transformers.DINOv3ViTConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=4,
                                          num_attention_heads=4, num_register_tokens=4, **extra)
    return randomize_(transformers.DINOv3ViTModel(config), seed)


def _meta_dinov2_state(img_size=518, seed=0, **arch):
    """A randomised state dict in Meta's official DINOv2 `.pth` layout (from Meta's own code)."""
    from dinov2.layers import MemEffAttention, NestedTensorBlock
    from dinov2.models.vision_transformer import DinoVisionTransformer
    model = DinoVisionTransformer(img_size=img_size, patch_size=14, mlp_ratio=4, init_values=1.0, block_chunks=0,
                                  block_fn=partial(NestedTensorBlock, attn_class=MemEffAttention),
                                  **{**TINY_ARCH, **arch})
    return randomize_(model, seed).state_dict()


@pytest.fixture(scope="module")
def meta_pth(tmp_path_factory):
    path = tmp_path_factory.mktemp("meta") / "dinov2_vits14_pretrain.pth"
    torch.save(_meta_dinov2_state(), path)
    return path


# --- nnUNet_dino_weights does not lead to weights --------------------------------------------------------
@pytest.mark.parametrize("name", ["dinov2_vits14", "dinov3_vits16"])
def test_unset_lists_where_it_looked_and_where_to_get_weights(monkeypatch, name):
    monkeypatch.delenv(WEIGHTS_ENV_VAR, raising=False)
    spec = get_backbone_spec(name)
    for setting in ("", "   ", None):  # None: read the (unset) environment variable
        with pytest.raises(WeightsError) as err:
            locate_weights(spec, setting)
        message = str(err.value)
        assert f"{WEIGHTS_ENV_VAR} is not set" in message and "Looked in" in message
        assert spec.weight_files[0] in message                      # what to download ...
        assert f"github.com/facebookresearch/{spec.family}" in message  # ... from where
        assert f"export {WEIGHTS_ENV_VAR}=" in message and "random" in message


def test_path_that_does_not_exist(tmp_path):
    spec = get_backbone_spec("dinov2_vits14")
    missing = tmp_path / "no" / "such" / "weights.pth"
    with pytest.raises(WeightsError) as err:
        locate_weights(spec, str(missing))
    message = str(err.value)
    assert str(missing) in message and "does not exist" in message
    assert "dinov2_vits14_pretrain.pth" in message and "'random'" in message


def test_folder_without_the_right_file_lists_expected_names(tmp_path):
    (tmp_path / "dinov2_vitb14_pretrain.pth").write_bytes(b"")  # another model's file
    (tmp_path / "notes.txt").write_text("hello")
    spec = get_backbone_spec("dinov2_vits14")
    with pytest.raises(WeightsError) as err:
        locate_weights(spec, str(tmp_path))
    message = str(err.value)
    assert f"Looked in: {tmp_path}" in message
    assert all(name in message for name in spec.weight_files)
    assert "github.com/facebookresearch/dinov2" in message and "random" in message


def test_hub_without_hub_id_points_to_local_files():
    with pytest.raises(WeightsError, match=f"no hub id.*{WEIGHTS_ENV_VAR}.*local"):
        locate_weights(tiny_spec("dinov2_vits14"), "hub")


def test_model_folder_without_weight_files(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "dinov2", "hidden_size": 64}))
    message = _error(tiny_spec("dinov2_vits14"), tmp_path)
    assert str(tmp_path) in message and "no model.safetensors" in message and "Download" in message


def test_model_folder_with_corrupt_config(tmp_path):
    _hf_dinov2().save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "dinov2", "hidden_')  # cut short
    message = _error(tiny_spec("dinov2_vits14"), tmp_path)
    assert str(tmp_path / "config.json") in message and "download it again" in message


# --- unreadable files ------------------------------------------------------------------------------------
def _cut_in_half(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_pth(meta_pth, tmp_path):
    broken = tmp_path / "dinov2_vits14_pretrain.pth"
    broken.write_bytes(meta_pth.read_bytes())
    _cut_in_half(broken)
    message = _error(tiny_spec("dinov2_vits14"), broken)
    assert str(broken) in message and "truncated or corrupt" in message and "download it again" in message
    assert "Refusing" not in message  # a broken file is not reported as a dangerous one


@pytest.mark.parametrize("damage", ["truncate", "garble_header", "empty"])
def test_corrupt_safetensors(tmp_path, damage):
    spec = tiny_spec("dinov2_vits14")
    path = tmp_path / "vit_small_patch14_dinov2.lvd142m.safetensors"
    save_file(FrozenDinoBackbone(spec).vit.state_dict(), str(path))
    if damage == "truncate":
        _cut_in_half(path)
    elif damage == "garble_header":
        data = bytearray(path.read_bytes())
        data[8:40] = b"#" * 32  # the JSON header right after its 8-byte length
        path.write_bytes(bytes(data))
    else:
        path.write_bytes(b"")
    message = _error(spec, path)
    assert str(path) in message and "truncated or corrupt" in message and "download it again" in message


def test_file_without_tensors(tmp_path):
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    message = _error(tiny_spec("dinov2_vits14"), path)
    assert str(path) in message and "not hold a state dict of tensors" in message and "weights file" in message


# --- pickled code is never run ----------------------------------------------------------------------------
class _WritesMarker:
    """Unpickling this calls open(marker, 'w'): a harmless stand-in for arbitrary code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("carrier", ["torch.save", "pickle.dump", "hf_folder_bin"])
def test_pickled_code_is_refused_and_not_run(tmp_path, carrier):
    marker = tmp_path / "code-was-executed"
    payload = {"pos_embed": torch.zeros(1, 2, 3), "trap": _WritesMarker(marker)}
    if carrier == "hf_folder_bin":  # a transformers folder with a (legacy) pytorch_model.bin
        folder = tmp_path / "dinov2-small"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": "dinov2", "hidden_size": 64}))
        path, setting = folder / "pytorch_model.bin", folder
    else:
        path = setting = tmp_path / "dinov2_vits14_pretrain.pth"
    if carrier == "pickle.dump":  # a plain pickle, not torch's zip format
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    else:
        torch.save(payload, path)

    message = _error(tiny_spec("dinov2_vits14"), setting)
    assert not marker.exists(), "unpickling ran code from the weights file"
    assert f"Refusing to load {path}" in message and "could execute code" in message
    if carrier != "pickle.dump":  # torch names the global; a protocol-4 pickle fails on an opcode first
        assert "Unsupported global: GLOBAL io.open" in message
    assert "re-save a plain state_dict / .safetensors" in message   # the fix

    # the file really is dangerous: an unsafe load runs the payload
    with open(path, "rb") as f:
        pickle.load(f) if carrier == "pickle.dump" else torch.load(f, weights_only=False)
    assert marker.exists()


# --- weights of another architecture -----------------------------------------------------------------------
def test_other_model_size_names_keys_and_shapes(meta_pth):
    message = _error(tiny_spec("dinov2_vits14", embed_dim=96), meta_pth)
    assert str(meta_pth) in message and "do not fit backbone" in message
    assert "blocks.0.attn.qkv.weight: file (192, 64) vs model (288, 96)" in message
    assert "more)" in message  # every block's tensors: listed in part, then counted
    assert "another model size" in message and "tiny_dinov2_vits14" in message


def test_other_depth_names_missing_and_unexpected_blocks(meta_pth, tmp_path):
    message = _error(tiny_spec("dinov2_vits14", depth=6), meta_pth)
    assert "Missing keys: blocks.4." in message and "Mis-shaped: none" in message
    torch.save(_meta_dinov2_state(depth=6), tmp_path / "deeper.pth")
    message = _error(tiny_spec("dinov2_vits14"), tmp_path / "deeper.pth")
    assert "Unexpected keys: blocks.4." in message


def test_other_model_size_hf_folder_reports_its_config(tmp_path):
    _hf_dinov2().save_pretrained(tmp_path / "hf")
    message = _error(tiny_spec("dinov2_vits14", embed_dim=96), tmp_path / "hf")
    assert "Mis-shaped: " in message and "file (64,) vs model (96,)" in message
    assert "config.json says dinov2: hidden_size 64, num_hidden_layers 4" in message


def test_pos_embed_of_another_grid_is_reported_not_silently_resampled(tmp_path):
    """timm would resample it (with antialias) to fit: features would then match nobody's model."""
    torch.save(_meta_dinov2_state(img_size=224), tmp_path / "grid16.pth")
    message = _error(tiny_spec("dinov2_vits14"), tmp_path / "grid16.pth")
    assert "pos_embed: file (1, 257, 64) vs model (1, 1370, 64)" in message


def test_registers_mismatch_is_reported(meta_pth, tmp_path):
    message = _error(tiny_spec("dinov2_vits14_reg4"), meta_pth)
    assert "Missing keys: reg_token" in message


@pytest.mark.parametrize("source,target", [("dinov2_meta", "dinov3_vits16"), ("dinov2_hf", "dinov3_vits16"),
                                           ("dinov3_hf", "dinov2_vits14"), ("dinov3_hf", "dinov2_vits14_reg4")])
def test_weights_of_the_other_family(meta_pth, tmp_path, source, target):
    if source == "dinov2_meta":
        setting = meta_pth
    else:
        setting = tmp_path / source
        (_hf_dinov2() if source == "dinov2_hf" else _hf_dinov3()).save_pretrained(setting)
    message = _error(tiny_spec(target), setting)
    held, wanted = source[:6].upper(), target[:6].upper()
    assert f"These are {held} weights" in message and f"the backbone is {wanted}" in message
    assert f"Give {wanted} weights" in message


# --- sharded transformers folders ---------------------------------------------------------------------------
@pytest.fixture()
def sharded_folder(tmp_path):
    folder = tmp_path / "dinov2-small-sharded"
    _hf_dinov2().save_pretrained(folder, max_shard_size="200KB")
    shards = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"].values()
    assert len(set(shards)) > 2
    return folder, sorted(set(shards))


def test_complete_sharded_folder_loads(sharded_folder, tmp_path):
    folder, _ = sharded_folder
    _hf_dinov2().save_pretrained(tmp_path / "single")
    spec = tiny_spec("dinov2_vits14")
    a, b = _load(spec, folder)[0].vit.state_dict(), _load(spec, tmp_path / "single")[0].vit.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sharded_folder_with_a_missing_shard(sharded_folder):
    folder, shards = sharded_folder
    (folder / shards[1]).unlink()
    message = _error(tiny_spec("dinov2_vits14"), folder)
    assert str(folder) in message and shards[1] in message and shards[0] not in message
    assert "model.safetensors.index.json" in message and "Download them again" in message


# --- DINOv3 key bias: exact or refused ---------------------------------------------------------------------
def test_dinov3_nonzero_key_bias_is_refused(tmp_path):
    """RoPE rotates the key after its bias, so dropping a non-zero one would change the features."""
    _hf_dinov3(key_bias=True).save_pretrained(tmp_path / "hf")
    message = _error(tiny_spec("dinov3_vits16"), tmp_path / "hf")
    assert str(tmp_path / "hf") in message and "non-zero key bias" in message and "k_proj.bias" in message


def test_dinov3_zero_key_bias_loads(tmp_path):
    model = _hf_dinov3(key_bias=True)
    with torch.no_grad():
        for layer in model.model.layer:
            layer.attention.k_proj.bias.zero_()
    model.save_pretrained(tmp_path / "hf")
    _load(tiny_spec("dinov3_vits16"), tmp_path / "hf")


def test_dinov3_meta_key_bias_without_mask_is_refused(tmp_path):
    spec = tiny_spec("dinov3_vits16")
    _hf_dinov3().save_pretrained(tmp_path / "hf")
    backbone, _ = _load(spec, tmp_path / "hf")
    state = {"storage_tokens": backbone.vit.reg_token, "cls_token": backbone.vit.cls_token}
    for i in range(4):
        state[f"blocks.{i}.attn.qkv.bias"] = torch.randn(3 * 64)  # k third not zero, and no bias_mask
    torch.save(state, tmp_path / "meta.pth")
    message = _error(spec, tmp_path / "meta.pth")
    assert "blocks.0.attn.qkv.bias (k third) is a non-zero key bias" in message


# --- random, and frozen after loading -------------------------------------------------------------------------
def test_random_is_an_explicit_seeded_source(monkeypatch):
    """`random` is a seeded initialisation, so a slim checkpoint can rebuild the same backbone."""
    spec = tiny_spec("dinov2_vits14")
    monkeypatch.setenv(WEIGHTS_ENV_VAR, " Random ")
    source = locate_weights(spec)
    assert source.is_random and source == locate_weights(spec, "random")
    assert "RANDOM" in source.describe()
    first, second = FrozenDinoBackbone(spec), FrozenDinoBackbone(spec)
    assert not all(torch.equal(v, second.vit.state_dict()[k]) for k, v in first.vit.state_dict().items())
    info = load_backbone_weights(first, source)
    assert info["format"] == "random" and info["sha256"] == first.loaded_fingerprint == first.fingerprint()
    torch.manual_seed(123)  # the global RNG state must not matter
    assert load_backbone_weights(second, source)["sha256"] == info["sha256"]
    assert all(torch.equal(v, second.vit.state_dict()[k]) for k, v in first.vit.state_dict().items())


@pytest.mark.parametrize("family", ["dinov2", "dinov3"])
def test_loaded_backbone_is_frozen_and_stays_in_eval(tmp_path, family):
    spec = tiny_spec("dinov2_vits14" if family == "dinov2" else "dinov3_vits16")
    (_hf_dinov2() if family == "dinov2" else _hf_dinov3()).save_pretrained(tmp_path / "hf")
    backbone, _ = _load(spec, tmp_path / "hf")
    assert not any(p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert backbone.training and not any(m.training for m in backbone.vit.modules())
    x = torch.randn(1, 3, 2 * spec.patch_size, 3 * spec.patch_size, requires_grad=True)
    assert not any(f.requires_grad for f in backbone(x))
    backbone.train(False).train(True)
    assert not backbone.vit.training


def test_training_checkpoint_with_teacher_backbone_and_heads_loads_the_backbone(tmp_path):
    """DINO training checkpoints: {'teacher': {'backbone.*': ..., 'dino_head.*': ...}}."""
    import torch
    from nnunet_dino.backbones import FrozenDinoBackbone, WeightsSource, load_backbone_weights
    from dino_weights_helpers import randomize_, tiny_spec
    spec = tiny_spec("dinov2_vits14")
    source = FrozenDinoBackbone(spec, pos_embed_resize="timm")
    randomize_(source.vit)
    state = {f"backbone.{k}": v for k, v in source.vit.state_dict().items()}
    state["dino_head.mlp.0.weight"] = torch.zeros(4, 4)
    torch.save({"teacher": state}, tmp_path / "train_ckpt.pth")
    target = FrozenDinoBackbone(spec)
    load_backbone_weights(target, WeightsSource("file", str(tmp_path / "train_ckpt.pth")))
    assert all(torch.equal(v, target.vit.state_dict()[k]) for k, v in source.vit.state_dict().items())


def test_garbage_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    path.write_bytes(bytes(range(256)) * 4)  # 1,024 bytes that are neither a zip nor a pickle
    message = _error(tiny_spec("dinov2_vits14"), path)
    assert str(path) in message and "is not a checkpoint" in message and "download the weights again" in message
    assert "pickled Python objects" not in message


def test_cheap_check_reads_names_and_shapes_only(meta_pth, tmp_path, monkeypatch):
    from nnunet_dino.backbones.weights import read_file
    from nnunet_dino.backbones.weights_check import check_weights_source
    spec = tiny_spec("dinov2_vits14")
    state = read_file(str(meta_pth), dry=True)
    assert state and all(t.device.type == "cpu" for t in state.values())  # memory-mapped, not copied
    check_weights_source(locate_weights(spec, str(meta_pth)), spec)  # fits: no error
    with pytest.raises(WeightsError, match="do not fit backbone"):
        check_weights_source(locate_weights(spec, str(meta_pth)), tiny_spec("dinov2_vits14", embed_dim=96))
    safetensors = tmp_path / "vit_small_patch14_dinov2.lvd142m.safetensors"
    save_file(FrozenDinoBackbone(spec).vit.state_dict(), str(safetensors))
    assert all(t.is_meta for t in read_file(str(safetensors), dry=True).values())  # the header alone
    check_weights_source(locate_weights(spec, str(safetensors)), spec)
    data = safetensors.read_bytes()
    safetensors.write_bytes(data[:-100])  # the header is intact, the data is not
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        check_weights_source(locate_weights(spec, str(safetensors)), spec)
