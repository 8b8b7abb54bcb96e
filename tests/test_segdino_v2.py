"""The SegDINO family completed: the authors' current x4 head, ViT-L, and SegDINO v2 (token pyramid
adaptation + residual depthwise decoder); parameter counts against the authors' code."""
import pytest
import torch

from dino_weights_helpers import tiny_spec
from nnunet_dino.backbones import get_backbone_spec
from nnunet_dino.networks.segdino import SegDINO, SegDINOHead
from nnunet_dino.networks.segdino_v2 import ResidualDepthwiseBlock, ScaleAwareDecoder, SegDINOv2, TokenPyramid
from nnunet_dino.training import trainers


def _count(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


@pytest.mark.parametrize("dim, paper, x4", [(384, 2_213_793, 2_475_937), (768, 2_766_753, 3_028_897),
                                           (1024, 3_135_393, 3_397_537)])
def test_segdino_heads_have_the_authors_parameter_counts(dim, paper, x4):
    # the authors' code: paper-era head (abf68e9) and the current one with the x4 ConvTranspose (e383124)
    assert _count(SegDINOHead(dim, 1)) == paper
    assert _count(SegDINOHead(dim, 1, head="x4")) == x4


@pytest.mark.parametrize("dim, expected", [(384, 3_299_593), (768, 3_692_809)])
def test_segdino_v2_decoder_has_the_authors_parameter_count(dim, expected):
    # the authors' DPT (segdino_v2 bc08a45, decoder_dim 256, one class) with a stub backbone of width D
    assert _count(TokenPyramid(dim, 256), ScaleAwareDecoder(256, 1)) == expected


def test_segdino_v2_network_counts_and_frozen_backbone():
    net = SegDINOv2(1, 1, backbone="dinov3_vits16")
    trainable, total = net.parameter_counts()
    assert trainable == 3_299_593 and total - trainable == _count(net.backbone)
    assert not any(p.requires_grad for p in net.backbone.parameters())


def test_residual_depthwise_blocks_start_as_the_identity_and_then_learn():
    block = ResidualDepthwiseBlock(32)
    x = torch.randn(2, 32, 6, 7)
    assert torch.equal(block(x), x)
    block(x).sum().backward()
    assert block.gamma.grad is not None and block.gamma.grad.abs() > 0


@pytest.mark.parametrize("network, options", [(SegDINOv2, {"decoder_dim": 32}), (SegDINO, {"head": "x4"})])
@pytest.mark.parametrize("channels, size", [(1, (64, 64)), (2, (50, 70)), (4, (32, 48))])
def test_output_matches_input_size(network, options, channels, size):
    net = network(channels, 3, backbone=tiny_spec("dinov3_vits16"), **options)
    out = net(torch.randn(2, channels, *size))
    assert out.shape == (2, 3, *size)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_trainers_declare_the_family():
    assert trainers.nnUNetTrainerSegDINO_L.backbone == "dinov3_vitl16"
    assert get_backbone_spec("dinov3_vitl16").default_taps == (4, 11, 17, 23)  # the authors' ViT-L taps
    assert trainers.nnUNetTrainerSegDINO_HeadX4.network_kwargs == {"head": "x4"}
    assert trainers.nnUNetTrainerSegDINOv2.network_class is SegDINOv2
    assert trainers.nnUNetTrainerSegDINOv2_B.backbone == "dinov3_vitb16"
    with pytest.raises(ValueError, match="head"):
        SegDINOHead(64, 1, head="dpt")
