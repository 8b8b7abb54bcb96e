"""Slim checkpoints: the frozen backbone is not written; prediction, --c, --val reload and verify it."""
import os
import subprocess
import sys
import warnings

import pytest
import torch

from nnunet_dino.backbones import WeightsError, get_backbone_spec, load_backbone_weights, WeightsSource
from nnunet_dino.networks.base import BACKBONE_RECORD_KEY
from nnunet_dino.networks.segdino import SegDINO
from nnunet_dino.nnunet import predict, run_step, train
from nnunet_helpers import copy_of

TRAINER = "nnUNetTrainerSegDINO_debug"


def tiny_spec():
    return get_backbone_spec("dinov3_vits16").variant("tiny_slim_dinov3", embed_dim=64, depth=4, num_heads=4)


def _trained_network(tmp_path, weights_file):
    net = SegDINO(1, 3, backbone=tiny_spec())
    load_backbone_weights(net.backbone, WeightsSource("file", str(weights_file)))
    return net


def test_slim_state_dict_restores_and_verifies_the_backbone(tmp_path, monkeypatch):
    spec = tiny_spec()
    weights_a, weights_b = tmp_path / "a" / "tiny_slim_dinov3.pth", tmp_path / "b" / "tiny_slim_dinov3.pth"
    for path, seed in ((weights_a, 1), (weights_b, 2)):
        path.parent.mkdir()
        torch.manual_seed(seed)
        torch.save(SegDINO(1, 3, backbone=spec).backbone.vit.state_dict(), path)
    trained = _trained_network(tmp_path, weights_a)
    with trained.slim_state_dict():
        slim = trained.state_dict()
    assert not any(k.startswith("backbone.") for k in slim) and BACKBONE_RECORD_KEY in slim
    assert set(trained.state_dict()) - set(slim) == {k for k in trained.state_dict() if k.startswith("backbone.")}

    monkeypatch.setenv("nnUNet_dino_weights", str(weights_a.parent))  # the training weights: restored
    fresh = SegDINO(1, 3, backbone=spec)
    fresh.load_state_dict(slim)
    x = torch.randn(1, 1, 32, 48)
    assert torch.equal(fresh.eval()(x), trained.eval()(x))

    monkeypatch.setenv("nnUNet_dino_weights", str(weights_b.parent))  # other weights: refused
    with pytest.raises(WeightsError, match="not the ones this model was trained with"):
        SegDINO(1, 3, backbone=spec).load_state_dict(slim)
    monkeypatch.delenv("nnUNet_dino_weights")
    with pytest.raises(WeightsError, match="nnUNet_dino_weights is not set") as err:
        SegDINO(1, 3, backbone=spec).load_state_dict(slim)
    # the message names the file the checkpoint needs and its sha256, from the checkpoint's record
    assert str(weights_a) in str(err.value) and slim[BACKBONE_RECORD_KEY]["sha256"] in str(err.value)
    broken = dict(slim)
    broken.pop("head.classifier.weight")  # strict for every trainable tensor
    monkeypatch.setenv("nnUNet_dino_weights", str(weights_a.parent))
    with pytest.raises(RuntimeError, match="head.classifier.weight"):
        SegDINO(1, 3, backbone=spec).load_state_dict(broken)


def test_loaded_checkpoints_say_what_they_were_trained_with(tmp_path, monkeypatch):
    """The random banner and the mixed-ensemble warning come from each checkpoint's own record."""
    spec = tiny_spec()
    weights = tmp_path / "w" / "tiny_slim_dinov3.pth"
    weights.parent.mkdir()
    torch.save(SegDINO(1, 3, backbone=spec).backbone.vit.state_dict(), weights)
    on_file, on_random = SegDINO(1, 3, backbone=spec), SegDINO(1, 3, backbone=spec)
    load_backbone_weights(on_file.backbone, WeightsSource("file", str(weights)))
    load_backbone_weights(on_random.backbone, WeightsSource("random"))
    slims = []
    for net in (on_file, on_random):
        with net.slim_state_dict():
            slims.append(net.state_dict())
    monkeypatch.setenv("nnUNet_dino_weights", str(weights))
    predictor_net = SegDINO(1, 3, backbone=spec)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictor_net.load_state_dict(slims[0])  # fold 0: trained with the file
    assert not caught
    x = torch.randn(1, 1, 32, 48)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictor_net.load_state_dict(slims[1])  # fold 1: trained on a random backbone
        assert torch.equal(predictor_net.eval()(x), on_random.eval()(x))
        predictor_net.load_state_dict(slims[0])  # as the predictor does, fold after fold, case after case
        assert torch.equal(predictor_net.eval()(x), on_file.eval()(x))
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2, messages  # each said once
    assert "this model was trained on a random backbone" in messages[0]
    assert "DIFFERENT backbone weights" in messages[1] and str(weights) in messages[1] and "RANDOM" in messages[1]


def test_the_checkpoint_record_carries_the_position_embedding_rule(tmp_path, monkeypatch):
    """One source for the DINOv2 resize rule: the weights' format decides it at load time (the family's
    rule), slim checkpoints re-derive it from the same file, bundled ones carry it in their record."""
    from transformers import Dinov2Config, Dinov2Model
    from nnunet_dino.networks.udfa import UDFA
    spec = get_backbone_spec("dinov2_vits14").variant("tiny_rule_dinov2", embed_dim=64, depth=4, num_heads=4,
                                                       img_size=56)
    hf = Dinov2Model(Dinov2Config(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256,
                                  patch_size=14, image_size=56))
    hf.save_pretrained(tmp_path / "tiny_rule_dinov2")
    kwargs = dict(spa_channels=(8, 8, 8, 8, 8), bottleneck_channels=8)
    trained = UDFA(1, 2, backbone=spec, **kwargs)
    load_backbone_weights(trained.backbone, WeightsSource("folder", str(tmp_path / "tiny_rule_dinov2")))
    assert trained.backbone.pos_embed_resize == "hf"
    bundled = trained.bundled_state_dict()
    fresh = UDFA(1, 2, backbone=spec, **kwargs)
    assert fresh.backbone.pos_embed_resize == "meta"  # the constructor's default: nothing read from plans
    fresh.load_state_dict(bundled)
    assert fresh.backbone.pos_embed_resize == "hf" and fresh.backbone.loaded_fingerprint == trained.backbone.fingerprint()
    x = torch.randn(1, 1, 42, 70)  # another grid than the weights' 4 x 4: the rule matters
    assert torch.equal(fresh.eval()(x), trained.eval()(x))
    with trained.slim_state_dict():
        slim = trained.state_dict()
    monkeypatch.setenv("nnUNet_dino_weights", str(tmp_path / "tiny_rule_dinov2"))
    restored = UDFA(1, 2, backbone=spec, **kwargs)
    restored.load_state_dict(slim)
    assert restored.backbone.pos_embed_resize == "hf"


def test_train_predict_resume_validate_and_bundle_through_the_cli(synthetic_2d, trained_segdino_2d, tmp_path):
    copied = copy_of(trained_segdino_2d, tmp_path)  # trained by nnUNetv2_train, changed below
    env, model = copied["env"], copied["model"]
    final = os.path.join(model, "fold_0", "checkpoint_final.pth")
    weights = torch.load(final, map_location="cpu", weights_only=False)["network_weights"]
    assert BACKBONE_RECORD_KEY in weights and not any(k.startswith("backbone.") for k in weights)
    slim_size = os.path.getsize(final)

    out = str(tmp_path / "predictions")
    predict(990, TRAINER, os.path.join(synthetic_2d["raw_folder"], "imagesTs"), out, env)
    assert len([f for f in os.listdir(out) if f.endswith(".png")]) == 2

    os.remove(final)  # resume from checkpoint_best with --c, then re-validate with --val
    train(990, TRAINER, env, extra=["--c"])
    assert os.path.isfile(final)
    train(990, TRAINER, env, extra=["--val"])

    cli = os.path.join(os.path.dirname(sys.executable), "nnunet-dino")
    subprocess.run([cli, "bundle", model], env=env, check=True, stdout=subprocess.DEVNULL)
    weights = torch.load(final, map_location="cpu", weights_only=False)["network_weights"]
    assert weights[BACKBONE_RECORD_KEY]["weights_included"] and any(k.startswith("backbone.vit.") for k in weights)
    print(f"checkpoint_final: slim {slim_size / 1e6:.1f} MB, self-contained {os.path.getsize(final) / 1e6:.1f} MB")
    assert slim_size < 0.5 * os.path.getsize(final)
    bundled = dict(env)
    bundled.pop("nnUNet_dino_weights")  # self-contained: predicts without any weights setting
    run_step(["nnUNetv2_predict", "-i", os.path.join(synthetic_2d["raw_folder"], "imagesTs"), "-o",
              str(tmp_path / "bundled"), "-d", "990", "-c", "2d", "-tr", TRAINER, "-f", "0", "-device", "cpu",
              "-npp", "1", "-nps", "1"], bundled)
