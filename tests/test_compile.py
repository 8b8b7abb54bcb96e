"""nnU-Net compiles the network for training on CUDA (nnUNet_compile defaults to on there). Every
plugin network must trace through torch.compile and train through it; checked on CPU with the
aot_eager backend (dynamo tracing + AOT autograd, no code generation)."""
import importlib

import pytest
import torch

from nnunet_dino.backbones import get_backbone_spec

NETWORKS = [("segdino", "SegDINO", "dinov3_vits16"), ("udfa", "UDFA", "dinov2_vits14"),
            ("dino_unet", "DinoUNet", "dinov3_vits16")]


#: fp32 must match tightly; under CPU bf16 autocast the traced graph may round differently (bf16 eps 2**-8)
PRECISIONS = [("fp32", dict(rtol=1e-4, atol=1e-5)), ("bf16", dict(rtol=5e-2, atol=5e-2))]


@pytest.mark.parametrize("cpu_precision,tolerance", PRECISIONS)
@pytest.mark.parametrize("module,name,backbone", NETWORKS)
def test_compiled_network_matches_eager_forward_and_backward(module, name, backbone, cpu_precision, tolerance):
    spec = get_backbone_spec(backbone).variant(f"tiny_{backbone}", embed_dim=64, depth=4, num_heads=4)
    torch.manual_seed(0)
    net = getattr(importlib.import_module(f"nnunet_dino.networks.{module}"), name)(1, 2, backbone=spec, cpu_precision=cpu_precision)
    net = net.eval()
    x = torch.randn(1, 1, 64, 64)
    compiled = torch.compile(net, backend="aot_eager")
    out = compiled(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, net(x), **tolerance)
    out.sum().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    assert all(p.grad is None for p in net.backbone.parameters())
