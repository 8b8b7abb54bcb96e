"""Dino U-Net network: deformable attention against a slow reference, shapes, frozen backbone,
trainable parameter counts (architectures.md §2)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nnunet_dino.backbones import get_backbone_spec
from nnunet_dino.networks.deformable_attention import (MultiScaleDeformableAttention, deformable_sample,
                                                       grid_reference_points)
from nnunet_dino.networks.dino_unet import DinoUNet, LearnableUpsampling

TINY = get_backbone_spec("dinov3_vits16").variant("tiny", embed_dim=64, depth=4, num_heads=4)


# --- deformable attention vs an independent, slow reference ---------------------------------------

def _linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return x @ layer.weight.T + layer.bias


def _bilinear_zero_padded(vmap: torch.Tensor, h: int, w: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """vmap (h*w, C) row-major; x, y (N,) pixel coordinates (pixel centres at integers). Corners
    outside the map read zero. Returns (N, C)."""
    x0, y0 = torch.floor(x.detach()), torch.floor(y.detach())
    fx, fy = x - x0, y - y0
    out = 0
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0.long() + dx, y0.long() + dy
            weight = (fx if dx else 1 - fx) * (fy if dy else 1 - fy)
            inside = ((xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)).to(x.dtype)
            index = yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)
            out = out + vmap[index] * (weight * inside)[:, None]
    return out


def _reference_attention(mod: MultiScaleDeformableAttention, query, refs, value_in, shapes):
    """Deformable attention written out with loops over batch, heads, levels and points."""
    b, nq, _ = query.shape
    m, nl, npt, dh = mod.num_heads, mod.num_levels, mod.num_points, mod.head_dim
    value = _linear(mod.value_proj, value_in)
    offsets = _linear(mod.sampling_offsets, query).reshape(b, nq, m, nl, npt, 2)
    logits = _linear(mod.attention_weights, query).reshape(b, nq, m, nl * npt)
    attn = torch.exp(logits - logits.max(-1, keepdim=True).values)
    attn = (attn / attn.sum(-1, keepdim=True)).reshape(b, nq, m, nl, npt)
    starts = [sum(h * w for h, w in shapes[:i]) for i in range(nl)]
    rows = []
    for bi in range(b):
        heads = []
        for mi in range(m):
            acc = 0
            for li, (h, w) in enumerate(shapes):
                vmap = value[bi, starts[li]:starts[li] + h * w, mi * dh:(mi + 1) * dh]
                for pi in range(npt):
                    x = (refs[bi, :, li, 0] + offsets[bi, :, mi, li, pi, 0] / w) * w - 0.5
                    y = (refs[bi, :, li, 1] + offsets[bi, :, mi, li, pi, 1] / h) * h - 0.5
                    acc = acc + attn[bi, :, mi, li, pi, None] * _bilinear_zero_padded(vmap, h, w, x, y)
            heads.append(acc)
        rows.append(torch.cat(heads, dim=-1))
    return _linear(mod.output_proj, torch.stack(rows))


@pytest.mark.parametrize("shapes", [[(5, 7), (3, 4)], [(4, 6)]])
def test_deformable_attention_matches_slow_reference(shapes):
    torch.manual_seed(0)
    dim, b, nq = 16, 2, 9
    mod = MultiScaleDeformableAttention(dim, num_heads=4, num_levels=len(shapes), num_points=3,
                                        value_ratio=0.5).double()
    with torch.no_grad():  # offsets of a few pixels: many points fall outside their level
        for p in mod.parameters():
            p.normal_(0, 0.7)
    query = torch.randn(b, nq, dim, dtype=torch.float64, requires_grad=True)
    value = torch.randn(b, sum(h * w for h, w in shapes), dim, dtype=torch.float64, requires_grad=True)
    refs = (torch.rand(b, nq, len(shapes), 2, dtype=torch.float64) * 1.2 - 0.1).requires_grad_()
    inputs = [query, value, refs] + list(mod.parameters())

    out = mod(query, refs, value, shapes)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, inputs, grad_out)
    ref = _reference_attention(mod, query, refs, value, shapes)
    ref_grads = torch.autograd.grad(ref, inputs, grad_out)

    assert out.shape == (b, nq, dim)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    for g, rg in zip(grads, ref_grads):
        torch.testing.assert_close(g, rg, atol=1e-4, rtol=0)
        assert rg.abs().sum() > 0


def test_deformable_sample_zero_outside_and_float32_path():
    torch.manual_seed(1)
    value = torch.randn(1, 12 + 6, 2, 3)  # levels (3, 4) and (2, 3), 2 heads of 3 channels
    far = torch.tensor([[-3.0, 0.5], [0.5, 4.0], [2.0, 2.0]]).view(1, 3, 1, 1, 1, 2).expand(1, 3, 2, 2, 1, 2)
    out = deformable_sample(value, [(3, 4), (2, 3)], far, torch.ones(1, 3, 2, 2, 1))
    assert torch.equal(out, torch.zeros(1, 3, 6))


def test_deformable_attention_init_and_reference_points():
    mod = MultiScaleDeformableAttention(64, num_heads=16, num_levels=1, num_points=4, value_ratio=0.5)
    bias = mod.sampling_offsets.bias.view(16, 1, 4, 2)
    torch.testing.assert_close(bias[0, 0], torch.tensor([[1.0, 0], [2, 0], [3, 0], [4, 0]]))
    torch.testing.assert_close(bias[4, 0, 1], torch.tensor([0.0, 2.0]), atol=1e-6, rtol=0)  # 90 degrees
    assert torch.count_nonzero(mod.sampling_offsets.weight) == 0
    assert torch.count_nonzero(mod.attention_weights.weight) == 0
    assert torch.count_nonzero(mod.attention_weights.bias) == 0
    assert mod.value_proj.out_features == 32 and mod.head_dim == 2
    refs = grid_reference_points([(2, 4), (1, 2)])
    assert refs.shape == (1, 10, 1, 2)
    torch.testing.assert_close(refs[0, :5, 0], torch.tensor([[0.125, 0.25], [0.375, 0.25], [0.625, 0.25],
                                                             [0.875, 0.25], [0.125, 0.75]]))
    torch.testing.assert_close(refs[0, 8:, 0], torch.tensor([[0.25, 0.5], [0.75, 0.5]]))


# --- the network -------------------------------------------------------------------------------

@pytest.mark.parametrize("channels,size", [(1, (40, 40)), (3, (37, 70)), (4, (64, 33))])
def test_output_shapes_and_gradients(channels, size):
    torch.manual_seed(0)
    net = DinoUNet(channels, 3, TINY).train()
    x = torch.randn(2, channels, *size)
    out = net(x)
    assert out.shape == (2, 3, *size)
    out.square().mean().backward()
    unused = {f"decoder.seg_layers.{i}.{n}" for i in range(2) for n in ("weight", "bias")}  # no deep supervision
    for name, p in net.named_parameters():
        if p.requires_grad and name not in unused:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    with torch.no_grad():
        assert net.eval()(x[:1]).shape == (1, 3, *size)


def test_frozen_backbone():
    torch.manual_seed(0)
    net = DinoUNet(1, 2, TINY)
    before = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    trainable_before = [p.detach().clone() for p in net.parameters() if p.requires_grad]
    assert not any(p.requires_grad for p in net.backbone.parameters())
    net.train()
    assert net.adapter.training and not any(m.training for m in net.backbone.vit.modules())

    x = torch.randn(2, 1, 64, 48)
    maps = net.backbone(net.input_adapter(x), net.taps)  # called with grad enabled
    assert all(not m.requires_grad and m.grad_fn is None for m in maps)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.99, nesterov=True, weight_decay=3e-5)
    for _ in range(2):
        opt.zero_grad()
        net(x).logsumexp(1).mean().backward()
        opt.step()
    assert all(torch.equal(before[k], v) for k, v in net.backbone.state_dict().items())
    after = [p for p in net.parameters() if p.requires_grad]
    assert sum(not torch.equal(a, b) for a, b in zip(trainable_before, after)) > len(after) // 2


def test_options_and_contract():
    assert not hasattr(DinoUNet, "initialize")  # nnU-Net would apply its own init through it
    net = DinoUNet(1, 2, TINY, norm="instance", drop_path=0.0)
    assert not any(isinstance(m, (nn.SyncBatchNorm, nn.BatchNorm2d)) for m in net.modules())
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in DinoUNet(1, 2, TINY).modules())
    assert net.pad_multiple == 32 and net.taps == TINY.default_taps
    with pytest.raises(ValueError):
        DinoUNet(1, 2, TINY, norm="group")
    with pytest.raises(ValueError):
        DinoUNet(1, 2, TINY, taps=(1, 2, 3))


def test_gradient_checkpointing_is_exact():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 32, 64)
    results = []
    for ckpt in (False, True):
        torch.manual_seed(1)
        net = DinoUNet(1, 2, TINY, gradient_checkpointing=ckpt).eval()
        out = net(x)
        out.sum().backward()
        results.append((out, net.adapter.level_embed.grad))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


def test_learnable_upsampling_repeats_then_snaps():
    up = LearnableUpsampling([4])
    out = up([torch.randn(1, 4, 5, 5)], [(22, 20)])[0]  # 5 -> 10 -> 20, then bilinear to 22 x 20
    assert out.shape == (1, 4, 22, 20)
    assert len(list(up.parameters())) == 2


# --- trainable parameters (notes §2.3, K = 2, one input channel) --------------------------------

EXPECTED = {  # size: (adapter, FAPM, upsampling, decoder, total, notes' figure)
    "dinov3_vits16": (3_698_432, 1_393_214, 348_640, 754_274, 6_194_560, 6.19e6),
    "dinov3_vitb16": (10_193_984, 1_884_734, 348_640, 754_274, 13_181_632, 13.18e6),
    "dinov3_vitl16": (16_654_272, 2_212_414, 348_640, 754_274, 19_969_600, 19.97e6),
    "dinov3_vit7b16": (227_084_736, 6_144_574, 348_640, 754_274, 234_332_224, 234.3e6),
}


def _trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_trainable_parameter_counts(name):
    with torch.device("meta"):  # nothing allocated, 7B included
        net = DinoUNet(1, 2, name)
    counts = (_trainable(net.adapter), _trainable(net.fapm), _trainable(net.upsample), _trainable(net.decoder),
              _trainable(net))
    assert counts == EXPECTED[name][:5]
    notes = EXPECTED[name][5]
    assert math.isclose(counts[-1], notes, rel_tol=0.01 if name != "dinov3_vit7b16" else 0.001)
    assert sum(p.numel() for p in net.backbone.parameters() if p.requires_grad) == 0


def test_parameter_count_on_a_real_allocation():
    net = DinoUNet(1, 2, "dinov3_vits16")
    assert _trainable(net) == EXPECTED["dinov3_vits16"][4]
    assert _trainable(DinoUNet(4, 2, TINY)) - _trainable(DinoUNet(1, 2, TINY)) == 15  # 4 -> 3 channel 1x1 mix


def test_level_constants_first_made_under_inference_mode_serve_a_later_training_forward():
    """nnU-Net predicts under torch.inference_mode; the cached level constants it causes must still be
    saveable for backward when the same shapes train afterwards in the same process."""
    from nnunet_dino.networks.deformable_attention import level_constants
    shapes, cpu = ((3, 7), (2, 5)), torch.device("cpu")  # shapes no other test asks for
    with torch.inference_mode():
        level_constants(shapes, cpu, torch.float32)
    size, start, canvas = level_constants(shapes, cpu, torch.float32)
    assert not any(t.is_inference() for t in (size, start, canvas))
    x = torch.ones(2, requires_grad=True)
    (x * canvas).sum().backward()
    assert torch.equal(x.grad, canvas)
