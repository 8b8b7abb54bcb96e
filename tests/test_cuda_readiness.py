"""The CUDA training path, simulated on the CPU as closely as it goes.

nnU-Net trains on CUDA under an fp16 autocast around network and loss, with a GradScaler, and
compiles the network. Here: the same step under `torch.autocast("cpu", torch.float16)` and
`torch.amp.GradScaler("cpu")`, with the frozen encoder's CUDA precision rule forced on for CPU
tensors, compiled with aot_eager (and inductor where a C++ compiler exists); and every trainable
parameter must get a gradient, whatever the number of input channels.
"""
import json
import re
import shutil
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from nnunet_dino.bench import gpu_check
from nnunet_dino.networks.base import InputToRGB, fixed_channel_map
from nnunet_dino.networks.dino_unet import SqueezeExcitation
from network_table import build_tiny

FAMILIES = {family.name: family for family in gpu_check.FAMILIES}
#: inductor where a C++ compiler exists, for the families it compiles in a test's time on a CPU (its C++
#: code generation for Dino U-Net's deformable attention takes many minutes; gpu-check compiles that one
#: with inductor on CUDA)
INDUCTOR = ["inductor"] if shutil.which("g++") or shutil.which("cc") else []
COMPILES = ([(name, "aot_eager") for name in FAMILIES]
            + [(name, backend) for name in ("SegDINO", "U-DFA") for backend in INDUCTOR])
#: inductor's C++ code generation time grows with the graph: U-DFA compiles with one fusion module on the
#: paper's three-scale SPA there (every op type of the network, a third of the CPU time of the default
#: graph); aot_eager traces the default one
INDUCTOR_OPTIONS = {"U-DFA": dict(num_fusion_modules=1, spa="paper", spa_channels=(8, 16, 16))}


def build(family: str, input_channels: int = 1, num_classes: int = 3, **overrides):
    return build_tiny(family, input_channels, num_classes, **{"cpu_precision": "fp32", **overrides})


def wake_gates(net):
    """Dino U-Net's squeeze-excitation gates (a ReLU hidden layer of C // 16 units) may start dead at
    PyTorch's default init: then their parameters get a zero gradient, a real one (DDP accepts it), not
    a missing one. A positive hidden bias wakes them, so the wiring test can ask for non-zero gradients."""
    for module in net.modules():
        if isinstance(module, SqueezeExcitation):
            torch.nn.init.constant_(module.gate[1].bias, 1.0)
    return net


def simulate_cuda_precision(net):
    """Make the frozen encoder apply its CUDA precision rule to CPU tensors (as `x.is_cuda` would)."""
    net.backbone.reduced_precision_devices += ("cpu",)
    return net


def train_steps(net, model, channels: int, amp: bool, steps: int = 2):
    """`steps` of nnUNetTrainer.train_step on `model` (net or its compiled form), on one batch: with
    `amp`, fp16 autocast around network and loss and a GradScaler; SGD with nnU-Net's momentum and
    gradient clipping. Returns the losses and, per step, the trainable parameters that got no
    gradient (None) and those whose gradient was None or all zero."""
    trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    optimizer = torch.optim.SGD([p for _, p in trainable], lr=1e-2, momentum=0.99, nesterov=True)
    scaler = torch.amp.GradScaler("cpu", enabled=amp)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, channels, 64, 64, generator=gen)
    target = torch.randint(0, 3, (2, 64, 64), generator=gen)
    losses, missing, idle = [], [], []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.float16, enabled=amp):
            loss = F.cross_entropy(model(x), target)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        missing.append(sorted(n for n, p in trainable if p.grad is None))
        idle.append({n for n, p in trainable if p.grad is None or not p.grad.abs().sum() > 0})
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
        scaler.step(optimizer)
        scaler.update()
        losses.append(float(loss.detach()))
    return losses, missing, idle


@pytest.mark.parametrize("family,backend", COMPILES)
def test_compiled_fp16_amp_step_with_the_encoders_cuda_precision(family, backend, one_thread):
    """Compiled forward + backward + GradScaler step agrees with eager; every trainable parameter has a
    gradient tensor in every step (fp16 may round some to zero early on: zero-initialised gates)."""
    torch._dynamo.reset()
    options = INDUCTOR_OPTIONS.get(family, {}) if backend == "inductor" else {}
    net = simulate_cuda_precision(build(family, **options)).train()
    eager_net = simulate_cuda_precision(build(family, **options)).train()
    losses, missing, _ = train_steps(net, torch.compile(net, backend=backend), 1, amp=True)
    reference, _, _ = train_steps(eager_net, eager_net, 1, amp=True)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses == pytest.approx(reference, rel=2e-2)
    assert missing == [[], []]


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_trainable_parameter_gets_a_gradient(family, channels, one_thread):
    """In fp32, so that only the wiring decides. Zero-initialised gates (U-DFA's injection LayerScale)
    leave what they gate with a zero gradient at step 0 only: a parameter passes with a gradient in
    every step that is non-zero in one of the two."""
    net = wake_gates(build(family, channels)).train()
    _, missing, idle = train_steps(net, net, channels, amp=False)
    assert missing == [[], []]
    assert not idle[0] & idle[1], f"trainable parameters without a gradient: {sorted(idle[0] & idle[1])[:5]}"


def test_fixed_channel_map_keeps_every_channel_and_loads_old_checkpoints():
    expected = {1: [[1.0], [1.0], [1.0]], 2: [[1, 0], [0, 1], [1, 0]], 3: torch.eye(3).tolist(),
                4: [[0.5, 0, 0, 0.5], [0, 1, 0, 0], [0, 0, 1, 0]],
                5: [[0.5, 0, 0, 0.5, 0], [0, 0.5, 0, 0, 0.5], [0, 0, 1, 0, 0]]}
    for channels, weights in expected.items():
        torch.testing.assert_close(fixed_channel_map(channels), torch.tensor(weights, dtype=torch.float32))
    fixed, learnable = InputToRGB(4, learnable=False), InputToRGB(4)
    x = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(fixed(x), torch.stack([(x[:, 0] + x[:, 3]) / 2, x[:, 1], x[:, 2]], dim=1))
    assert not any(p.requires_grad for p in fixed.parameters()) and all(p.requires_grad for p in learnable.parameters())
    fixed.load_state_dict(learnable.state_dict())  # same keys: checkpoints from a learnable mix still load
    segdino, udfa = build("SegDINO", 2), build("U-DFA", 2)
    assert not segdino.input_adapter.mix.weight.requires_grad and udfa.input_adapter.mix.weight.requires_grad


def test_the_encoders_precision_rule(monkeypatch):
    backbone = build("SegDINO").backbone
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    for major, dtype in ((7, torch.float16), (8, torch.bfloat16), (9, torch.bfloat16)):
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device, m=major: SimpleNamespace(major=m))
        assert backbone.compute_dtype(cuda) == dtype
    assert backbone.compute_dtype(cpu) is None
    backbone.reduced_precision_devices += ("cpu",)
    assert backbone.compute_dtype(cpu) == torch.bfloat16
    x, weight = torch.randn(2, 4), torch.randn(4, 4)
    with torch.no_grad(), backbone.autocast(x):  # no gradients: the encoder's dtype, inside any autocast
        assert (x @ weight).dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.float16):
        with torch.no_grad(), backbone.autocast(x):
            assert (x @ weight).dtype == torch.bfloat16
        with backbone.autocast(x):  # gradients under an enclosing autocast: its dtype, nothing nested
            assert (x @ weight).dtype == torch.float16
    with backbone.autocast(x):
        assert (x @ weight).dtype == torch.bfloat16


def test_dino_unet_under_sync_batchnorm_compiles_and_computes_batch_norm(one_thread):
    """nnUNetTrainer compiles the network, then converts its BatchNorms to SyncBatchNorm for DDP.
    Without a process group (and in eval) SyncBatchNorm computes plain batch norm; its synchronised
    training needs GPUs (gpu-check's DDP run covers it)."""
    torch._dynamo.reset()
    plain, net = build("Dino U-Net", drop_path=0.0), build("Dino U-Net", drop_path=0.0)  # deterministic
    compiled = torch.nn.SyncBatchNorm.convert_sync_batchnorm(torch.compile(net, backend="aot_eager"))
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in net.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    x = torch.randn(2, 1, 64, 64)
    for mode in ("train", "eval"):
        getattr(plain, mode)(), getattr(net, mode)()
        out, ref = compiled(x), plain(x)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    compiled.train()
    compiled(x).square().mean().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_deformable_attention_builds_no_tensor_from_python_data_after_the_first_forward():
    """torch.tensor / new_tensor from Python lists is a host-to-device copy (and a sync on CUDA)."""
    class CountLiftFresh(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.count += func is torch.ops.aten.lift_fresh.default
            return func(*args, **(kwargs or {}))

    net, x = build("Dino U-Net").eval(), torch.randn(1, 1, 64, 96)
    counts = []
    for _ in range(2):
        with torch.no_grad(), CountLiftFresh() as mode:
            net(x)
        counts.append(mode.count)
    assert counts[0] > 0 and counts[1] == 0


class Unwired(gpu_check.Family):
    """A family whose network carries a trainable parameter no computation uses."""

    def build(self, *args, **kwargs):
        net = super().build(*args, **kwargs)
        net.unwired = torch.nn.Parameter(torch.zeros(1))
        return net


def gpu_check_command(argv):
    import argparse

    from nnunet_dino.commands import gpu_check as command
    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["gpu-check", *argv])
    return args.run(args)


def test_gpu_check_command_on_cpu(tmp_path, capsys, monkeypatch, one_thread):
    argv = ["--device", "cpu", "--tiny", "--steps", "2", "--patch", "64", "64", "--json", str(tmp_path / "r.json")]
    assert gpu_check_command(argv) == 0
    table = capsys.readouterr().out
    for family in FAMILIES:
        for check, status in (("train", "PASS"), ("gradients", "PASS"), ("predict", "PASS"), ("ddp", "SKIP")):
            assert re.search(rf"^{re.escape(family)} +{check} +{status} ", table, re.M), (family, check, table)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["passed"] and len(report["rows"]) == 4 * len(FAMILIES)

    monkeypatch.setattr(gpu_check, "FAMILIES", (Unwired("Unwired", "segdino:SegDINO", "dinov3_vits16"),))
    assert gpu_check_command(argv) == 1
    table = capsys.readouterr().out
    assert re.search(r"^Unwired +gradients +FAIL +no gradient: unwired$", table, re.M), table
    assert re.search(r"^Unwired +train +PASS ", table, re.M) and "SOME CHECKS FAILED" in table
