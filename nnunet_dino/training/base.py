"""`nnUNetTrainerDino`: the one place that knows how a frozen-DINO network lives in nnU-Net 2.8.

Per-paper trainers only declare data (class attributes): the network class, the backbone, the
paper's optimiser. This base owns every integration rule, hook by hook:

- `__init__` (exact 2.8.1 signature): refuses 3D configurations other than a 2.5D slab (`slab.py`)
  *before* nnU-Net creates any folder; resolves the weights and checks their names and shapes
  (refusing to start without usable ones, before any fold folder exists); rounds the in-plane patch
  to a multiple of the ViT patch (and of the adapter's stride, at least the network's smallest input)
  *in the plans*, so `nnUNetv2_predict` tiles with it; records there a slab's neighbour mode and
  fusion, and the network's arguments (`network_record.py`: those of the model folder's existing
  folds, if any).
- `build_network_architecture` (classmethod, also called by the predictor with no trainer
  instance): builds the network from class attributes plus the records kept in the plans; the
  input recipe (`input_recipe_record.py`: resolved, checked and recorded by `__init__` before nnU-Net
  writes) puts its module (`networks/input_adapters.py`) in front of the encoder; a slab
  configuration makes it a slab network.
- `initialize`: loads the backbone weights after nnU-Net built (and maybe compiled) the network,
  and records backbone, weights and the position-embedding resize rule in the plans; a slab stage
  chained on the 2d model (`2.5d+2d`) then loads the trainer's trained 2d fold (`slab_start.py`).
- `configure_optimizers`: trainable parameters only (the frozen backbone never enters the
  optimiser), no weight decay on biases and other 1-D parameters (norm scales, gains; matrices such
  as Dino U-Net's `level_embed` are decayed) unless `decay_all_parameters` (the official codes decay
  everything), warm-up + poly or constant schedule. An adapted encoder (`adaptation`,
  backbones/adaptation.py) adds one group per layer at its decayed rate.
- `configure_rotation_dummyDA_mirroring_and_inital_patch_size`: nnU-Net's, and with
  `test_time_mirroring = False` no mirroring at validation and prediction (the checkpoint's
  `inference_allowed_mirroring_axes` is None; training augmentation keeps its mirroring).
- `on_train_epoch_start`: the adaptation's warm-up (the encoder frozen for its first epochs, then
  joining; under DDP the wrapper is rebuilt, so every trainable parameter is reduced and none unused).
- `save_checkpoint`: slim checkpoints (the frozen backbone as a verified record, see networks/base).
- `train_step`: nnU-Net's, plus an out-of-memory message that names the fix and a log of the first loss.
- `set_deep_supervision_enabled`: a no-op (the networks return one full-resolution output).
"""
from __future__ import annotations

import os
import time
from typing import Dict, Optional, Sequence, Type

import torch
from torch import nn
from torch._dynamo import OptimizedModule
from torch.nn.parallel import DistributedDataParallel as DDP

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from .. import environment
from ..cpu_threads import cap_torch_threads
from ..backbones import BackboneSpec, get_backbone_spec, load_backbone_weights, locate_weights
from ..backbones.adaptation import Adaptation, parameter_groups
from ..backbones.weights import RANDOM_BACKBONE_BANNER, describe_weights_record
from ..backbones.weights_check import check_weights_source
from ..networks.base import DinoSegmentationNetwork, count_parameters
from ..errors import UserError
from ..files import write_atomically
from ..networks.input_adapters import apply_input_recipe
from ..networks.slab import make_slab
from ..plans import PLANS_RECORD_KEY, rounded_patch_size, update_configuration
from .input_recipe_record import (INPUT_RECIPE_KEY, describe_recipe, input_recipe_record, input_record,
                                  unrecorded_rgb_affine)
from .network_record import NETWORK_RECORD_KEY, network_kwargs_for, network_record
from .records import CHECKPOINT_ORDER, other_folds_weights, write_fold_weights_record
from .progress import sliding_window_progress
from .schedules import EpochLRSchedule
from .seeding import SeededMixin
from .slab import (SLAB_RECORD_KEY, SLAB_Z_STEP_KEY, check_runnable, describe_slab, inference_mirror_axes,
                   prediction_z_step, slab_marker, slab_record, start_of, validation_at_slab_steps)
from .slab_start import load_start, start_checkpoint, start_parameter_groups, start_warmup_epochs

TEST_PAUSE_ENV_VAR = environment.TEST_PAUSE  # test-only, see pause_for_test
RANDOM_BACKBONE_WARNING_FILE = "RANDOM_BACKBONE_WARNING.txt"
DEBUG_RUN = (2, 15, 2)  # `_debug` twins: epochs, iterations per epoch, validation iterations



class CorruptCheckpointsError(UserError, RuntimeError):
    """`--c`, but no checkpoint of the fold can be read."""


def pause_for_test(point: str) -> None:
    """TEST-ONLY hook for deterministic kill-and-resume tests: when the environment variable
    `nnUNet_dino_test_pause` is `POINT=MARKER_FILE` and `point` equals POINT (e.g. 'epoch 1', or a
    checkpoint name, which pauses after the temporary file is written and before it replaces the
    checkpoint), write MARKER_FILE and wait to be killed. Unset in any real run."""
    setting = os.environ.get(TEST_PAUSE_ENV_VAR, "")
    if setting.partition("=")[0] != point:
        return
    with open(setting.partition("=")[2], "w") as f:
        f.write(f"{os.getpid()}\n")
    while True:
        time.sleep(1)


class NotEnoughMemoryError(RuntimeError):
    """A training step ran out of memory; the message names the smaller settings to use."""


def unwrap(network: nn.Module) -> nn.Module:
    """The plugin network inside nnU-Net's DDP and torch.compile wrappers."""
    net = network.module if isinstance(network, DDP) else network
    return net._orig_mod if isinstance(net, OptimizedModule) else net


def rewrap_ddp(network: DDP) -> DDP:
    """A fresh DDP wrapper around the same module: DDP reduces the parameters that required grad when it
    was built, so it is rebuilt when the encoder's trainable set changes (the adaptation's warm-up). The old
    wrapper's gradient hooks go first: they would wait for a reduction that never comes."""
    network._remove_autograd_hooks()
    return DDP(network.module, device_ids=network.device_ids)


class nnUNetTrainerDino(SeededMixin, nnUNetTrainer):
    # --- what a per-paper trainer declares ---------------------------------------------------
    network_class: Type[DinoSegmentationNetwork] = None
    backbone: str = None
    network_kwargs: Dict[str, object] = {}  # JSON values: recorded in the plans (network_record.py)
    optimizer_name: str = "adamw"           # 'adamw', 'adam' (L2 weight decay) or 'sgd' (nesterov, momentum 0.99)
    learning_rate: float = 1e-4
    weight_decay_value: float = 1e-4
    lr_schedule: str = "poly"               # 'poly' or 'constant'
    warmup_epochs: int = 0
    debug_run: bool = False                 # `_debug` twins: 2 short epochs, for tests (and seed 0)
    seed: Optional[int] = None              # fixed seed (SeededMixin); env nnUNet_dino_seed overrides
    input_recipe: str = "auto"              # 'auto' | 'zscore' | 'rgb' | 'ct_windows' | … (input_recipe_record.py)
    input_recipe_options: Dict[str, object] = {}  # ct_windows: {'windows': [preset or (width, level)] * 3}
    slab_neighbours: str = "rgb"            # 2.5d slabs: 'rgb' (slices s-1, s, s+1 as channels) | 'repeat' (slab.py)
    slab_fusion: str = "conv"               # 2.5d slabs: 'conv' (zero-initialised cross-slice convs) | 'none'
    slab_start_lr_scale: float = 0.1        # 2.5d+2d: rate of what the 2d model trained / the fusions' (slab_start.py)
    slab_start_warmup_fraction: float = 0.05  # 2.5d+2d: linear warm-up over this fraction of the epochs
    # --- the authors' recipes (`_paper` trainers) -----------------------------------------------
    num_epochs_value: Optional[int] = None  # None: nnU-Net's 1000
    batch_size_value: Optional[int] = None  # None: the plans' batch size; else written into the plans
    patch_size_value: Optional[Sequence[int]] = None  # None: the plans' in-plane patch; else it (rounded), in the plans
    test_time_mirroring: bool = True        # False: no mirroring at validation and prediction
    decay_all_parameters: bool = False      # True: weight decay on every trainable parameter
    backbone_train_augmentation: Dict[str, object] = {}  # FrozenDinoBackbone rope_rescale / drop_path
    adaptation: Adaptation = Adaptation()   # how the encoder adapts: frozen, lora, last_k, full

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        self._check_configuration(plans, configuration)  # before nnU-Net writes anything
        self.weights_source = locate_weights(self.backbone_spec())  # refuse early, write nothing:
        check_weights_source(self.weights_source, self.backbone_spec())  # unreadable or another model
        input_recipe = input_recipe_record(type(self), PlansManager(plans), configuration, self.weights_source,
                                           dataset_json.get("channel_names"))
        resuming = bool(plans.get("continue_training"))  # nnUNetv2_train --c (nnU-Net pops the key)
        super().__init__(plans, configuration, fold, dataset_json, device)  # SeededMixin seeds here
        cap_torch_threads()  # nnUNetv2_train gave torch every core of the machine
        self.resuming = resuming
        self.enable_deep_supervision = False
        self.initial_lr = self.learning_rate
        self.weight_decay = self.weight_decay_value
        if self.num_epochs_value is not None:
            self.num_epochs = self.num_epochs_value
        if self.batch_size_value is not None:  # nnU-Net's initialize() takes the batch size from the plans
            self.plans_manager, self.configuration_manager = update_configuration(
                self.plans_manager, configuration, batch_size=self.batch_size_value)
        if self.debug_run:
            self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = DEBUG_RUN
            self.save_every = 1
            self.warmup_epochs = 0
        old = tuple(self.configuration_manager.patch_size)  # a slab's K slices stay; H and W are rounded
        in_plane = rounded_patch_size(self.patch_size_value or old[-2:], self.patch_multiple())
        patch = old[:-2] + tuple(max(s, self.network_class.min_input_size) for s in in_plane)
        if patch != old:
            smallest = self.network_class.min_input_size
            self.print_to_log_file(f"nnunet-dino: patch size {list(old)} -> {list(patch)} (in-plane multiple of "
                                   f"{self.patch_multiple()}" + (f", at least {smallest}" if smallest > 1 else "")
                                   + "), written to the plans")
        channels = len(dataset_json.get("channel_names", dataset_json.get("modality", {})))
        slab = slab_record(type(self), self.configuration_manager, channels, input_recipe)
        network_kwargs, kept_note = network_record(type(self), self.output_folder_base, configuration)
        self.plans_manager, self.configuration_manager = update_configuration(
            self.plans_manager, configuration, patch_size=list(patch), **{INPUT_RECIPE_KEY: input_recipe},
            **{NETWORK_RECORD_KEY: network_kwargs},
            **({SLAB_RECORD_KEY: slab, SLAB_Z_STEP_KEY: prediction_z_step(slab["slices"])} if slab else {}))
        if kept_note:
            self.print_to_log_file(kept_note)
        self.print_to_log_file(f"nnunet-dino: {describe_recipe(input_recipe)}")
        if slab:
            self.print_to_log_file(f"nnunet-dino: {describe_slab(slab)}")
        self.print_to_log_file(f"nnunet-dino: backbone {self.backbone}, weights: {self.weights_source.describe()}")
        if self.weights_source.is_random:
            self.print_to_log_file(RANDOM_BACKBONE_BANNER)
            with open(os.path.join(self.output_folder, RANDOM_BACKBONE_WARNING_FILE), "w") as f:
                f.write(RANDOM_BACKBONE_BANNER.strip() + "\n")
        self._first_loss_logged = False

    # --- declarations resolved -----------------------------------------------------------------
    @classmethod
    def backbone_spec(cls) -> BackboneSpec:
        if cls.network_class is None or cls.backbone is None:
            raise TypeError(f"{cls.__name__} must declare network_class and backbone")
        return get_backbone_spec(cls.backbone)

    @classmethod
    def patch_multiple(cls) -> int:
        return cls.network_class.input_multiple(cls.backbone_spec())

    @classmethod
    def _check_configuration(cls, plans: dict, configuration: str) -> None:
        configurations = plans.get("configurations", {})
        if configuration not in configurations:
            raise ValueError(f"configuration '{configuration}' is not in the plans; available: "
                             f"{', '.join(configurations)}")
        check_runnable(cls.__name__, configuration, PlansManager(plans).get_configuration(configuration))

    # --- network ---------------------------------------------------------------------------------
    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        """Deterministic from plans + class attributes (the predictor calls it without an instance).
        Loads no weights: training loads them in `initialize`, prediction from each fold's checkpoint
        (whose record, not the plans shared by all folds, says what the fold was trained with)."""
        check_runnable(cls.__name__, "this", configuration_manager)
        cap_torch_threads()  # nnUNetv2_predict gave torch every core of the machine, usable or not
        recipe = input_record(configuration_manager)
        imagenet = unrecorded_rgb_affine(configuration_manager, num_input_channels)
        network = cls.network_class(input_channels=num_input_channels, num_classes=num_output_channels,
                                    backbone=cls.backbone, imagenet_normalize=imagenet,
                                    **network_kwargs_for(cls, configuration_manager.configuration))
        if cls.adaptation.trains:
            network.backbone.adapt(cls.adaptation)
        network.backbone.set_train_augmentation(**cls.backbone_train_augmentation)
        network = apply_input_recipe(network, recipe)
        slab = slab_record(cls, configuration_manager, num_input_channels, recipe)
        return network if slab is None else make_slab(network, slab["slices"], slab["neighbours"], slab["fusion"])

    @property
    def unwrapped_network(self) -> DinoSegmentationNetwork:
        return unwrap(self.network)

    def initialize(self):
        super().initialize()
        net = self.unwrapped_network
        info = load_backbone_weights(net.backbone, self.weights_source)
        record = {"backbone": self.backbone, "network": f"{type(net).__module__}.{type(net).__name__}",
                  "pos_embed_resize": net.backbone.pos_embed_resize, "weights": info}
        if self.adaptation.trains:
            record["adaptation"] = self.adaptation.to_record()
        self.plans_manager, self.configuration_manager = update_configuration(
            self.plans_manager, self.configuration_name, **{PLANS_RECORD_KEY: record})
        for note in info.get("notes", ()):  # e.g. training-checkpoint heads dropped
            self.print_to_log_file(f"nnunet-dino: {note}")
        trainable, total = count_parameters(net)
        self.print_to_log_file(f"nnunet-dino: {type(net).__name__} parameters: trainable {trainable:,} / total "
                               f"{total:,} ({100 * trainable / total:.1f} % trainable); encoder "
                               f"{net.backbone.spec.label} {self.adaptation.describe()}; weights {info['format']} "
                               f"from {info['path'] or '-'}")
        if hasattr(net.input_adapter, "describe"):  # an input recipe replaces the adapter and logs itself
            self.print_to_log_file(f"nnunet-dino: input channels: {net.input_adapter.describe()}")
        if self.weights_source.is_random:
            self.print_to_log_file(RANDOM_BACKBONE_BANNER)
        self._compare_with_other_folds(net.backbone_record())
        start = start_of(self.configuration_manager)
        if start:  # a chained slab stage (2.5d+2d): the trainer's own trained 2d fold, fusions at zero
            self.print_to_log_file(load_start(net, start_checkpoint(
                self.output_folder_base, type(self).__name__, self.plans_manager.plans_name, start, self.fold)))
        self._sync_encoder_warmup()

    def on_train_epoch_start(self):
        self._sync_encoder_warmup()
        super().on_train_epoch_start()

    def _sync_encoder_warmup(self) -> None:
        """The adapted encoder is frozen during the adaptation's first `warmup_epochs`, then joins."""
        if not self.adaptation.trains:
            return
        joined = self.current_epoch >= self.adaptation.warmup_epochs
        if not self.unwrapped_network.backbone.set_encoder_trainable(joined):
            return
        self.print_to_log_file(f"nnunet-dino: epoch {self.current_epoch}: the encoder "
                               + ("joins training" if joined else "stays frozen (adaptation warm-up)"))
        if self.is_ddp:
            self.network = rewrap_ddp(self.network)

    def _compare_with_other_folds(self, record: dict) -> None:
        """Warn when this fold is trained with other weights than the model's existing folds (their
        ensemble, and a cross-validation over them, would mix models)."""
        others = {fold: r for fold, r in other_folds_weights(self.output_folder).items()
                  if r.get("sha256") != record["sha256"]}
        if others:
            self.print_to_log_file(
                f"WARNING nnunet-dino: this fold is trained with {describe_weights_record(record)}, but "
                + "; ".join(f"{fold} was trained with {describe_weights_record(r)}" for fold, r in others.items())
                + ". An ensemble or cross-validation of these folds mixes different models.")

    def train_step(self, batch: dict) -> dict:
        pause_for_test(f"epoch {self.current_epoch}")
        try:
            result = super().train_step(batch)
        except RuntimeError as error:  # torch.OutOfMemoryError (CUDA) is a RuntimeError, CPU allocation too
            if "out of memory" not in str(error).lower() and "can't allocate memory" not in str(error):
                raise
            raise NotEnoughMemoryError(
                f"Out of memory in a training step of {type(self).__name__} (backbone {self.backbone}, patch "
                f"{list(self.configuration_manager.patch_size)}, batch {self.configuration_manager.batch_size}). "
                f"Use a smaller backbone (e.g. the _S trainer), a smaller batch_size or patch_size in the plans "
                f"(nnUNet_preprocessed/<Dataset>/nnUNetPlans.json), or a GPU with more memory.") from error
        if not self._first_loss_logged:  # determinism checks compare this line between runs
            self.print_to_log_file(f"nnunet-dino: first iteration loss {float(result['loss']):.10f}")
            self._first_loss_logged = True
        return result

    def save_checkpoint(self, filename: str) -> None:
        """Slim: the frozen backbone is replaced by a record (name, source, sha256) and reloaded from
        nnUNet_dino_weights by prediction, --c and --val. `nnunet-dino bundle` makes them self-contained.
        Atomic: written to a temporary file in the fold folder, flushed and renamed, so a killed run
        keeps its previous checkpoint. The weights record is also written beside it (records.py)."""
        if self.local_rank != 0 or self.disable_checkpointing:
            return super().save_checkpoint(filename)
        net = self.unwrapped_network

        def write(temporary: str) -> None:
            with net.slim_state_dict():
                super(nnUNetTrainerDino, self).save_checkpoint(temporary)
            pause_for_test(os.path.basename(filename))

        write_atomically(filename, write)
        write_fold_weights_record(self.output_folder, net.backbone_record())

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        """As nnU-Net's, but a corrupt checkpoint of this fold (a run killed by an older version, a
        disk error) falls back to the next valid one in nnU-Net's order: final, latest, best."""
        if not isinstance(filename_or_checkpoint, str) or not self.resuming:
            return super().load_checkpoint(filename_or_checkpoint)
        names = CHECKPOINT_ORDER[CHECKPOINT_ORDER.index(os.path.basename(filename_or_checkpoint)):] \
            if os.path.basename(filename_or_checkpoint) in CHECKPOINT_ORDER else ()
        candidates = [filename_or_checkpoint] + [os.path.join(self.output_folder, n) for n in names[1:]]
        failures = []
        for path in candidates:
            if not os.path.isfile(path):
                continue
            try:  # memory-mapped: a cheap readability check before nnU-Net's own load
                epoch = torch.load(path, map_location="cpu", weights_only=False, mmap=True)["current_epoch"]
            except Exception as error:  # noqa: BLE001 - truncated or corrupt: try the next one
                failures.append(f"{os.path.basename(path)} ({type(error).__name__}: {str(error).split('. ')[0]})")
                continue
            if failures:
                self.print_to_log_file(f"nnunet-dino: cannot read {', '.join(failures)}: corrupt. Resuming "
                                       f"from {os.path.basename(path)} (epoch {epoch}) instead.")
            return super().load_checkpoint(path)
        raise CorruptCheckpointsError(
            f"Cannot resume {self.output_folder}: every checkpoint is corrupt ({', '.join(failures)}). Delete "
            f"them to train this fold from scratch (without --c), or restore them from a backup.")

    def perform_actual_validation(self, save_probabilities: bool = False):
        """nnU-Net's validation, with a progress bar over each case's sliding windows; a slab model tiled at
        its recorded z step, as `nnunet-dino predict` tiles it (training/slab.py)."""
        with sliding_window_progress(), validation_at_slab_steps():
            return super().perform_actual_validation(save_probabilities)

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        """nnU-Net's (a slab gets its "dummy 2D" augmentation, mirrored along all three axes), except that a
        slab is mirrored only in-plane at inference, as the 2d configuration is: mirroring along z as well
        would double the prediction time of every volume; and the authors' recipes do not mirror at all."""
        settings = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        if slab_marker(self.configuration_manager) is not None:
            self.inference_allowed_mirroring_axes = inference_mirror_axes(settings[3])
        if not self.test_time_mirroring:  # what the checkpoint, hence the predictor, allows
            self.inference_allowed_mirroring_axes = None
            self.print_to_log_file("nnunet-dino: no test-time mirroring at validation and prediction "
                                   "(the authors' recipe); training augmentation unchanged")
        return settings

    def set_deep_supervision_enabled(self, enabled: bool):
        pass  # one full-resolution output; nnU-Net toggles this around validation regardless

    # --- optimisation ----------------------------------------------------------------------------
    def configure_optimizers(self):
        backbone = unwrap(self.network).backbone
        encoder = {id(p) for p in backbone.parameters()}
        decay, no_decay = [], []
        for name, p in self.network.named_parameters():
            if p.requires_grad and id(p) not in encoder:
                exempt = not self.decay_all_parameters and (p.ndim <= 1 or name.endswith(".bias"))
                (no_decay if exempt else decay).append(p)
        groups = [{"params": decay, "weight_decay": self.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        groups += parameter_groups(backbone, self.initial_lr, self.weight_decay)  # none when frozen
        warmup = self.warmup_epochs
        if start_of(self.configuration_manager):  # fine-tuning the 2d model: slab_start.py says why
            groups = start_parameter_groups(groups, unwrap(self.network), self.slab_start_lr_scale)
            warmup = start_warmup_epochs(self.num_epochs, self.slab_start_warmup_fraction, warmup)
        if self.optimizer_name == "adamw":
            optimizer = torch.optim.AdamW(groups, lr=self.initial_lr)
        elif self.optimizer_name == "adam":
            optimizer = torch.optim.Adam(groups, lr=self.initial_lr)
        elif self.optimizer_name == "sgd":
            optimizer = torch.optim.SGD(groups, lr=self.initial_lr, momentum=0.99, nesterov=True)
        else:
            raise ValueError(f"optimizer_name must be 'adamw', 'adam' or 'sgd', got {self.optimizer_name!r}")
        schedule = EpochLRSchedule(optimizer, self.initial_lr, self.num_epochs, self.lr_schedule, warmup)
        return optimizer, schedule
