"""nnU-Net compiles the network for training on CUDA (nnUNet_compile defaults to on there). Every
plugin network must trace through torch.compile and train through it; checked on CPU with the
aot_eager backend (dynamo tracing + AOT autograd, no code generation)."""
import importlib

import pytest
import torch

from nnunet_dino.backbones import get_backbone_spec

NETWORKS = [("segdino", "SegDINO", "dinov3_vits16"), ("udfa", "UDFA", "dinov2_vits14"),
            ("dino_unet", "DinoUNet", "dinov3_vits16")]


@pytest.mark.parametrize("module,name,backbone", NETWORKS)
def test_compiled_network_matches_eager_forward_and_backward(module, name, backbone):
    spec = get_backbone_spec(backbone).variant(f"tiny_{backbone}", embed_dim=64, depth=4, num_heads=4)
    torch.manual_seed(0)
    net = getattr(importlib.import_module(f"nnunet_dino.networks.{module}"), name)(1, 2, backbone=spec).eval()
    x = torch.randn(1, 1, 64, 64)
    compiled = torch.compile(net, backend="aot_eager")
    out = compiled(x)
    torch.testing.assert_close(out, net(x), rtol=1e-4, atol=1e-5)
    out.sum().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    assert all(p.grad is None for p in net.backbone.parameters())
