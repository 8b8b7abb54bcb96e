"""Networks, optimisers and losses from the trainers' own hooks, on a stand-in trainer."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from .settings import BenchSettings

# --- plans, trainers and their hooks -----------------------------------------------------------------
def bench_plans(patch: Sequence[int], batch: int, input_channels: int, num_classes: int):
    """nnU-Net's default 2D plan for `patch` (spacing 1 x 1): PlainConvUNet with as many stages as keep
    the smallest map >= 4, features 32..512, InstanceNorm, LeakyReLU. Returns (plans manager, 2d
    configuration manager, dataset.json); the planner may enlarge `patch` to its pooling multiple."""
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    # ExperimentPlanner's defaults (set in its constructor, which needs a dataset): min edge 4, 32 base
    # features, at most 512 in 2D, 2 convs per encoder and decoder stage
    _, pools, kernels, planned_patch, _ = get_pool_and_conv_props((1.0, 1.0), tuple(patch), 4, 999999)
    n_stages = len(pools)
    arch = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n_stages, "features_per_stage": [min(512, 32 * 2 ** i) for i in range(n_stages)],
            "conv_op": "torch.nn.modules.conv.Conv2d", "kernel_sizes": [list(k) for k in kernels],
            "strides": [list(p) for p in pools], "n_conv_per_stage": [2] * n_stages,
            "n_conv_per_stage_decoder": [2] * (n_stages - 1), "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
            "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    size = [int(s) for s in planned_patch]
    plans = {
        "dataset_name": "Dataset000_Bench", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [999.0, 1.0, 1.0],
        "original_median_shape_after_transp": [1, *size], "image_reader_writer": "NaturalImage2DIO",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {"2d": {
            "data_identifier": "nnUNetPlans_2d", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": batch, "patch_size": size, "median_image_size_in_voxels": size, "spacing": [1.0, 1.0],
            "normalization_schemes": ["ZScoreNormalization"] * input_channels,
            "use_mask_for_norm": [False] * input_channels,
            "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
            "architecture": arch, "batch_dice": True,
        }},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            str(c): {"max": 1.0, "mean": 0.0, "median": 0.0, "min": -1.0, "percentile_00_5": -1.0,
                     "percentile_99_5": 1.0, "std": 1.0} for c in range(input_channels)},
    }
    dataset_json = {"channel_names": {str(c): f"channel{c}" for c in range(input_channels)},
                    "labels": {"background": 0, **{f"class{i}": i for i in range(1, num_classes)}},
                    "numTraining": 1, "file_ending": ".png"}
    manager = PlansManager(plans)
    return manager, manager.get_configuration("2d"), dataset_json


def trainer_class(name: str):
    if name == "nnUNetTrainer":
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
        return nnUNetTrainer
    from ..training import trainers
    return getattr(trainers, name)


def is_dino(trainer) -> bool:
    from ..training.base import nnUNetTrainerDino
    return issubclass(trainer, nnUNetTrainerDino)


def _hook_host(trainer, network, plans_manager, configuration_manager, dataset_json):
    """What `configure_optimizers` and `_build_loss` read from a trainer instance (a real one needs a
    preprocessed dataset and writes folders): the same hooks then build the same optimiser and loss."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    dino = is_dino(trainer)
    host = SimpleNamespace(
        network=network, configuration_manager=configuration_manager, is_ddp=False, num_epochs=1000,
        label_manager=plans_manager.get_label_manager(dataset_json), enable_deep_supervision=not dino,
        initial_lr=trainer.learning_rate if dino else 1e-2,            # nnUNetTrainer.__init__'s values
        weight_decay=trainer.weight_decay_value if dino else 3e-5,
        optimizer_name=getattr(trainer, "optimizer_name", None), lr_schedule=getattr(trainer, "lr_schedule", None),
        warmup_epochs=getattr(trainer, "warmup_epochs", 0))
    host._do_i_compile = lambda: False  # eager everywhere (nnU-Net compiles on CUDA by default)
    host._get_deep_supervision_scales = lambda: nnUNetTrainer._get_deep_supervision_scales(host)
    return host


@dataclass
class Contender:
    """One network with its trainer's optimiser, loss, grad scaler and a synthetic batch."""
    key: str
    trainer: type
    network: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loss: Callable
    data: torch.Tensor
    target: object
    scaler: Optional[object]
    device: torch.device

    @property
    def dino(self) -> bool:
        return is_dino(self.trainer)


def build_contender(key: str, trainer_name: str, settings: BenchSettings, plans=None, load_weights: bool = True,
                    batch: Optional[int] = None) -> Contender:
    """The trainer's network (nnUNetTrainer: deep supervision on, as it trains), optimiser and loss."""
    from ..backbones import WeightsSource, load_backbone_weights
    device = torch.device(settings.device)
    trainer = trainer_class(trainer_name)
    pm, cm, dataset_json = plans or bench_plans(settings.patch, settings.batch, settings.input_channels,
                                                settings.num_classes)
    network = trainer.build_network_architecture(pm, cm, settings.input_channels, settings.num_classes,
                                                 not is_dino(trainer))
    if is_dino(trainer):
        network.set_cpu_precision(settings.cpu_precision)
    if is_dino(trainer) and load_weights:  # seeded random weights: records the fingerprint slim checkpoints need
        load_backbone_weights(network.backbone, WeightsSource("random"))
    network = network.to(device).train()
    host = _hook_host(trainer, network, pm, cm, dataset_json)
    optimizer, _ = trainer.configure_optimizers(host)
    loss = trainer._build_loss(host)
    b = batch or settings.batch
    data = torch.randn(b, settings.input_channels, *cm.patch_size, device=device)
    target = torch.randint(0, settings.num_classes, (b, 1, *cm.patch_size), device=device).float()
    if host.enable_deep_supervision:  # one target per output, as nnU-Net's DownsampleSegForDSTransform
        target = [F.interpolate(target, size=[round(p * s) for p, s in zip(cm.patch_size, scale)], mode="nearest")
                  for scale in host._get_deep_supervision_scales()]
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None
    return Contender(key, trainer, network, optimizer, loss, data, target, scaler, device)


def plugin_cpu_bf16(settings: BenchSettings) -> bool:
    """Whether the plugin networks run under CPU bf16 autocast in this run."""
    from ..networks.base import resolve_cpu_bf16
    return settings.device == "cpu" and resolve_cpu_bf16(settings.cpu_precision)


def step_autocast(device: torch.device):
    """nnUNetTrainer.train_step's autocast: fp16 over the whole step on CUDA, none on CPU (the DINO
    backbones nest their own bf16 autocast inside)."""
    return torch.autocast("cuda", enabled=True) if device.type == "cuda" else contextlib.nullcontext()


def train_step(c: Contender) -> float:
    """nnUNetTrainer.train_step, line for line (without the host-to-device copy)."""
    c.optimizer.zero_grad(set_to_none=True)
    with step_autocast(c.device):
        output = c.network(c.data)
        loss = c.loss(output, c.target)
    if c.scaler is not None:
        c.scaler.scale(loss).backward()
        c.scaler.unscale_(c.optimizer)
        torch.nn.utils.clip_grad_norm_(c.network.parameters(), 12)
        c.scaler.step(c.optimizer)
        c.scaler.update()
    else:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(c.network.parameters(), 12)
        c.optimizer.step()
    return float(loss.detach().cpu())


def set_inference_mode(c: Contender) -> None:
    """eval(), and nnU-Net's network predicts one output (the predictor builds it without deep supervision)."""
    c.network.eval()
    decoder = getattr(c.network, "decoder", None)
    if not c.dino and decoder is not None and hasattr(decoder, "deep_supervision"):
        decoder.deep_supervision = False
