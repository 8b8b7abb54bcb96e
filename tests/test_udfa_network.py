"""U-DFA network: shapes, zero-init wiring, frozen backbone under training, gradient routing,
and the parameter counts documented in `nnunet_dino/networks/udfa.py`."""
from __future__ import annotations

import pytest
import torch

from nnunet_dino.backbones import get_backbone_spec
from nnunet_dino.networks.base import count_parameters
from nnunet_dino.networks.blocks import (PixelGrid, patch_grid, resample_to_grid, sincos_position_encoding_2d,
                                         strided_conv_grid)
from nnunet_dino.networks.udfa import UDFA, block_boundaries, fusion_levels

TINY = dict(spa_channels=(8, 16, 16, 32, 32), bottleneck_channels=32)


def tiny_spec(base: str = "dinov2_vits14", depth: int = 6):
    return get_backbone_spec(base).variant(f"tiny_{base}_{depth}", embed_dim=64, depth=depth, num_heads=4)


def tiny_udfa(input_channels: int = 1, num_classes: int = 3, base: str = "dinov2_vits14", **kw) -> UDFA:
    torch.manual_seed(0)
    return UDFA(input_channels, num_classes, backbone=tiny_spec(base), **{**TINY, **kw})


def plain_streams(net: UDFA, x: torch.Tensor):
    """The frozen backbone alone, read at every injection point."""
    bb = net.backbone
    with torch.no_grad():
        tokens, rope, _ = bb.embed(net.input_adapter(x))
        out, done = [], 0
        for end in net.block_ends:
            tokens = bb.run_blocks(tokens, rope, done, end)
            done = end
            out.append(tokens)
    return out


@pytest.mark.parametrize("channels,size", [(1, (56, 56)), (3, (42, 70)), (4, (45, 61)), (1, (33, 29))])
def test_output_shape_any_size_and_channels(channels, size):
    net = tiny_udfa(channels, num_classes=3)
    assert not hasattr(net, "initialize")  # nnU-Net would call it
    y = net(torch.randn(2, channels, *size))
    assert y.shape == (2, 3, *size) and torch.isfinite(y).all()


@pytest.mark.parametrize("modules,base", [(3, "dinov2_vits14"), (2, "dinov2_vits14_reg4"), (6, "dinov2_vits14")])
def test_token_stream_equals_plain_backbone_at_init(modules, base):
    net = tiny_udfa(1, num_fusion_modules=modules, base=base).eval()
    x = torch.randn(2, 1, 42, 56)
    with torch.no_grad():
        tokens, _, _, streams = net.encode(net.input_adapter(x))
    plain = plain_streams(net, x)
    assert len(streams) == modules == len(plain)
    for ours, ref in zip(streams, plain):
        assert torch.equal(ours, ref)
    assert torch.equal(tokens, plain[-1])


def test_training_keeps_backbone_bit_identical_and_reaches_first_lgfa():
    net = tiny_udfa(1, num_classes=3)
    frozen_before = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3, weight_decay=1e-4)
    x, target = torch.randn(2, 1, 42, 42), torch.randint(0, 3, (2, 42, 42))
    grad_on = {}
    hooks = [net.backbone.vit.blocks[i].register_forward_hook(
        lambda m, a, out, i=i: grad_on.__setitem__(i, out.requires_grad)) for i in (0, -1)]
    net.train()
    for _ in range(3):  # step 0: only the injection's zero LayerScales get gradients; later steps: all
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), target).backward()
        opt.step()
    for h in hooks:
        h.remove()
    assert grad_on == {0: False, -1: True}  # no graph before the first injection, activations after
    for name, p in net.lgfa[0].named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for k, v in net.backbone.state_dict().items():
        assert torch.equal(v, frozen_before[k]), k
    # the first injection now changes the stream, and the final tokens alone (no refinement or skip
    # path) send gradient back to it through the frozen blocks
    net.zero_grad(set_to_none=True)
    tokens, _, _, streams = net.encode(net.input_adapter(x))
    assert not torch.equal(streams[0], plain_streams(net, x)[0])
    tokens.square().mean().backward()
    for name, p in net.lgfa[0].inject.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in net.lgfa[0].refine.parameters())


def test_train_mode_keeps_backbone_frozen_and_in_eval():
    net = tiny_udfa(4)
    net.train()
    assert net.training and not net.backbone.vit.training
    assert not any(m.training for m in net.backbone.vit.modules())
    assert not any(p.requires_grad for p in net.backbone.parameters())
    outside = [p for n, p in net.named_parameters() if not n.startswith("backbone.")]
    assert outside and all(p.requires_grad for p in outside)


def test_activation_checkpointing_matches():
    x = torch.randn(1, 1, 28, 42)
    grads = []
    for ckpt in (False, True):
        net = tiny_udfa(1, checkpoint_backbone=ckpt)
        y = net(x)
        y.square().mean().backward()
        grads.append((y.detach(), net.lgfa[0].inject.gamma_attn.gamma.grad.clone()))
    assert torch.allclose(grads[0][0], grads[1][0]) and torch.allclose(grads[0][1], grads[1][1], atol=1e-7)


def test_depth_split_and_scale_mapping():
    assert block_boundaries(12, 3) == (4, 8, 12)
    assert block_boundaries(12, 2) == (6, 12)
    assert block_boundaries(12, 6) == (2, 4, 6, 8, 10, 12)
    assert block_boundaries(40, 3) == (13, 27, 40)
    assert fusion_levels(3) == (2, 3, 4)        # /4, /8, /16
    assert fusion_levels(2) == (2, 4)
    assert fusion_levels(6) == (2, 2, 3, 3, 4, 4)
    assert fusion_levels(1) == (3,)
    with pytest.raises(ValueError):
        block_boundaries(12, 13)


def test_grid_geometry():
    # bilinear resampling reproduces a linear function of pixel position exactly at the new centres
    src, dst = patch_grid(14), strided_conv_grid(8)
    xs = src.offset + src.stride * torch.arange(6.0)
    field = xs.view(1, 1, 1, 6).expand(1, 1, 5, 6).contiguous()
    out = resample_to_grid(field, (5, 9), src, dst)
    want = (dst.offset + dst.stride * torch.arange(9.0)).clamp(xs[0], xs[-1])
    assert torch.allclose(out[0, 0], want.expand(5, 9), atol=1e-4)
    # same pixel -> same encoding, whatever the grid
    a = sincos_position_encoding_2d((3, 3), 16, PixelGrid(14.0, 7.0))
    b = sincos_position_encoding_2d((7, 7), 16, PixelGrid(7.0, 0.0))
    assert torch.allclose(a[4], b[3 * 7 + 3])  # pixel (21, 21) on both


# (trainable, total) for 1 input channel and 4 classes, as documented in udfa.py
DOCUMENTED = {
    "dinov2_vits14": (24_581_444, 46_637_636),
    "dinov2_vitb14": (42_102_596, 128_682_308),
    "dinov2_vitl14": (59_681_604, 364_049_220),
    "dinov2_vitg14": (108_995_396, 1_245_474_628),
}


def test_documented_parameter_counts():
    for name in ("dinov2_vits14", "dinov2_vitb14"):  # the real modules (random weights, no forward)
        assert count_parameters(UDFA(1, 4, backbone=name)) == DOCUMENTED[name], name
    for name in ("dinov2_vitl14", "dinov2_vitg14"):  # shapes only
        with torch.device("meta"):
            assert count_parameters(UDFA(1, 4, backbone=name)) == DOCUMENTED[name], name
    trainable, total = DOCUMENTED["dinov2_vitb14"]
    assert 35e6 <= trainable <= 45e6 and 0.30 <= trainable / total <= 0.36


@pytest.mark.parametrize("size", [(56, 56), (45, 61), (33, 29)])
def test_paper_spa_three_scales_reach_full_resolution(size):
    net = tiny_udfa(2, num_classes=3, spa="paper", spa_channels=(16, 32, 32))
    assert net.spa_strides == (4, 8, 16) and net.fusion_levels == (0, 1, 2) and net.spa_stem == 1
    x = torch.randn(2, 2, *size)
    y = net(x)
    assert y.shape == (2, 3, *size) and torch.isfinite(y).all()
    _, _, spa, _ = net.encode(net.input_adapter(torch.nn.functional.pad(x, (0, (-size[1]) % 14, 0, (-size[0]) % 14))))
    assert [m.shape[1] for m in spa] == [16, 32, 32] and len(net.decoder.stages) == 1 + 2  # /4 skip, x2, x2
    y.square().mean().backward()
    assert all(p.grad is not None for n, p in net.named_parameters() if p.requires_grad), "every parameter learns"
    assert fusion_levels(2, (4, 8, 16)) == (0, 2)
    with pytest.raises(ValueError, match="spa"):
        tiny_udfa(spa="five")


def test_paper_spa_parameter_counts():
    """1 input channel, 4 classes (documented in udfa.py and the README's SPA comparison)."""
    with torch.device("meta"):
        assert count_parameters(UDFA(1, 4, backbone="dinov2_vits14", spa="paper")) == (15_040_404, 37_096_596)
        assert count_parameters(UDFA(1, 4, backbone="dinov2_vitb14", spa="paper")) == (31_873_428, 118_453_140)
