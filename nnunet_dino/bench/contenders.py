"""Networks, optimisers and losses from the trainers' own hooks, on a stand-in trainer."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Optional, Sequence

import torch

from .settings import MIRROR_AXES_2D, BenchSettings

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


def _hook_host(trainer, network, plans_manager, configuration_manager, dataset_json, device: torch.device):
    """What the trainer's hooks read from an instance (a real one needs a preprocessed dataset and writes
    folders): `configure_optimizers` and `_build_loss` build the same optimiser and loss on it, and
    nnU-Net's own `train_step`, `save_checkpoint` and `set_deep_supervision_enabled` run on it. Its
    class is named after the trainer, as `save_checkpoint` records the class name."""
    from nnunetv2.training.logging.nnunet_logger import LocalLogger
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    dino = is_dino(trainer)
    host = type(trainer.__name__, (SimpleNamespace,), {})(
        network=network, configuration_manager=configuration_manager, is_ddp=False, num_epochs=1000, device=device,
        local_rank=0, disable_checkpointing=False, logger=LocalLogger(), _best_ema=None, current_epoch=0,
        my_init_kwargs={}, inference_allowed_mirroring_axes=MIRROR_AXES_2D,
        label_manager=plans_manager.get_label_manager(dataset_json), enable_deep_supervision=not dino,
        initial_lr=trainer.learning_rate if dino else 1e-2,            # nnUNetTrainer.__init__'s values
        weight_decay=trainer.weight_decay_value if dino else 3e-5,
        optimizer_name=getattr(trainer, "optimizer_name", None), lr_schedule=getattr(trainer, "lr_schedule", None),
        warmup_epochs=getattr(trainer, "warmup_epochs", 0),
        decay_all_parameters=getattr(trainer, "decay_all_parameters", False))
    host._do_i_compile = lambda: False  # eager everywhere (nnU-Net compiles on CUDA by default)
    host._get_deep_supervision_scales = lambda: nnUNetTrainer._get_deep_supervision_scales(host)
    return host


@dataclass
class Contender:
    """One network on its trainer's stand-in (optimiser, loss, grad scaler) and a synthetic batch."""
    key: str
    trainer: type
    host: SimpleNamespace
    data: torch.Tensor
    target: object

    @property
    def dino(self) -> bool:
        return is_dino(self.trainer)

    @property
    def network(self) -> torch.nn.Module:
        return self.host.network

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.host.optimizer

    @property
    def device(self) -> torch.device:
        return self.host.device


def build_contender(key: str, trainer_name: str, settings: BenchSettings, plans=None, load_weights: bool = True,
                    batch: Optional[int] = None, adaptation: Optional[dict] = None) -> Contender:
    """The trainer's network (nnUNetTrainer: deep supervision on, as it trains), optimiser and loss;
    `adaptation` (a record, backbones/adaptation.py) replaces the plugin trainer's encoder adaptation."""
    from ..backbones import WeightsSource, load_backbone_weights
    from ..backbones.adaptation import Adaptation
    device = torch.device(settings.device)
    trainer = trainer_class(trainer_name)
    if adaptation is not None:
        trainer = type(trainer.__name__, (trainer,), {"adaptation": Adaptation.from_record(adaptation)})
    pm, cm, dataset_json = plans or bench_plans(settings.patch, settings.batch, settings.input_channels,
                                                settings.num_classes)
    network = trainer.build_network_architecture(pm, cm, settings.input_channels, settings.num_classes,
                                                 not is_dino(trainer))
    if is_dino(trainer):
        network.set_cpu_precision(settings.cpu_precision)
    if is_dino(trainer) and load_weights:  # seeded random weights: records the fingerprint slim checkpoints need
        load_backbone_weights(network.backbone, WeightsSource("random"))
    network = network.to(device).train()
    host = _hook_host(trainer, network, pm, cm, dataset_json, device)
    host.optimizer, _ = trainer.configure_optimizers(host)
    host.loss = trainer._build_loss(host)
    host.grad_scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None  # as nnUNetTrainer
    b = batch or settings.batch
    data = torch.randn(b, settings.input_channels, *cm.patch_size, device=device)
    target = torch.randint(0, settings.num_classes, (b, 1, *cm.patch_size), device=device).float()
    if host.enable_deep_supervision:  # one target per output, by nnU-Net's own transform (per sample)
        from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
        downsample = DownsampleSegForDSTransform(host._get_deep_supervision_scales())
        per_sample = [downsample(segmentation=t)["segmentation"] for t in target]
        target = [torch.stack(scale) for scale in zip(*per_sample)]
    return Contender(key, trainer, host, data, target)


def plugin_cpu_bf16(settings: BenchSettings) -> bool:
    """Whether the plugin networks run under CPU bf16 autocast in this run."""
    from ..networks.base import resolve_cpu_bf16
    return settings.device == "cpu" and resolve_cpu_bf16(settings.cpu_precision)


def step_autocast(device: torch.device):
    """nnUNetTrainer.train_step's autocast: fp16 over the whole step on CUDA, none on CPU (the DINO
    backbones apply their own precision rule inside: FrozenDinoBackbone.autocast)."""
    return torch.autocast("cuda", enabled=True) if device.type == "cuda" else contextlib.nullcontext()


def train_step(c: Contender) -> float:
    """nnUNetTrainer.train_step itself (the plugin trainers' override only adds an out-of-memory message
    and a one-time log line around it)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    return float(nnUNetTrainer.train_step(c.host, {"data": c.data, "target": c.target})["loss"])


def set_inference_mode(c: Contender) -> None:
    """eval(), and deep supervision off through the trainer's own hook (the predictor's network has none)."""
    c.network.eval()
    c.trainer.set_deep_supervision_enabled(c.host, False)
