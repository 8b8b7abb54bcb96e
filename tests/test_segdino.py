"""SegDINO network: the paper's head exactly, the input shell, and a frozen backbone."""
import pytest
import torch

from nnunet_dino.backbones import get_backbone_spec
from nnunet_dino.networks.segdino import SegDINO


def tiny_spec():
    return get_backbone_spec("dinov3_vits16").variant("tiny_dinov3", embed_dim=64, depth=4, num_heads=4)


def test_head_has_the_papers_parameter_count():
    net = SegDINO(input_channels=1, num_classes=1, backbone="dinov3_vits16")
    assert sum(p.numel() for p in net.head.parameters()) == 2_213_793  # paper: 2.21 M
    trainable, total = net.parameter_counts()
    assert trainable == 2_213_793 and total == trainable + sum(p.numel() for p in net.backbone.parameters())


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [(64, 64), (64, 80), (50, 70)])
def test_output_matches_input_size_for_any_channels(channels, size):
    net = SegDINO(channels, 3, backbone=tiny_spec())
    out = net(torch.randn(2, channels, *size))
    assert out.shape == (2, 3, *size)
    has_mix = net.input_adapter.mix is not None
    assert has_mix == (channels not in (1, 3))


def test_backbone_is_frozen_builds_no_graph_and_stays_in_eval():
    net = SegDINO(1, 2, backbone=tiny_spec())
    net.train()
    assert not net.backbone.vit.training
    assert not any(p.requires_grad for p in net.backbone.parameters())
    maps = net.backbone(torch.randn(1, 3, 32, 48), net.taps)
    assert all(not m.requires_grad and m.grad_fn is None for m in maps)
    net(torch.randn(1, 1, 32, 48)).sum().backward()
    assert all(p.grad is None for p in net.backbone.parameters())
    assert all(p.grad is not None for p in net.head.parameters())
