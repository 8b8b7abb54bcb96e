"""`nnunet-dino weights`: list, verify, convert (lossless, checked by reloading) and fetch (offline
message only), through the command line as a user runs it."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch

from dino_weights_helpers import TINY_ARCH, hf_dinov3_to_meta_layout, randomize_, tiny_spec
from nnunet_dino.backbones import FrozenDinoBackbone, load_backbone_weights, locate_weights, registry
from nnunet_dino.cli import main

import transformers  # noqa: E402  (test dependency)

pytestmark = pytest.mark.usefixtures("one_thread")
RAD_MEAN, RAD_STD = [0.5307] * 3, [0.2583] * 3


@pytest.fixture
def tiny_rows(monkeypatch):
    """Tiny rows registered for one test (the command names backbones by their registry name), and no other
    test's tiny rows: those fit the same tensors and would answer 'the first row that fits' before these."""
    monkeypatch.setattr(registry, "_REGISTRY", {n: s for n, s in registry._REGISTRY.items() if not n.startswith("tiny")})
    specs = {base: tiny_spec(base) for base in ("dinov3_vits16", "dinov2_vits14", "rad_dino_vitb14")}
    for spec in specs.values():
        monkeypatch.setitem(registry._REGISTRY, spec.name, spec)
    return {base: spec.name for base, spec in specs.items()}


def _dinov3_meta(path, seed=0):
    config = transformers.DINOv3ViTConfig(hidden_size=64, num_hidden_layers=TINY_ARCH["depth"], num_attention_heads=4,
                                          intermediate_size=256, num_register_tokens=4)
    model = randomize_(transformers.DINOv3ViTModel(config), seed)
    torch.save(hf_dinov3_to_meta_layout(model), path)
    return model


def _rad_dino_folder(folder, seed=1):
    config = transformers.Dinov2Config(hidden_size=64, num_hidden_layers=TINY_ARCH["depth"], num_attention_heads=4,
                                       patch_size=14, image_size=518)
    randomize_(transformers.Dinov2Model(config), seed).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": RAD_MEAN, "image_std": RAD_STD}))
    return folder


def _loaded(name, path):
    from nnunet_dino.backbones import get_backbone_spec
    spec = get_backbone_spec(name)
    backbone = FrozenDinoBackbone(spec)
    info = load_backbone_weights(backbone, locate_weights(spec, str(path)))
    return backbone.vit.state_dict(), info


def test_convert_meta_to_safetensors_to_meta_gives_identical_tensors(tiny_rows, tmp_path, capsys):
    _dinov3_meta(tmp_path / "original.pth")
    name = tiny_rows["dinov3_vits16"]
    assert main(["weights", "convert", str(tmp_path / "original.pth"), "--to", "safetensors",
                 str(tmp_path / "a.safetensors"), "--backbone", name]) == 0
    assert main(["weights", "convert", str(tmp_path / "a.safetensors"), "--to", "meta", str(tmp_path / "b.pth"),
                 "--backbone", name]) == 0
    assert "every tensor is equal" in capsys.readouterr().out
    original = torch.load(tmp_path / "original.pth", weights_only=True)
    back = torch.load(tmp_path / "b.pth", weights_only=True)
    assert original.keys() == back.keys()  # mask token, bias masks and RoPE periods included
    assert all(torch.equal(original[k], back[k]) and original[k].dtype == back[k].dtype for k in original)
    assert main(["weights", "convert", str(tmp_path / "a.safetensors"), "--to", "meta", str(tmp_path / "b.pth"),
                 "--backbone", name]) == 2  # refuses to overwrite


def test_convert_hf_to_meta_gives_identical_backbone_tensors_and_keeps_the_normalisation(tiny_rows, tmp_path, capsys):
    folder = _rad_dino_folder(tmp_path / "rad-dino")
    name = tiny_rows["rad_dino_vitb14"]
    assert main(["weights", "convert", str(folder), "--to", "meta", str(tmp_path / "rad.pth"), "--backbone", name]) == 0
    assert "resizes the position embedding" in capsys.readouterr().out
    ours, info = _loaded(name, tmp_path / "rad.pth")
    theirs, hf_info = _loaded(name, folder)
    assert info["format"] == "meta" and hf_info["format"] == "hf"
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert (info["normalization"]["mean"], info["normalization"]["std"]) == (RAD_MEAN, RAD_STD)


def test_convert_hf_dinov3_to_meta_gives_identical_backbone_tensors(tiny_rows, tmp_path):
    model = _dinov3_meta(tmp_path / "unused.pth", seed=3)
    model.save_pretrained(tmp_path / "hf")
    name = tiny_rows["dinov3_vits16"]
    assert main(["weights", "convert", str(tmp_path / "hf"), "--to", "meta", str(tmp_path / "v3.pth"),
                 "--backbone", name]) == 0
    ours, info = _loaded(name, tmp_path / "v3.pth")
    theirs, _ = _loaded(name, tmp_path / "hf")
    assert info["format"] == "meta" and all(torch.equal(ours[k], theirs[k]) for k in theirs)


@torch.no_grad()
def _hf_features(model, x, taps=(0, 2, 3)):
    out = model(pixel_values=x, output_hidden_states=True)
    norm = model.layernorm if hasattr(model, "layernorm") else model.norm
    n_prefix = 1 + getattr(model.config, "num_register_tokens", 0)
    return [norm(out.hidden_states[t + 1])[:, n_prefix:] for t in taps]


@pytest.mark.parametrize("family", ["dinov3", "dinov2"])
def test_convert_to_hf_writes_a_folder_transformers_loads_with_the_same_features(tiny_rows, tmp_path, family):
    if family == "dinov3":
        original = _dinov3_meta(tmp_path / "v3.pth", seed=5)
        source, name = tmp_path / "v3.pth", tiny_rows["dinov3_vits16"]
    else:
        source, name = _rad_dino_folder(tmp_path / "rad-dino", seed=6), tiny_rows["rad_dino_vitb14"]
        original = transformers.Dinov2Model.from_pretrained(source)
    assert main(["weights", "convert", str(source), "--to", "hf", str(tmp_path / "out"), "--backbone", name]) == 0
    converted = transformers.AutoModel.from_pretrained(tmp_path / "out").eval()
    assert type(converted) is type(original)
    x = torch.randn(1, 3, 224, 168, generator=torch.Generator().manual_seed(0))
    diff = max(float((a - b).abs().max()) for a, b in zip(_hf_features(converted, x), _hf_features(original, x)))
    assert diff <= 3e-6, diff
    _, info = _loaded(name, tmp_path / "out")
    expected_mean = RAD_MEAN if family == "dinov2" else [0.485, 0.456, 0.406]
    assert info["format"] == "hf" and info["normalization"]["mean"] == expected_mean


def test_verify_reports_layout_variant_and_normalisation(tiny_rows, tmp_path, capsys):
    _dinov3_meta(tmp_path / "v3.pth")
    torch.save({"teacher": {f"backbone.{k}": v for k, v in torch.load(tmp_path / "v3.pth").items()
                            if "qkv.bias" not in k}}, tmp_path / "train.pth")
    assert main(["weights", "verify", str(tmp_path / "train.pth"), "--backbone", tiny_rows["dinov3_vits16"]]) == 0
    out = capsys.readouterr().out
    assert "nothing missing or unexpected" in out and "layout meta" in out and '"qkv_bias": false' in out
    assert "mean [0.485, 0.456, 0.406]" in out and "training checkpoint" in out


def test_verify_names_the_problem_of_a_wrong_file(tiny_rows, tmp_path, capsys):
    _dinov3_meta(tmp_path / "v3.pth")
    assert main(["weights", "verify", str(tmp_path / "v3.pth"), "--backbone", tiny_rows["dinov2_vits14"]]) == 2
    assert "These are DINOV3 weights, but the backbone is DINOV2" in capsys.readouterr().err
    assert main(["weights", "verify", str(tmp_path / "v3.pth"), "--backbone", "dinov3_vits16"]) == 2
    err = capsys.readouterr().err
    assert "do not fit backbone" in err and "Mis-shaped: blocks.0.attn.proj.bias: file (64,) vs model (384,)" in err
    (tmp_path / "notes.pth").write_bytes(b"not weights at all")
    assert main(["weights", "verify", str(tmp_path / "notes.pth")]) == 2
    assert "notes.pth" in capsys.readouterr().err


def test_list_shows_what_was_found_with_size_sha256_and_licence(tmp_path, monkeypatch, capsys):
    sat = tmp_path / "dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth"
    sat.write_bytes(b"\x00" * 1000)
    monkeypatch.setenv("nnUNet_dino_weights", str(tmp_path))
    assert main(["weights", "list"]) == 0
    lines = {line.split(":")[0]: line for line in capsys.readouterr().out.splitlines()}
    assert f"sha256 {hashlib.sha256(sat.read_bytes()).hexdigest()}" in lines["dinov3_vitl16_sat493m"]
    assert "size 0.0 MB" in lines["dinov3_vitl16_sat493m"] and "DINOv3 License" in lines["dinov3_vitl16_sat493m"]
    assert "not found" in lines["dinov3_vitl16"] and "Apache-2.0" in lines["dinov2_vits14"]
    assert "MIT" in lines["rad_dino_vitb14"] and "see the model card" in lines["meddinov3_vitb16"]


def test_fetch_offline_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["weights", "fetch", "dinov2_vits14", "--to", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "could not download timm/vit_small_patch14_dinov2.lvd142m" in err and "offline" in err
    assert list(tmp_path.iterdir()) == []


def test_verify_without_backbone_finds_the_row_the_tensors_fit(tiny_rows, tmp_path, capsys):
    _dinov3_meta(tmp_path / "some_download.pth")
    assert main(["weights", "verify", str(tmp_path / "some_download.pth")]) == 0
    assert f"loads into {tiny_rows['dinov3_vits16']} with nothing missing" in capsys.readouterr().out
