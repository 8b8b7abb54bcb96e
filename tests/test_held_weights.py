"""A wholly frozen encoder holds the weights autocast would cast (its linears and patch convolution) in the
dtype it computes in: one copy, converted at the first forward on a device, the same outputs as fp32 weights
cast by autocast, and exact fp32 again for loads, for a device or precision that computes in fp32, and for
every adaptation that trains part of the encoder."""
import pytest
import torch

from nnunet_dino.backbones.adaptation import Adaptation
from nnunet_dino.backbones.frozen import FrozenDinoBackbone, held_tensors
from dino_weights_helpers import randomize_, tiny_spec
from network_table import FAMILY_NAMES, build_tiny


def dtypes(module):
    return {p.dtype for p in held_tensors(module.vit)}


def others_fp32(backbone) -> bool:
    held = {id(p) for p in held_tensors(backbone.vit)}
    rest = [t for t in list(backbone.parameters()) + list(backbone.buffers()) if id(t) not in held]
    return bool(rest) and all(t.dtype == torch.float32 for t in rest if t.is_floating_point())


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_held_bf16_weights_give_the_autocast_outputs(family):
    x = torch.randn(2, 1, 64, 64)
    held, cast = (build_tiny(family, cpu_precision="bf16").eval() for _ in range(2))
    cast.backbone.hold_low_precision_weights = False  # fp32 weights, cast by autocast at every call
    assert dtypes(held.backbone) == {torch.float32}   # nothing converted before the first forward
    with torch.no_grad():
        out, ref = held(x), cast(x)
    assert out.dtype == ref.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert dtypes(held.backbone) == {torch.bfloat16} and dtypes(cast.backbone) == {torch.float32}
    assert others_fp32(held.backbone)                  # norms, layer scales, tokens: what autocast keeps fp32
    assert not any(p.requires_grad for p in held.backbone.parameters())


def test_one_copy_converted_once_and_the_encoder_callable_alone():
    backbone = randomize_(FrozenDinoBackbone(tiny_spec("dinov3_vits16")))
    backbone.cpu_autocast_dtype = torch.bfloat16
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():          # the predictor's mode; the held weights must not be inference tensors
        maps = backbone(x)
    weights = list(held_tensors(backbone.vit))
    assert {w.dtype for w in weights} == {torch.bfloat16} and not any(w.is_inference() for w in weights)
    storages = [w.untyped_storage().data_ptr() for w in weights]
    assert maps[0].dtype == torch.float32  # callers get the input's dtype, as before
    with torch.no_grad():
        backbone(x)
    assert [w.untyped_storage().data_ptr() for w in held_tensors(backbone.vit)] == storages  # no re-conversion
    assert sum(w.untyped_storage().nbytes() for w in weights) == sum(2 * w.numel() for w in weights)


def test_the_precision_settings_and_loads_re_derive_it():
    net = build_tiny("SegDINO", cpu_precision="bf16").eval()
    reference = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    fingerprint = net.backbone.loaded_fingerprint = net.backbone.fingerprint()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        net(x)
        assert dtypes(net.backbone) == {torch.bfloat16} and net.backbone.fingerprint() == fingerprint
        net.backbone.load_state_dict(reference)  # an fp32 load: back to fp32 first, every bit kept
        assert all(torch.equal(v, net.backbone.state_dict()[k]) for k, v in reference.items())
        net.set_cpu_precision("fp32")
        net(x)
        assert dtypes(net.backbone) == {torch.float32}
        net.set_cpu_precision("bf16")
        net.backbone.reduced_precision_devices += ("cpu",)  # the CUDA rule, simulated on the CPU
        net(x)
        assert dtypes(net.backbone) == {torch.bfloat16}
    fp32 = build_tiny("SegDINO", cpu_precision="fp32").eval()
    fp32.load_state_dict(net.state_dict())  # a state dict with held tensors loads into an fp32 network
    assert dtypes(fp32.backbone) == {torch.float32}


@pytest.mark.parametrize("mode", ["lora", "last_k", "full"])
def test_an_encoder_that_trains_keeps_fp32(mode):
    adaptation = Adaptation.example(mode)
    net = build_tiny("SegDINO", adaptation=adaptation, cpu_precision="bf16").train()
    x, target = torch.randn(2, 1, 64, 64), torch.randint(0, 3, (2, 64, 64))
    torch.nn.functional.cross_entropy(net(x), target).backward()
    assert all(p.dtype == torch.float32 for p in net.backbone.parameters())
    assert any(p.grad is not None and p.grad.dtype == torch.float32 for p in net.backbone.parameters())


def test_adapting_a_held_encoder_brings_fp32_back():
    net = build_tiny("SegDINO", cpu_precision="bf16").eval()
    with torch.no_grad():
        net(torch.randn(1, 1, 64, 64))
    assert dtypes(net.backbone) == {torch.bfloat16}
    net.backbone.adapt(Adaptation("last_k", last_k=1))
    assert dtypes(net.backbone) == {torch.float32}
