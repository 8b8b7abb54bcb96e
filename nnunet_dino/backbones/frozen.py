"""The frozen DINO encoder every network in this package uses.

One contract for features -- `forward(x, taps)` returns one (B, D, H/p, W/p) map per tap, with the
final LayerNorm applied as the official `get_intermediate_layers(norm=True)` does -- plus
stage-wise execution (`embed` / `run_blocks` / `to_map`) for models that inject adapter features
into the token stream (U-DFA), where gradients must reach activations but never the weights.

Frozen for real: no parameter requires grad, the ViT stays in eval() whatever `train()` is called
with, and `forward` builds no autograd graph. `adapt(Adaptation)` (adaptation.py) lets exactly the
adapted part train -- LoRA updates, the last k blocks, or everything -- and graphs are built only
from the first part that trains on; dropout and drop-path stay off in every mode.

Train-mode augmentation (off by default; the `_paper` trainers switch it on): the official Dino U-Net
and SegDINO code leave the frozen ViT in train() mode, where DINOv3 rescales its RoPE coordinates
by a random factor, log-uniform in [1/r, r] (r = 2), drawn afresh for every block on every forward,
and Dino U-Net's 7B drops residual branches ("sample subset" stochastic depth, rate 0.4).
`rope_rescale` and `drop_path` reproduce both while this module is in train() mode; the ViT's
weights still never change (no gradient, no optimiser), eval() is unaffected, and the options are
part of `train_augmentation_record()` (kept in every checkpoint's backbone record).

Precision: one rule, `compute_dtype` -- on CUDA the encoder computes in bf16 where the GPU has native
bf16 (compute capability >= 8.0; DINOv3 was trained in bf16) and in fp16 on older GPUs (T4, V100),
where bf16 is emulated; elsewhere in the caller's precision. `autocast` applies it.
"""
from __future__ import annotations

import contextlib
import hashlib
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from .adaptation import Adaptation
from .errors import AdaptationError
from .registry import BackboneFamily, BackboneSpec


def build_timm_vit(spec: BackboneSpec) -> nn.Module:
    """The timm architecture for `spec`, randomly initialised (weights come from `weights.py`)."""
    import timm
    kwargs = dict(pretrained=False, num_classes=0, dynamic_img_size=True, drop_path_rate=0.0)
    kwargs.update(spec.family_ops.timm_kwargs(spec))
    kwargs.update(dict(spec.timm_overrides))
    return timm.create_model(spec.timm_name, **kwargs)


def state_fingerprint(state: dict) -> str:
    """sha256 over names, shapes, dtypes and bytes of a state dict: identifies backbone weights."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


class ResidualSubsetDrop(nn.Module):
    """Official DINOv3 stochastic depth on one residual branch: while `active`, the branch is kept
    for a random subset of max(floor(B (1 - rate)), 1) samples, scaled by B / subset, and dropped
    for the others (a batch of 1 is unaffected). No parameters."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate
        self.active = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active or self.rate <= 0:
            return x
        b = x.shape[0]
        keep = max(int(b * (1 - self.rate)), 1)
        scale = torch.zeros(b, device=x.device, dtype=x.dtype)
        scale[torch.randperm(b, device=x.device)[:keep]] = b / keep
        return x * scale.view(b, *([1] * (x.dim() - 1)))


class FrozenDinoBackbone(nn.Module):
    def __init__(self, spec: BackboneSpec, pos_embed_resize: Optional[str] = None,
                 reduced_precision_devices: Sequence[str] = ("cuda",), rope_rescale: Optional[float] = None,
                 drop_path: float = 0.0):
        """`reduced_precision_devices`: device types on which `compute_dtype` applies (empty: never;
        adding "cpu" applies the CUDA rule to CPU tensors, which is how the tests simulate a GPU).
        `pos_embed_resize`: how a learned position embedding is resized to other grids (None: the family's
        default; loading weights sets the rule of their source, backbones/weights.py).
        `rope_rescale`, `drop_path`: train-mode augmentation (module docstring; off by default)."""
        super().__init__()
        modes = spec.family_ops.pos_embed_modes
        if pos_embed_resize is None:
            pos_embed_resize = spec.family_ops.default_pos_embed_resize
        if modes and pos_embed_resize not in modes:
            raise ValueError(f"pos_embed_resize must be one of {modes}")
        self.spec = spec
        self.pos_embed_resize = pos_embed_resize
        self.reduced_precision_devices = tuple(reduced_precision_devices)
        self.vit = build_timm_vit(spec)
        self.vit.requires_grad_(False)
        self.vit.eval()
        self._family = spec.family_ops
        self.loaded_fingerprint: Optional[str] = None  # set by weights.load_backbone_weights,
        self.weights_info: dict = {}                     # with what was loaded from where
        self.adaptation = Adaptation()  # its mode object may add modules (LoRA: `self.lora`) in `adapt`
        self._first_graph_block, self._embedding_trains = len(self.vit.blocks), False
        self.rope_rescale: Optional[float] = None
        self.drop_path = 0.0
        self.set_train_augmentation(rope_rescale, drop_path)

    def set_train_augmentation(self, rope_rescale: Optional[float] = None, drop_path: float = 0.0) -> None:
        """Switch the train-mode augmentation (module docstring) on or off; changes no weight."""
        if rope_rescale is not None and (self._family.rope_table is None or rope_rescale < 1):
            raise ValueError(f"rope_rescale (a factor r >= 1) applies to a RoPE encoder (DINOv3); got {rope_rescale} "
                             f"for {self.spec.name}")
        if not 0 <= drop_path < 1:
            raise ValueError(f"drop_path must be in [0, 1), got {drop_path}")
        self.rope_rescale, self.drop_path = rope_rescale, float(drop_path)
        for block in self.vit.blocks:
            for name in ("drop_path1", "drop_path2"):
                if drop_path or isinstance(getattr(block, name), ResidualSubsetDrop):
                    setattr(block, name, ResidualSubsetDrop(drop_path) if drop_path else nn.Identity())
        self.train(self.training)

    def train_augmentation_record(self) -> dict:
        """The train-mode augmentation settings ({} when off), for checkpoint records."""
        return {k: v for k, v in (("rope_rescale", self.rope_rescale), ("drop_path", self.drop_path)) if v}

    def fingerprint(self) -> str:
        """sha256 of the ViT's current tensors (slim checkpoints store it to verify reloads)."""
        return state_fingerprint(self.vit.state_dict())

    # --- frozen-ness and adaptation ----------------------------------------------------------
    def adapt(self, adaptation: Adaptation) -> "FrozenDinoBackbone":
        """Let the part `adaptation` names train (a frozen adaptation changes nothing)."""
        if self.adaptation.trains:
            raise RuntimeError("this backbone is adapted already")
        problems = adaptation.kind.check_backbone(adaptation, self.depth, self.spec.name)
        if problems:
            raise AdaptationError("; ".join(problems) + ".")
        self.adaptation = adaptation
        adaptation.kind.attach(self, adaptation)
        self.set_encoder_trainable(adaptation.trains)
        return self

    def set_encoder_trainable(self, trainable: bool) -> bool:
        """Whether the adapted part requires grad (False during a warm-up); returns whether it changed."""
        before = self.encoder_trains
        for name, param in self.adapted_parameters():
            param.requires_grad_(trainable)
        kind, depth = self.adaptation.kind, self.depth
        self._first_graph_block = kind.first_graph_block(self.adaptation, depth) if trainable else depth
        self._embedding_trains = trainable and kind.embedding_trains(self.adaptation)
        return before != self.encoder_trains

    @property
    def encoder_trains(self) -> bool:
        """Whether some part of the encoder trains now (adapted, and not in a warm-up)."""
        return self._first_graph_block < len(self.vit.blocks)

    def adapted_parameters(self):
        """(name in this module, parameter) of everything the adaptation trains (warm-up or not)."""
        kind = self.adaptation.kind
        for name, param in self.named_parameters():
            if kind.trains and kind.trains_key(self.adaptation, name, self.depth):
                yield name, param

    def is_adapted_key(self, key: str) -> bool:
        """Whether a state-dict key of this module is one the adaptation changes (what slim checkpoints keep:
        the LoRA tensors, the trained blocks and final norm, or for `full` the whole ViT)."""
        return self.adaptation.kind.keeps_key(self.adaptation, key, self.depth)

    def weights_loaded(self) -> None:
        """Called after a state dict was loaded into the network (the mode drops caches of the old tensors)."""
        self.adaptation.kind.weights_loaded(self)

    def graph_scope(self, stop: int):
        """no_grad() unless the embedding or a block before `stop` trains (e.g. U-DFA's frozen prefix)."""
        trains = self._embedding_trains or self._first_graph_block < stop
        return contextlib.nullcontext() if trains else torch.no_grad()

    def train(self, mode: bool = True) -> "FrozenDinoBackbone":
        super().train(mode)
        self.vit.eval()  # dropout/drop-path off; nnU-Net calls network.train() every epoch
        for module in self.vit.modules():
            if isinstance(module, ResidualSubsetDrop):
                module.active = mode  # the optional train-mode stochastic depth follows this module's mode
        return self

    def block_rope(self, rope: Optional[torch.Tensor], grid: Optional[Tuple[int, int]]) -> Optional[torch.Tensor]:
        """The RoPE table for the next block: `rope`, or in train() mode with `rope_rescale` r a table
        whose coordinates are scaled by a fresh factor, log-uniform in [1/r, r] (torch's RNG)."""
        if not (self.training and self.rope_rescale) or grid is None:
            return rope
        return self._family.rope_table(self.vit, grid, self.rope_rescale).to(rope.dtype)

    @property
    def family_ops(self) -> BackboneFamily:
        """The DINO generation's operations (backbones/registry.py)."""
        return self._family

    @property
    def embed_dim(self) -> int:
        return self.spec.embed_dim

    @property
    def patch_size(self) -> int:
        return self.spec.patch_size

    @property
    def depth(self) -> int:
        return len(self.vit.blocks)

    # --- precision -----------------------------------------------------------------------------
    def compute_dtype(self, device: torch.device) -> Optional[torch.dtype]:
        """The encoder's precision on `device`: bf16 where it is native (CUDA compute capability >= 8.0,
        and any simulated device), fp16 on older GPUs; None (the caller's precision) on devices not in
        `reduced_precision_devices`."""
        if device.type not in self.reduced_precision_devices:
            return None
        if device.type == "cuda" and torch.cuda.get_device_properties(device).major < 8:
            return torch.float16
        return torch.bfloat16

    def autocast(self, x: torch.Tensor):
        """Context for encoder work on `x`: autocast to `compute_dtype`, except where gradients flow
        through the blocks under an enclosing autocast (U-DFA after its first injection, under nnU-Net's
        fp16 step autocast). There the blocks run in the enclosing autocast's dtype: a nested autocast of
        another dtype leaves the backward graph with bf16 and fp16 operands of one op, which AOT autograd
        rejects when it compiles the backward ("Unexpected floating ScalarType in at::autocast::prioritize").
        Without gradients (the extractor-only encoders, inference) nothing crosses back, and without an
        enclosing autocast nothing is mixed: there the rule applies in full."""
        dtype = self.compute_dtype(x.device)
        if dtype is None or (torch.is_grad_enabled() and torch.is_autocast_enabled(x.device.type)):
            return contextlib.nullcontext()
        return torch.autocast(x.device.type, dtype=dtype)

    # --- stage-wise execution ----------------------------------------------------------------
    def embed(self, x: torch.Tensor):
        """(B,3,H,W) -> (tokens (B, prefix + h*w, D), rope or None, grid (h, w))."""
        p = self.spec.patch_size
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(f"{self.spec.name} needs H and W divisible by its patch size {p}, got "
                             f"{tuple(x.shape[-2:])}; pad the input (the networks do this for you)")
        with contextlib.nullcontext() if self._embedding_trains else torch.no_grad():
            return self._family.embed_tokens(self.vit, x, self.pos_embed_resize)

    def run_blocks(self, tokens: torch.Tensor, rope: Optional[torch.Tensor], start: int, stop: int,
                   checkpoint: bool = False, grid: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """Run blocks [start, stop) on a token stream. Activation gradients flow; a block builds a graph
        only where gradients are enabled and its input needs one or it trains (the adaptation).
        With `checkpoint` (or the adaptation's), activations are recomputed in backward (for large ViTs).
        `grid` (the patch grid) lets the train-mode RoPE rescaling draw a table per block (`block_rope`)."""
        checkpoint = checkpoint or self.adaptation.checkpointing
        for index in range(start, stop):
            table = self.block_rope(rope, grid)
            graph = torch.is_grad_enabled() and (tokens.requires_grad or index >= self._first_graph_block)
            with contextlib.nullcontext() if graph else torch.no_grad():
                if checkpoint and graph:
                    tokens = torch.utils.checkpoint.checkpoint(self._run_block, index, tokens, table,
                                                               use_reentrant=False)
                else:
                    tokens = self._run_block(index, tokens, table)
        return tokens

    def _run_block(self, index: int, tokens: torch.Tensor, rope: Optional[torch.Tensor]) -> torch.Tensor:
        return self.adaptation.kind.run_block(self, index, tokens, rope)

    def to_map(self, tokens: torch.Tensor, grid: Tuple[int, int], norm: bool = True) -> torch.Tensor:
        """Patch tokens -> (B, D, h, w) map, final LayerNorm applied (as get_intermediate_layers)."""
        if norm:
            tokens = self.vit.norm(tokens)
        patch = tokens[:, self.spec.num_prefix_tokens:]
        b, _, d = patch.shape
        return patch.reshape(b, grid[0], grid[1], d).permute(0, 3, 1, 2).contiguous()

    # --- extractor-only contract ---------------------------------------------------------------
    def forward(self, x: torch.Tensor, taps: Optional[Sequence[int]] = None) -> List[torch.Tensor]:
        """Maps at the requested 0-based block indices (default: the spec's taps); no autograd graph unless
        the adaptation trains part of the encoder (then from that part on)."""
        taps = list(self.spec.default_taps if taps is None else taps)
        if not taps or min(taps) < 0 or max(taps) >= self.depth:
            raise ValueError(f"taps must be block indices in [0, {self.depth}), got {taps}")
        # not timm's forward_intermediates: it knows neither LoRA's blocks, DINOv2's meta/hf resize, nor per-block
        # RoPE rescaling (documentation/extending.md); the parity tests hold this loop to it where it applies
        with contextlib.nullcontext() if self.encoder_trains else torch.no_grad(), self.autocast(x):
            tokens, rope, grid = self.embed(x)
            maps, done = [], 0
            for tap in sorted(set(taps)):
                tokens = self.run_blocks(tokens, rope, done, tap + 1, grid=grid)
                done = tap + 1
                maps.append((tap, self.to_map(tokens, grid)))
        by_tap = dict(maps)
        return [by_tap[t].to(x.dtype) for t in taps]
