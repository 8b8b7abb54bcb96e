"""`cpu_precision`: the plugin networks' CPU counterpart of nnU-Net's CUDA autocast.

"bf16" must really put the frozen ViT and the adapter's GEMMs in bf16 and hand back fp32 logits close
to fp32's; "fp32" must stay in fp32; "auto" follows the CPU's native bf16 support; training under bf16
leaves the backbone untouched and gives fp32 gradients."""
import re

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from nnunet_dino.networks.base import CPU_PRECISIONS, cpu_has_native_bf16
from network_table import FAMILY_NAMES, build_tiny


def tiny(family: str, cpu_precision: str):
    return build_tiny(family, 1, 3, cpu_precision=cpu_precision)


class MatmulDtypes(TorchDispatchMode):
    """Records the output dtype of every matrix product (linear layers, attention projections)."""
    PRODUCTS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default}

    def __init__(self):
        super().__init__()
        self.dtypes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in self.PRODUCTS:
            self.dtypes.append(out.dtype)
        return out


def forward_with_matmul_dtypes(net, x):
    with torch.no_grad(), MatmulDtypes() as mode:
        out = net(x)
    return out, mode.dtypes


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_bf16_runs_the_backbone_in_bf16_and_returns_fp32_logits_close_to_fp32(family):
    x = torch.randn(2, 1, 64, 64)
    fp32, bf16 = (tiny(family, p).eval() for p in ("fp32", "bf16"))
    bf16.load_state_dict(fp32.state_dict())
    ref, ref_dtypes = forward_with_matmul_dtypes(fp32, x)
    out, dtypes = forward_with_matmul_dtypes(bf16, x)
    assert set(ref_dtypes) == {torch.float32} and set(dtypes) == {torch.bfloat16}
    assert ref.dtype == out.dtype == torch.float32 and out.shape == ref.shape == (2, 3, 64, 64)
    assert not torch.equal(out, ref)                                      # it did compute in bf16
    assert (out - ref).abs().max() <= 0.05 * ref.abs().max() + 1e-3     # bf16 rounding only (8-bit mantissa)


def test_auto_follows_native_bf16_and_settings_are_checked():
    net = tiny(FAMILY_NAMES[0], "auto")
    x = torch.zeros(1, 1, 32, 32)
    assert net.uses_cpu_bf16(x) == cpu_has_native_bf16()
    net.set_cpu_precision("fp32")
    assert not net.uses_cpu_bf16(x)
    net.set_cpu_precision("bf16")
    assert net.uses_cpu_bf16(x) and not net.uses_cpu_bf16(torch.zeros(1, 1, 32, 32, device="meta"))
    with pytest.raises(ValueError, match="cpu_precision must be one of"):
        net.set_cpu_precision("fp16")
    with pytest.raises(ValueError, match=re.escape(str(CPU_PRECISIONS))):
        tiny(FAMILY_NAMES[0], "half")


def train(net, steps: int = 5):
    """Losses of AdamW steps on one fixed batch."""
    trainable = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    torch.manual_seed(1)
    x, target = torch.randn(2, 1, 64, 64), torch.randint(0, 3, (2, 64, 64))
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), target)
        loss.backward()
        losses.append(float(loss.detach()))
        grads = [p.grad for p in trainable if p.grad is not None]
        assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
        optimizer.step()
    return losses


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_training_under_bf16_follows_fp32_and_keeps_the_backbone(family):
    net = tiny(family, "bf16").train()
    frozen = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    losses = train(net)
    reference = train(tiny(family, "fp32").train())
    assert losses[-1] < losses[0] and reference[-1] < reference[0]
    assert max(abs(a - b) for a, b in zip(losses, reference)) < 0.02 * reference[0]
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert all(torch.equal(v, net.backbone.state_dict()[k]) for k, v in frozen.items())
