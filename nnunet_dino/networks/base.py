"""What every DINO segmentation network here shares (the shell around each paper's adapter).

nnU-Net hands the network its own normalised channels at the plan's patch size. The shell maps
them to the 3 channels a DINO encoder expects, pads H and W to the multiple the encoder (and the
adapter) needs, and crops the logits back, so any nnU-Net plan works unchanged.
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import warnings
from typing import Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import BackboneSpec, FrozenDinoBackbone, get_backbone_spec
from ..backbones.adaptation import Adaptation, AdaptationError
from ..backbones.normalization import IMAGENET
from ..backbones.weights import (RANDOM_MODEL_BANNER, RANDOM_SETTING, WEIGHTS_ENV_VAR, WeightsError, WeightsSource,
                                 describe_weights_record, load_backbone_weights, locate_weights, record_is_random)

#: state-dict entry that replaces the frozen backbone's tensors in slim checkpoints
BACKBONE_RECORD_KEY = "nnunet_dino.backbone"

#: `cpu_precision` settings: "auto" = bf16 autocast where the CPU computes bf16 natively, else fp32
CPU_PRECISIONS = ("auto", "bf16", "fp32")


#: fixed channel rules for inputs with more than 3 channels (fewer: output j is input j mod C, which is
#: the official Dino U-Net rule too: 1 -> repeated, 2 -> [c0, c1, c0])
CHANNEL_RULES = ("mean", "first3")


def fixed_channel_map(input_channels: int, rule: str = "mean") -> torch.Tensor:
    """(3, C) weights of a fixed channel mapping: output channel j is input channel j mod C for
    C < 3 (1: repeat; 2: [c0, c1, c0]); for C >= 3, `rule` 'mean': the mean of the input channels i
    with i mod 3 == j (3: identity; 4: [(c0 + c3) / 2, c1, c2]; none dropped), 'first3': input
    channel j (the official Dino U-Net rule: the first three kept, the rest dropped)."""
    if rule not in CHANNEL_RULES:
        raise ValueError(f"channel rule must be one of {CHANNEL_RULES}, got {rule!r}")
    out = torch.arange(3)[:, None]
    source = torch.arange(input_channels)[None, :]
    if input_channels < 3:
        hits = source == out % input_channels
    else:
        hits = (source % 3 == out) if rule == "mean" else (source == out)
    hits = hits.float()
    return hits / hits.sum(dim=1, keepdim=True)


class InputToRGB(nn.Module):
    """nnU-Net channels -> 3 channels.

    1 channel is repeated and 3 pass through (no parameters: the pretrained patch embedding sees
    what it was trained on). Any other count (2, 4, ... e.g. multi-sequence MRI) goes through a 1x1
    conv `mix`: `learnable` (for networks whose mapped image also feeds a trainable path, which gives
    the conv its gradient) it starts at the channel mean, so training starts from a grey image;
    otherwise it is frozen at `fixed_channel_map` (the image then feeds only the frozen encoder, where
    a learnable conv would get no gradient: stuck at its initialisation on one GPU, a failed second
    step under DDP). Both keep the state-dict keys `mix.weight` and `mix.bias`.
    `imagenet_normalize` applies the ImageNet mean/std affine, for inputs nnU-Net scaled to [0, 1]
    (`rgb_to_0_1`); z-scored inputs are already standardised and pass as they are.
    `rule` names the fixed mapping (`CHANNEL_RULES`) used when the mix is not learnable.
    """

    def __init__(self, input_channels: int, imagenet_normalize: bool = False, learnable: bool = True,
                 rule: str = "mean"):
        super().__init__()
        if input_channels < 1:
            raise ValueError(f"input_channels must be >= 1, got {input_channels}")
        self.input_channels = input_channels
        self.mix = None
        if input_channels not in (1, 3):
            self.mix = nn.Conv2d(input_channels, 3, kernel_size=1)
            with torch.no_grad():
                self.mix.weight.copy_(fixed_channel_map(input_channels, rule)[:, :, None, None] if not learnable
                                      else torch.full_like(self.mix.weight, 1.0 / input_channels))
                self.mix.bias.zero_()
            self.mix.requires_grad_(learnable)
        self.rule = rule
        self.imagenet_normalize = imagenet_normalize
        self.register_buffer("mean", torch.tensor(IMAGENET.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET.std).view(1, 3, 1, 1), persistent=False)

    def describe(self) -> str:
        """How the input channels become the encoder's three, in words (for the training log)."""
        c = self.input_channels
        if c == 1:
            rule = "1 channel repeated to 3"
        elif c == 3:
            rule = "3 channels passed as they are"
        elif self.mix.weight.requires_grad:
            rule = f"{c} channels mixed to 3 by a learnable 1x1 conv (starting at the channel mean)"
        else:
            weights = fixed_channel_map(c, self.rule)
            rule = f"{c} channels mapped to 3 by a fixed rule: " + ", ".join(
                f"out{j} = " + " + ".join(f"{w:g}*in{i}" for i, w in enumerate(row.tolist()) if w)
                for j, row in enumerate(weights))
        return rule + ("; then the ImageNet mean/std" if self.imagenet_normalize else "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.input_channels:
            raise ValueError(f"expected {self.input_channels} input channels, got {x.shape[1]}")
        if self.mix is not None:
            x = self.mix(x)
        elif self.input_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.imagenet_normalize:
            x = (x - self.mean) / self.std
        return x


def pad_to_multiple(x: torch.Tensor, multiple: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Zero-pad H and W (bottom/right) up to a multiple; returns the padded tensor and the old size.
    Zero is the mean intensity of nnU-Net's z-scored inputs."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    return x, (h, w)


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """True where oneDNN runs bf16 in hardware (AVX512-BF16 or AMX): there a bf16 GEMM is several times
    faster than an fp32 one (README, Performance); elsewhere bf16 is emulated, slower."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_cpu_bf16(cpu_precision: str) -> bool:
    """Whether a `cpu_precision` setting means bf16 autocast on this CPU."""
    if cpu_precision not in CPU_PRECISIONS:
        raise ValueError(f"cpu_precision must be one of {CPU_PRECISIONS}, got {cpu_precision!r}")
    return cpu_precision == "bf16" or (cpu_precision == "auto" and cpu_has_native_bf16())


def count_parameters(module: nn.Module) -> Tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return trainable, total


class DinoSegmentationNetwork(nn.Module):
    """Base shell: input mapping, padding, frozen backbone. Subclasses implement `segment`, which
    maps a padded (B, 3, H', W') image to (B, num_classes, H', W') logits.

    Every subclass accepts (input_channels, num_classes, backbone, pos_embed_resize,
    imagenet_normalize, **paper options) so the trainer base can build any of them from the
    plans and class attributes alone (that is what `nnUNetv2_predict` does in a fresh process).
    `pos_embed_resize` None is the backbone family's default rule (loading weights sets their source's).
    The parameter set never depends on nnU-Net's deep-supervision flag.

    `cpu_precision` is the CPU counterpart of nnU-Net's CUDA autocast: "auto" (default) runs the
    forward under bf16 autocast where the CPU has native bf16 and in fp32 elsewhere; "bf16" and
    "fp32" force one. Logits come back in fp32 so the loss is computed in fp32. CUDA is unaffected
    (nnU-Net's fp16 step autocast, the backbone's own precision rule: FrozenDinoBackbone.autocast).
    """

    #: H and W must also be multiples of this (besides the ViT patch), e.g. 32 for Dino U-Net
    extra_pad_multiple: int = 1
    #: the smallest H and W a training patch may have (the trainer enlarges smaller plans to it)
    min_input_size: int = 1
    #: whether `segment` feeds the mapped image to a trainable module (a CNN branch), not only to the
    #: frozen encoder: only then can a learnable channel mix learn (see InputToRGB)
    image_reaches_trainable_path: bool = False
    #: decoder stages (submodule names) whose outputs a 2.5D slab fuses across slices (networks/slab.py)
    slab_fusion_points: Tuple[str, ...] = ()

    def __init__(self, input_channels: int, num_classes: int, backbone: Union[str, BackboneSpec],
                 pos_embed_resize: Optional[str] = None, imagenet_normalize: bool = False,
                 cpu_precision: str = "auto"):
        super().__init__()
        self.set_cpu_precision(cpu_precision)
        spec = get_backbone_spec(backbone) if isinstance(backbone, str) else backbone
        self.input_channels = input_channels
        self.num_classes = num_classes
        self.backbone = FrozenDinoBackbone(spec, pos_embed_resize=pos_embed_resize)
        self.input_adapter = InputToRGB(input_channels, imagenet_normalize,
                                        learnable=self.image_reaches_trainable_path)
        self.pad_multiple = self.input_multiple(spec)
        self.slab = None  # a networks.slab.Slab makes this a 2.5D network taking (B, C, K, H, W) slabs

    @classmethod
    def input_multiple(cls, spec: BackboneSpec) -> int:
        """H and W are padded to a multiple of this: the ViT patch and the adapter's stride. The trainer
        rounds the plan's patch to it, so prediction tiles need no padding."""
        return math.lcm(spec.patch_size, cls.extra_pad_multiple)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def set_cpu_precision(self, cpu_precision: str) -> None:
        # resolved once: the CPU does not change under a live network (and dynamo need not trace the probe)
        self.cpu_bf16 = resolve_cpu_bf16(cpu_precision)

    def uses_cpu_bf16(self, x: torch.Tensor) -> bool:
        """Whether `forward(x)` runs under CPU bf16 autocast (see `cpu_precision`)."""
        return self.cpu_bf16 and x.device.type == "cpu"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slab = self.slab
        if slab is not None:  # (B, C, K, H, W): every slice of every slab in one batch
            x = slab.to_slices(x)
        x, (h, w) = pad_to_multiple(x, self.pad_multiple)
        if not self.uses_cpu_bf16(x):
            logits = self._segment_slices(x)[..., :h, :w]
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = self._segment_slices(x)
            logits = logits[..., :h, :w].float()
        return logits if slab is None else slab.to_slab(logits)

    def _segment_slices(self, x: torch.Tensor) -> torch.Tensor:
        rgb = self.input_adapter(x)
        return self.segment(rgb if self.slab is None else self.slab.encoder_input(rgb))

    def parameter_counts(self) -> Tuple[int, int]:
        return count_parameters(self)

    # --- slim checkpoints ------------------------------------------------------------------------
    # The frozen backbone never changes, so checkpoints need not carry it (a ViT-B is 344 MB, in
    # every checkpoint of every fold). In slim mode, state_dict() replaces the backbone's tensors by
    # one record (name, weights source, sha256); load_state_dict() restores them from
    # nnUNet_dino_weights and checks the hash. A bundled (self-contained) state dict keeps the tensors
    # AND the record, marked `weights_included`. Either way the record is the one source of what the
    # backbone was loaded with, the position-embedding resize rule included; plain full state dicts
    # load as usual. An adapted encoder (backbones/adaptation.py) keeps what it changed beside the
    # record -- LoRA tensors, the trained blocks, or for `full` the whole ViT (then no base is needed) --
    # and the record names the adaptation, which the network loading it must share.
    _slim = False

    @contextlib.contextmanager
    def slim_state_dict(self):
        """Within this block, state_dict() leaves out the frozen backbone (used to save checkpoints)."""
        self._slim = True
        try:
            yield self
        finally:
            self._slim = False

    def backbone_record(self) -> dict:
        """What a slim checkpoint keeps of the frozen backbone: its name, weights source and sha256 (of the
        base weights), and how the encoder adapted (only where it does: adaptation.py)."""
        if self.backbone.loaded_fingerprint is None:
            raise RuntimeError("slim state dicts need backbone weights loaded through nnunet_dino "
                               "(load_backbone_weights); save a full state dict instead")
        record = {"backbone": self.backbone.spec.name, "sha256": self.backbone.loaded_fingerprint,
                  "weights": dict(self.backbone.weights_info)}
        if self.backbone.adaptation.trains:
            record["adaptation"] = self.backbone.adaptation.to_record()
        augmentation = self.backbone.train_augmentation_record()  # train-mode only, changes no weight
        return dict(record, train_augmentation=augmentation) if augmentation else record

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        if not self._slim:
            return state
        record = self.backbone_record()
        prefix = kwargs.get("prefix", "") + "backbone."
        for key in [k for k in state if k.startswith(prefix) and not self.backbone.is_adapted_key(k[len(prefix):])]:
            del state[key]  # what the adaptation changed stays (LoRA tensors, trained blocks, or all for `full`)
        state[BACKBONE_RECORD_KEY] = record
        return state

    def bundled_state_dict(self) -> dict:
        """Every tensor, the frozen backbone's included, plus its record (for sharing a model)."""
        state = super().state_dict()
        state[BACKBONE_RECORD_KEY] = dict(self.backbone_record(), weights_included=True)
        return state

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        state = dict(state_dict)
        record = state.pop(BACKBONE_RECORD_KEY, None)
        if record is not None:
            self._check_adaptation(record)
        if record is not None and (record.get("weights_included") or self._holds_whole_encoder(state)):
            self._announce(record)
            result = super().load_state_dict(state, strict=strict, assign=assign)
            self.backbone.weights_info = dict(record["weights"])
            self.backbone.loaded_fingerprint = record["sha256"]
            self.backbone.pos_embed_resize = record["weights"].get("pos_embed_resize", self.backbone.pos_embed_resize)
            self.backbone.weights_loaded()
            return result
        if record is not None:
            self._restore_backbone(record)
            for key, value in self.backbone.state_dict().items():  # the checkpoint's adapted tensors win
                state.setdefault(f"backbone.{key}", value)
        result = super().load_state_dict(state, strict=strict, assign=assign)
        self.backbone.weights_loaded()
        return result

    def _holds_whole_encoder(self, state: Mapping[str, object]) -> bool:
        """Whether `state` carries every ViT tensor (a fully fine-tuned encoder): no base to restore."""
        return self.backbone.adaptation.kind.holds_whole_encoder and all(
            f"backbone.vit.{key}" in state for key in self.backbone.vit.state_dict())

    def _check_adaptation(self, record: Mapping[str, object]) -> None:
        """A checkpoint loads only into a network adapted the same way (records without one: frozen)."""
        trained, built = Adaptation.from_record(record.get("adaptation")), self.backbone.adaptation
        if trained.structure() != built.structure():
            raise AdaptationError(f"This checkpoint's encoder was trained {trained.describe()} "
                                  f"({trained.structure()}), but the network is built {built.describe()} "
                                  f"({built.structure()}). Use the trainer the model was trained with (-tr).")

    def _announce(self, record: Mapping[str, object]) -> None:
        """Say, once per set of weights, what the loaded checkpoint was trained with: a random
        backbone, or weights other than those of the checkpoints loaded before (an ensemble of
        folds trained with different weights)."""
        if not hasattr(self, "_records_seen"):
            self._records_seen = {}
        seen = self._records_seen
        if record["sha256"] in seen:
            return
        seen[record["sha256"]] = record
        if record_is_random(record.get("weights")):
            warnings.warn(RANDOM_MODEL_BANNER, stacklevel=3)
        if len(seen) > 1:
            warnings.warn("nnunet-dino: the checkpoints loaded into this network (e.g. the folds of one ensemble) "
                          "were trained with DIFFERENT backbone weights: "
                          + "; ".join(describe_weights_record(r) for r in seen.values())
                          + ". Their predictions are averaged as if they were one model.", stacklevel=3)

    def _restore_backbone(self, record: Mapping[str, object]) -> None:
        """Make the backbone hold the weights the checkpoint was trained with (verified by sha256)."""
        if record["backbone"] != self.backbone.spec.name:
            raise WeightsError(f"This checkpoint was trained with backbone {record['backbone']}, but the network "
                               f"has {self.backbone.spec.name}.")
        self._announce(record)
        if self.backbone.loaded_fingerprint == record["sha256"]:
            return  # already loaded (the predictor reloads every fold's weights for every case)
        if not hasattr(self, "_backbone_states"):
            self._backbone_states = {}  # an ensemble of folds with different weights: each loaded once
        cache = self._backbone_states
        if self.backbone.loaded_fingerprint is not None:  # keep what is replaced, the next case needs it again
            cache[self.backbone.loaded_fingerprint] = ({k: v.clone() for k, v in self.backbone.vit.state_dict().items()},
                                                       dict(self.backbone.weights_info))
        if record["sha256"] in cache:
            state, self.backbone.weights_info = cache[record["sha256"]]
            self.backbone.vit.load_state_dict(state)
            self.backbone.loaded_fingerprint = record["sha256"]
            return
        source = self._source_of(record)
        info = load_backbone_weights(self.backbone, source)  # also records info on the backbone
        if info["sha256"] != record["sha256"]:
            raise WeightsError(
                f"The backbone weights from {source.describe()} (sha256 {info['sha256'][:12]}…) are not the ones "
                f"this model was trained with ({describe_weights_record(record)}). Point {WEIGHTS_ENV_VAR} at the file "
                f"used for training, or use a self-contained checkpoint (`nnunet-dino bundle MODEL_FOLDER`).")

    def _source_of(self, record: Mapping[str, object]) -> WeightsSource:
        """Where the record's weights are: random, or nnUNet_dino_weights (an error names the file needed)."""
        if record_is_random(record.get("weights")):
            return WeightsSource(RANDOM_SETTING)
        try:
            return locate_weights(self.backbone.spec)
        except WeightsError as error:
            unset = not os.environ.get(WEIGHTS_ENV_VAR, "").strip()
            reason = f"{WEIGHTS_ENV_VAR} is not set" if unset else str(error).split(". ")[0]
            raise WeightsError(
                f"This model's checkpoints do not contain its frozen backbone (slim checkpoints): it needs the "
                f"weights it was trained with, {record.get('weights', {}).get('path') or '?'} (sha256 "
                f"{record['sha256']}) for backbone {record['backbone']}. Set {WEIGHTS_ENV_VAR} to that file (or its folder), or use a "
                f"self-contained checkpoint (`nnunet-dino bundle MODEL_FOLDER` where the file is available). "
                f"({reason}.)") from None
