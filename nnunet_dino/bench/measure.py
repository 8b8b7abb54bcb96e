"""Timings, FLOPs, checkpoint sizes and peak memory (a fresh process per phase)."""
from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import sys
import time
from dataclasses import asdict
from typing import Callable, Dict, List, Optional, Tuple

import torch

from ..nnunet.runner import run_nnunet
from .settings import BenchSettings, MATMUL_SIZE, MIRROR_AXES_2D
from .contenders import Contender, build_contender, set_inference_mode, step_autocast, train_step

# --- measurements -----------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_round_robin(calls: Dict[str, Callable[[], object]], repeats: int, warmup: int,
                      device: torch.device) -> Dict[str, List[float]]:
    """Seconds per call of each of `calls`: each warmed up `warmup` times, then the timed repetitions
    taken in turn (a, b, c, a, b, c, ...), so a change in machine load reaches every figure alike."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times: Dict[str, List[float]] = {key: [] for key in calls}
    for _ in range(max(1, repeats)):
        for key, fn in calls.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[key].append(time.perf_counter() - start)
    return times


def matmul_call(device: torch.device, bf16: bool) -> Tuple[Callable[[], object], int, str]:
    """An n x n @ n x n matmul (its FLOPs and dtype) in the dtype the backbone's GEMMs run in: bf16 on
    CUDA (the backbone autocasts to bf16) and on CPUs where the networks run bf16, else fp32."""
    n = MATMUL_SIZE[device.type]
    dtype = torch.bfloat16 if bf16 else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    return (lambda: a @ b), 2 * n ** 3, str(dtype).replace("torch.", "")


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call (FlopCounterMode; the CPU fused attention kernel counted like the CUDA ones)."""
    from torch.utils.flop_counter import FlopCounterMode
    mapping = {}
    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_sdpa is not None:
        mapping[cpu_sdpa] = _cpu_sdpa_flops
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return int(counter.get_total_flops())


def frozen_backbone_call(c: Contender) -> Callable[[], object]:
    """The frozen backbone's own forward on the network's (padded, 3-channel) input: the extractor
    path up to the last tap, or, for U-DFA, the same blocks stage-wise without the adapters."""
    from ..networks.base import pad_to_multiple
    net = c.network
    with torch.no_grad():
        image = net.input_adapter(pad_to_multiple(c.data, net.pad_multiple)[0])
    backbone = net.backbone
    cpu_bf16 = torch.autocast("cpu", dtype=torch.bfloat16, enabled=net.uses_cpu_bf16(image))
    if hasattr(net, "taps"):
        def call():
            with step_autocast(c.device), cpu_bf16:
                return backbone(image, net.taps)
        return call

    def call():
        with torch.no_grad(), step_autocast(c.device), cpu_bf16, backbone.autocast(image):
            tokens, rope, grid = backbone.embed(image)
            tokens = backbone.run_blocks(tokens, rope, 0, backbone.depth)
            return backbone.to_map(tokens, grid)
    return call


def checkpoint_sizes(c: Contender, folder: str) -> Dict[str, Optional[int]]:
    """Bytes on disk of nnU-Net's checkpoint dict (weights + optimiser state + the small rest), slim
    (frozen backbone left out) and self-contained."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    def write(name: str) -> int:  # nnU-Net's own save_checkpoint (the plugin trainers wrap it in slim mode)
        path = os.path.join(folder, f"{c.key}_{name}.pth")
        nnUNetTrainer.save_checkpoint(c.host, path)
        size = os.path.getsize(path)
        os.remove(path)
        return size

    full = write("full")
    slim = None
    if c.dino:
        with c.network.slim_state_dict():
            slim = write("slim")
    trainable = sum(p.numel() * p.element_size() for p in c.network.parameters() if p.requires_grad)
    optimizer_state = sum(v.numel() * v.element_size() for s in c.optimizer.state.values()
                          for v in s.values() if torch.is_tensor(v))
    return {"slim_bytes": slim, "full_bytes": full, "slim_over_full": slim / full if slim else None,
            "trainable_weight_bytes": trainable, "optimizer_state_bytes": optimizer_state}


def init_optimizer_state(c: Contender) -> None:
    """One optimiser step on zero gradients: the state a checkpoint carries, without a forward."""
    for p in c.network.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    c.optimizer.step()


def sliding_window_call(c: Contender, plans, settings: BenchSettings) -> Tuple[Callable[[], object], int]:
    """nnU-Net's predictor on one synthetic (C, 1, H, W) case: Gaussian, step 0.5, mirroring (0, 1).
    Returns the call and its tile count."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    pm, cm, dataset_json = plans
    set_inference_mode(c)
    with contextlib.redirect_stdout(None):  # it announces that CPUs keep results off the device
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                    perform_everything_on_device=c.device.type == "cuda", device=c.device,
                                    verbose=False, allow_tqdm=False)
    predictor.manual_initialization(c.network, pm, cm, None, dataset_json, c.trainer.__name__, MIRROR_AXES_2D)
    case = torch.randn(settings.input_channels, 1, *settings.case_size)
    padded = [max(s, p) for s, p in zip(settings.case_size, cm.patch_size)]
    tiles = len(predictor._internal_get_sliding_window_slicers((1, *padded)))
    return (lambda: predictor.predict_sliding_window_return_logits(case)), tiles


# --- memory, in a fresh process per phase ------------------------------------------------------------
def _proc_status_bytes(field: str) -> Optional[int]:
    with contextlib.suppress(OSError, AttributeError):
        with open("/proc/self/status") as f:
            return int(re.search(rf"{field}:\s+(\d+) kB", f.read()).group(1)) * 1024
    return None


def _reset_peak_rss() -> bool:
    """Linux >= 4.0: writing 5 to clear_refs resets the peak RSS (VmHWM), so transient import peaks
    do not count."""
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _proc_status_bytes("VmHWM") is not None
    return False


def _max_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB


def memory_phase(key: str, trainer_name: str, phase: str, settings: BenchSettings,
                 adaptation: Optional[dict] = None) -> dict:
    """Peak memory of two training steps or two inference forwards (the training batch, no_grad) of a
    freshly built network, over the baseline after imports: CPU peak RSS (VmHWM reset after imports,
    else ru_maxrss), or the CUDA allocator's peak. Run it in a fresh process (peak RSS is monotonic)."""
    device = torch.device(settings.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as in the timed run (its workspaces count)
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats(device)
        measure, baseline = "cuda max_memory_allocated", torch.cuda.memory_allocated(device)
    elif _reset_peak_rss():
        measure, baseline = "peak RSS (VmHWM, reset after imports)", _proc_status_bytes("VmRSS")
    else:
        measure, baseline = "ru_maxrss", _max_rss_bytes()
    c = build_contender(key, trainer_name, settings, load_weights=False, adaptation=adaptation)
    if phase == "train":
        for _ in range(2):
            train_step(c)
    else:
        set_inference_mode(c)
        with torch.no_grad(), step_autocast(device):
            for _ in range(2):
                c.network(c.data)
    _sync(device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = _proc_status_bytes("VmHWM") if measure.startswith("peak RSS") else _max_rss_bytes()
    return {"measure": measure, "baseline_bytes": baseline, "peak_bytes": peak, "delta_bytes": peak - baseline}


def memory_in_children(key: str, trainer_name: str, settings: BenchSettings, adaptation: Optional[dict] = None,
                       phases: Tuple[str, ...] = ("train", "inference")) -> Dict[str, dict]:
    """`memory_phase` for training and inference, each in a fresh process of its own (peaks are per
    process), one after the other through the one runner, which stops a child on Ctrl-C."""
    results = {}
    for phase in phases:
        request = json.dumps({"key": key, "trainer": trainer_name, "phase": phase, "settings": asdict(settings),
                              "threads": torch.get_num_threads(), "adaptation": adaptation})
        code, _, output = run_nnunet([sys.executable, "-m", "nnunet_dino.bench", "--memory-child", request],
                                     echo=False)
        if code != 0:
            raise RuntimeError(f"memory measurement of {key} ({phase}) failed:\n{output[-3000:]}")
        # stderr is merged into the output: the result is the last line that is a JSON object
        results[phase] = json.loads([line for line in output.splitlines() if line.startswith("{")][-1])
    return results


def _memory_child_main(request: str) -> None:
    spec = json.loads(request)
    torch.set_num_threads(spec["threads"])
    s = spec["settings"]
    settings = BenchSettings(**{**s, "patch": tuple(s["patch"]), "families": tuple(s["families"]),
                                "case": tuple(s["case"]) if s["case"] else None})
    # everything imported before the baseline (timm is imported lazily by the first ViT build: ~40 MB
    # that would otherwise count in both phases and pull the train/inference ratio towards 1)
    import timm  # noqa: F401
    from ..training import trainers  # noqa: F401
    imported = sorted(m for m in ("timm", "nnunetv2", "batchgeneratorsv2") if m in sys.modules)  # before the baseline
    result = memory_phase(spec["key"], spec["trainer"], spec["phase"], settings, spec.get("adaptation"))
    print(json.dumps({**result, "imported_before_baseline": imported}))
