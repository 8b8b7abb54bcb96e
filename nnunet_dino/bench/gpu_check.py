"""`nnunet-dino gpu-check`: the first thing to run on a CUDA machine.

For each family of the network registry (networks/registry.py) at its smallest size (SegDINO and SegDINO v2
dinov3_vits16, U-DFA dinov2_vits14, Dino U-Net dinov3_vits16; `tiny`: a 64-wide, 4-block backbone and narrow
CNNs, for CPU smoke runs), with a random frozen backbone:

- train: `steps` training steps as nnUNetTrainer.train_step runs them (fp16 autocast around network
  and loss, a GradScaler, gradient clipping on CUDA; the network's own `cpu_precision` on a CPU),
  eager and compiled (torch.compile's default backend on CUDA, aot_eager on a CPU), from the same
  weights on the same batches: the losses must agree. Steps per second and peak memory are those of
  the compiled run after its first (compiling) step.
- gradients: every trainable parameter has a gradient in every compiled step (nnU-Net's DDP has no
  find_unused_parameters, so one without fails multi-GPU training).
- predict: eval logits in the predictor's precision (fp16 autocast on CUDA, bf16 on a CPU) against
  fp32 everywhere (the backbone's own reduced precision off too): close.
- ddp: two processes, one GPU each, as nnU-Net's `-num_gpus 2` (compiled, SyncBatchNorm, DDP), only
  where two GPUs are visible (`gpu_check_ddp`).
"""
from __future__ import annotations

import importlib
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..networks.registry import TINY_BACKBONE, NetworkFamily, build_network, network_families  # noqa: F401

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
NUM_CLASSES = 3


@dataclass(frozen=True)
class Family:
    """One family's network at its smallest size, and its narrow `tiny` variant (a registry row, as the
    checks use it; `of` reads one)."""
    name: str
    network: str                      # "module:Class" in nnunet_dino.networks
    backbone: str
    tiny_options: Tuple[Tuple[str, object], ...] = ()
    #: options that make a training step deterministic (eager and compiled must draw the same network)
    deterministic_options: Tuple[Tuple[str, object], ...] = ()

    @classmethod
    def of(cls, row: NetworkFamily) -> "Family":
        return cls(row.name, row.network_path, row.smallest.backbone, row.tiny_options, row.deterministic_options)

    def build(self, input_channels: int = 1, num_classes: int = NUM_CLASSES, tiny: bool = False,
              seed: int = 0, **options) -> nn.Module:
        module, cls = self.network.split(":")
        network_class = getattr(importlib.import_module(f"nnunet_dino.networks.{module}"), cls)
        return build_network(network_class, self.backbone, input_channels, num_classes, tiny, self.tiny_options,
                             seed, **options)


#: every family of the network registry
FAMILIES: Tuple[Family, ...] = tuple(Family.of(row) for row in network_families())


@dataclass
class CheckSettings:
    device: str = "cuda"
    steps: int = 5
    patch: Tuple[int, int] = (256, 256)
    batch: int = 2
    tiny: bool = False

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def amp(self) -> bool:
        """nnU-Net's step autocast and GradScaler: CUDA only."""
        return self.device == "cuda"

    @property
    def compile_backend(self) -> str:
        return "inductor" if self.device == "cuda" else "aot_eager"


@dataclass
class CheckRow:
    family: str
    check: str
    status: str
    detail: str
    values: Dict[str, object] = field(default_factory=dict)


@dataclass
class TrainRun:
    losses: List[float]
    missing: List[List[str]]          # per step: trainable parameters without a gradient
    steps_per_second: Optional[float]
    peak_memory_bytes: Optional[int]


def batches(settings: CheckSettings, input_channels: int = 1):
    """`steps` seeded (image, target) batches on the device."""
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(settings.steps):
        x = torch.randn(settings.batch, input_channels, *settings.patch, generator=gen)
        target = torch.randint(0, NUM_CLASSES, (settings.batch, *settings.patch), generator=gen)
        out.append((x.to(settings.device), target.to(settings.device)))
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_run(net: nn.Module, model: Callable, settings: CheckSettings) -> TrainRun:
    """nnUNetTrainer.train_step on `model` (net or its compiled form), SGD as nnU-Net's default."""
    device = settings.torch_device
    trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    optimizer = torch.optim.SGD([p for _, p in trainable], lr=1e-3, momentum=0.99, nesterov=True)
    scaler = torch.amp.GradScaler(device.type, enabled=settings.amp)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses, missing, stamps = [], [], []
    for x, target in batches(settings):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=settings.amp):  # CUDA's default: fp16
            loss = F.cross_entropy(model(x), target)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        missing.append([n for n, p in trainable if p.grad is None])
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
        scaler.step(optimizer)
        scaler.update()
        losses.append(float(loss.detach()))
        _sync(device)
        stamps.append(time.perf_counter())
    speed = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else None
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return TrainRun(losses, missing, speed, peak)


def check_training(family: Family, settings: CheckSettings) -> List[CheckRow]:
    """The `train` and `gradients` rows: eager vs compiled steps from identical weights."""
    options = dict(family.deterministic_options)
    eager_net = family.build(tiny=settings.tiny, **options).to(settings.device).train()
    eager = train_run(eager_net, eager_net, settings)
    del eager_net
    torch._dynamo.reset()
    net = family.build(tiny=settings.tiny, **options).to(settings.device).train()
    compiled = train_run(net, torch.compile(net, backend=settings.compile_backend), settings)
    diffs = [abs(a - b) for a, b in zip(compiled.losses, eager.losses)]
    close = all(d <= 2e-2 * abs(b) + 1e-3 for d, b in zip(diffs, eager.losses))
    finite = all(torch.isfinite(torch.tensor(compiled.losses + eager.losses)))
    memory = f"; peak {compiled.peak_memory_bytes / 2**30:.2f} GiB" if compiled.peak_memory_bytes else ""
    speed = f"; {compiled.steps_per_second:.2f} steps/s" if compiled.steps_per_second else ""
    train = CheckRow(family.name, "train", PASS if close and finite else FAIL,
                     f"loss eager {eager.losses[0]:.4f}->{eager.losses[-1]:.4f}, compiled ({settings.compile_backend}) "
                     f"{compiled.losses[0]:.4f}->{compiled.losses[-1]:.4f}, max diff {max(diffs):.2e}{speed}{memory}",
                     dict(eager_losses=eager.losses, compiled_losses=compiled.losses,
                          steps_per_second=compiled.steps_per_second, peak_memory_bytes=compiled.peak_memory_bytes))
    missing = sorted({n for step in compiled.missing for n in step})
    count = sum(p.requires_grad for p in net.parameters())
    grads = CheckRow(family.name, "gradients", FAIL if missing else PASS,
                     f"no gradient: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}" if missing
                     else f"all {count} trainable tensors in every step", dict(missing=missing))
    return [train, grads]


def check_prediction(family: Family, settings: CheckSettings) -> CheckRow:
    """Eval logits in the predictor's precision against fp32 everywhere."""
    device = settings.torch_device
    net = family.build(tiny=settings.tiny).to(device).eval()
    x = batches(settings)[0][0]
    with torch.no_grad():
        if device.type == "cuda":
            with torch.autocast("cuda"):
                low = net(x).float()
        else:
            net.set_cpu_precision("bf16")
            low = net(x).float()
        net.set_cpu_precision("fp32")
        net.backbone.reduced_precision_devices = ()
        ref = net(x)
    error, scale = float((low - ref).abs().max()), float(ref.abs().max())
    label = "fp16 autocast" if device.type == "cuda" else "bf16"
    ok = error <= 0.05 * scale + 1e-3
    return CheckRow(family.name, "predict", PASS if ok else FAIL,
                    f"{label} vs fp32 logits: max diff {error:.2e} (max |logit| {scale:.2f})",
                    dict(max_abs_diff=error, max_abs_logit=scale))


def _guarded(family: Family, check: str, run: Callable[[], Sequence[CheckRow]]) -> List[CheckRow]:
    """Run one check; an exception (a compile failure, out of memory) is that check's FAIL row."""
    try:
        return list(run())
    except Exception as error:  # noqa: BLE001 -- reported as a failed check, the other checks still run
        first_line = (str(error).strip().splitlines() or [""])[0]
        return [CheckRow(family.name, check, FAIL, f"{type(error).__name__}: {first_line}"[:200])]


def run_checks(settings: CheckSettings, families: Optional[Sequence[Family]] = None) -> List[CheckRow]:
    """Every check for every family (default: FAMILIES), in table order."""
    from .gpu_check_ddp import check_ddp
    rows: List[CheckRow] = []
    for family in FAMILIES if families is None else families:
        rows += _guarded(family, "train", lambda: check_training(family, settings))
        rows += _guarded(family, "predict", lambda: [check_prediction(family, settings)])
        rows += _guarded(family, "ddp", lambda: [check_ddp(family, settings)])
    return rows


def all_passed(rows: Sequence[CheckRow]) -> bool:
    return all(row.status != FAIL for row in rows)


def describe_device(settings: CheckSettings) -> str:
    if settings.device == "cuda":
        props = torch.cuda.get_device_properties(settings.torch_device)
        return f"cuda ({props.name}, compute capability {props.major}.{props.minor}, {torch.cuda.device_count()} visible)"
    return "cpu"


def format_table(rows: Sequence[CheckRow], settings: CheckSettings) -> str:
    header = (f"nnunet-dino gpu-check on {describe_device(settings)}, torch {torch.__version__}: RANDOM frozen "
              f"backbones{' (tiny)' if settings.tiny else ''}, patch {settings.patch[0]}x{settings.patch[1]}, "
              f"batch {settings.batch}, {settings.steps} steps")
    width = max(len(r.family) for r in rows) if rows else 6
    lines = [header, "", f"{'family':<{width}}  {'check':<9}  result  detail"]
    lines += [f"{r.family:<{width}}  {r.check:<9}  {r.status:<6}  {r.detail}" for r in rows]
    lines += ["", "all checks passed" if all_passed(rows) else "SOME CHECKS FAILED"]
    return "\n".join(lines)


def results_json(rows: Sequence[CheckRow], settings: CheckSettings) -> dict:
    return {"settings": asdict(settings), "device": describe_device(settings), "torch": torch.__version__,
            "passed": all_passed(rows), "rows": [asdict(r) for r in rows]}
