"""nnU-Net compiles the network for training on CUDA (nnUNet_compile defaults to on there). Every
plugin network must trace through torch.compile and train through it; checked on CPU with the
aot_eager backend (dynamo tracing + AOT autograd, no code generation)."""
import pytest
import torch

from network_table import FAMILY_NAMES, build_tiny


#: fp32 must match tightly; under CPU bf16 autocast the traced graph may round differently (bf16 eps 2**-8)
PRECISIONS = [("fp32", dict(rtol=1e-4, atol=1e-5)), ("bf16", dict(rtol=5e-2, atol=5e-2))]


@pytest.mark.parametrize("cpu_precision,tolerance", PRECISIONS)
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_compiled_network_matches_eager_forward_and_backward(family, cpu_precision, tolerance):
    net = build_tiny(family, 1, 2, cpu_precision=cpu_precision).eval()
    x = torch.randn(1, 1, 64, 64)
    compiled = torch.compile(net, backend="aot_eager")
    out = compiled(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, net(x), **tolerance)
    out.sum().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    assert all(p.grad is None for p in net.backbone.parameters())
