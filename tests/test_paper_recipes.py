"""The `_paper` trainers (the authors' recipes), the official channel rule, and the frozen encoder's
optional train-mode augmentation (DINOv3 RoPE rescaling, 7B stochastic depth)."""
import pytest
import torch

from dino_weights_helpers import randomize_, tiny_spec
from network_table import build_tiny
from nnunet_dino.backbones import FrozenDinoBackbone
from nnunet_dino.backbones.dinov3 import rope_table
from nnunet_dino.backbones.frozen import ResidualSubsetDrop
from nnunet_dino.backbones.normalization import IMAGENET
from nnunet_dino.backbones.weights import WeightsSource, load_backbone_weights
from nnunet_dino.networks.base import fixed_channel_map
from nnunet_dino.networks.input_adapters import input_module
from nnunet_dino.networks.segdino import SegDINO
from nnunet_dino.training import trainers
from nnunet_helpers import make_trainer

# trainer: (epochs, batch or None for the plans', optimiser, lr, weight decay, network family, rope rescale)
PAPER = {
    "nnUNetTrainerSegDINO_paper": (50, 4, torch.optim.AdamW, 1e-4, 1e-4, "SegDINO", 2.0),
    "nnUNetTrainerSegDINOv2_paper": (50, 4, torch.optim.AdamW, 1e-4, 1e-2, "SegDINO", 2.0),
    "nnUNetTrainerDinoUNet_paper": (200, None, torch.optim.SGD, 1e-3, 3e-5, "Dino U-Net", 2.0),
    "nnUNetTrainerUDFA_paper": (1000, 12, torch.optim.Adam, 3e-4, 1e-4, "U-DFA", None),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_trainer_recipe(name, nnunet_paths, monkeypatch):
    epochs, batch, optimiser, lr, decay, family, rope = PAPER[name]
    monkeypatch.setenv("nnUNet_dino_weights", "random")
    cls = getattr(trainers, name)
    trainer = make_trainer(cls, nnunet_paths["env"]["nnUNet_preprocessed"], nnunet_paths["dataset"])
    plans_batch = trainer.plans_manager.plans["configurations"]["2d"]["batch_size"]
    trainer._set_batch_size_and_oversample()  # what nnU-Net's initialize() does first
    assert trainer.num_epochs == epochs and trainer.batch_size == plans_batch == (batch or plans_batch)
    # training keeps nnU-Net's mirroring augmentation; validation and prediction (the checkpoint's axes) do not
    *_, train_mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    assert train_mirror_axes == (0, 1) and trainer.inference_allowed_mirroring_axes is None
    recipe = trainer.configuration_manager.configuration["nnunet_dino_input"]["recipe"]
    assert recipe == ("zscore" if family == "U-DFA" else "official")  # U-DFA publishes no channel rule
    if family == "U-DFA":
        assert trainer.configuration_manager.patch_size == [224, 224]
    trainer.network = build_tiny(family)
    optimizer, schedule = trainer.configure_optimizers()
    assert type(optimizer) is optimiser and optimizer.param_groups[0]["initial_lr"] == lr  # before any warm-up
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] == decay for p in g["params"]}
    assert decayed == {id(p) for p in trainer.network.parameters() if p.requires_grad}  # every one, as the authors
    if optimiser is torch.optim.SGD:
        assert optimizer.param_groups[0]["momentum"] == 0.99 and optimizer.param_groups[0]["nesterov"]
    assert schedule.kind == ("poly" if family != "SegDINO" else "constant")
    assert cls.backbone_train_augmentation.get("rope_rescale") == rope


def test_defaults_mirror_decay_no_1d_and_never_augment_the_encoder():
    for cls in trainers.PUBLIC_TRAINERS:
        if not cls.__name__.endswith("_paper"):
            assert cls.test_time_mirroring and not cls.decay_all_parameters, cls.__name__
            assert cls.backbone_train_augmentation == {} and cls.input_recipe == "auto", cls.__name__
    assert trainers.nnUNetTrainerDinoUNet_7B_paper.backbone_train_augmentation == {"rope_rescale": 2.0,
                                                                                  "drop_path": 0.4}


def test_official_channel_rule_on_1_2_3_4_channels():
    x = torch.randn(2, 4, 8, 8)
    record = {"recipe": "official", "normalization": IMAGENET.record()}
    for channels, expected in ((1, [0, 0, 0]), (2, [0, 1, 0]), (3, [0, 1, 2]), (4, [0, 1, 2])):
        out = input_module(record, channels)(x[:, :channels])
        assert torch.equal(out, x[:, expected]), channels  # repeated / [c0, c1, c0] / kept / first three
        assert not any(p.requires_grad for p in input_module(record, channels).parameters())
    assert torch.equal(fixed_channel_map(4, "first3"), torch.eye(3, 4))
    assert torch.equal(fixed_channel_map(4), torch.tensor([[.5, 0, 0, .5], [0, 1, 0, 0], [0, 0, 1, 0]]))
    rgb = torch.rand(1, 3, 4, 4)  # rgb_to_0_1 data: [0, 1] unless the record asks for the weights' affine
    assert torch.equal(input_module(record, 3)(rgb), rgb)
    affine = input_module(dict(record, weights_affine=True), 3)(rgb)
    mean, std = torch.tensor(IMAGENET.mean).view(1, 3, 1, 1), torch.tensor(IMAGENET.std).view(1, 3, 1, 1)
    assert torch.allclose(affine, (rgb - mean) / std)


def _segdino_with_jitter(**augmentation):
    torch.manual_seed(0)
    net = SegDINO(1, 2, backbone=tiny_spec("dinov3_vits16"))
    randomize_(net.backbone.vit)  # a fresh ViT's 1e-5 layer scales would hide what RoPE does
    net.backbone.set_train_augmentation(**augmentation)
    return net


def test_rope_rescale_table_is_timms_at_scale_one():
    backbone = FrozenDinoBackbone(tiny_spec("dinov3_vits16"))
    assert torch.equal(rope_table(backbone.vit, (3, 5)), backbone.vit.rope.get_embed(shape=(3, 5)))
    with pytest.raises(ValueError, match="DINOv3"):
        FrozenDinoBackbone(tiny_spec("dinov2_vits14"), rope_rescale=2.0)


def test_rope_rescale_table_is_timms_public_augmentation():
    """timm's public DINOv3 RoPE in train mode (`rescale_coords`) draws the same factor from torch's CPU
    RNG and gives the same table, bit for bit; every call draws afresh."""
    from timm.layers import RotaryEmbeddingDinoV3
    vit = FrozenDinoBackbone(tiny_spec("dinov3_vits16")).vit
    rope = vit.rope
    twin = RotaryEmbeddingDinoV3(rope.dim, temperature=rope.temperature, normalize_coords=rope.normalize_coords,
                                 grid_offset=rope.grid_offset, grid_indexing=rope.grid_indexing,
                                 rotate_half=rope.rotate_half, rescale_coords=2.0).train()
    for seed, grid in ((0, (3, 5)), (1, (6, 4)), (2, (14, 14))):
        torch.manual_seed(seed)
        ours = rope_table(vit, grid, 2.0)
        torch.manual_seed(seed)
        assert torch.equal(ours, twin.get_embed(shape=grid))
        assert not torch.equal(rope_table(vit, grid, 2.0), rope_table(vit, grid, 2.0))


def test_rope_jitter_varies_train_forwards_only_and_never_changes_a_weight():
    x = torch.randn(2, 1, 32, 48)
    plain = _segdino_with_jitter().train()
    assert torch.equal(plain(x), plain(x))  # off by default: train mode is deterministic
    net = _segdino_with_jitter(rope_rescale=2.0)
    net.train()
    assert not net.backbone.vit.training  # still pinned: dropout off, only the rescaling is on
    assert not torch.allclose(net(x), net(x))  # every forward draws new factors
    net.eval()
    assert torch.equal(net(x), net(x)) and torch.equal(net(x), plain.eval()(x))  # eval: exactly the encoder
    before = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    net.train()
    for _ in range(2):
        optimizer.zero_grad()
        net(x).square().mean().backward()
        optimizer.step()
    assert all(torch.equal(v, net.backbone.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in net.backbone.parameters())
    load_backbone_weights(net.backbone, WeightsSource("random"))
    assert net.backbone_record()["train_augmentation"] == {"rope_rescale": 2.0}
    default = _segdino_with_jitter()
    load_backbone_weights(default.backbone, WeightsSource("random"))
    assert "train_augmentation" not in default.backbone_record()  # records of existing models unchanged


def test_subset_stochastic_depth_keeps_the_official_share_of_samples():
    drop = ResidualSubsetDrop(0.4)
    x = torch.ones(5, 3, 2)
    assert torch.equal(drop(x), x)  # inactive (eval) by default
    drop.active = True
    kept = drop(x).flatten(1)[:, 0]
    assert sorted(kept.tolist()) == pytest.approx([0.0, 0.0] + [5 / 3] * 3)  # max(floor(5 * 0.6), 1) = 3 kept, x 5/3
    assert torch.equal(drop(torch.ones(1, 4)), torch.ones(1, 4))  # a batch of 1 keeps its branch
    backbone = FrozenDinoBackbone(tiny_spec("dinov3_vit7b16"), rope_rescale=2.0, drop_path=0.4)
    drops = [m for m in backbone.modules() if isinstance(m, ResidualSubsetDrop)]
    assert len(drops) == 2 * backbone.depth
    backbone.eval()
    assert not any(d.active for d in drops)
    backbone.train()
    assert all(d.active for d in drops) and not backbone.vit.training
