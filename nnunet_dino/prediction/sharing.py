"""One frozen encoder for all folds of an ensemble.

The folds of a frozen-encoder model differ only after the encoder: same ViT weights, same input
mapping. `encoder_sharing` decides from the folds' own records (checkpoint state dicts) whether that
holds; `fold_networks` then gives each fold its own trainable part around ONE encoder, wrapped in a
`SharedEncoder` that runs the encoder once per input and hands the same features to every fold.

What is shared is whatever the network asks of the encoder with the image alone: the whole
extractor-only forward (SegDINO, SegDINO v2, Dino U-Net: `forward(x, taps)`), and for U-DFA the patch
embedding and the blocks before its first injection (`embed(x)`, `run_blocks(.., start=0, ..)`); the
blocks after an injection see each fold's own tokens and run per fold.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..backbones.adaptation import Adaptation
from ..networks.base import BACKBONE_RECORD_KEY, DinoSegmentationNetwork

#: state-dict prefixes of what maps the image to the encoder's input (a learnable channel mix, a recipe)
INPUT_PREFIXES = ("input_adapter.",)


@dataclass(frozen=True)
class Sharing:
    """Whether the folds share one encoder forward, and why (one line for the user)."""
    shared: bool
    reason: str

    def line(self, folds: int) -> str:
        if self.shared:
            return f"nnunet-dino predict: {folds} fold(s) share one frozen encoder forward per tile and mirror ({self.reason})"
        return f"nnunet-dino predict: one encoder forward per fold ({self.reason})"


def _adaptation_of(state: Mapping[str, object]) -> Adaptation:
    record = state.get(BACKBONE_RECORD_KEY)
    return Adaptation.from_record(record.get("adaptation") if isinstance(record, Mapping) else None)


def _differing(states: Sequence[Mapping[str, object]], keep: Callable[[str], bool]) -> List[str]:
    """Tensor keys selected by `keep` whose values are not the same in every state dict."""
    first = states[0]
    keys = [k for k, v in first.items() if keep(k) and isinstance(v, torch.Tensor)]
    return [k for k in keys if any(k not in s or not torch.equal(first[k], s[k]) for s in states[1:])]


def encoder_sharing(network: nn.Module, fold_states: Optional[Sequence[Mapping[str, object]]]) -> Sharing:
    """Whether one encoder forward can serve every fold: the encoder is frozen (no LoRA, last-k or full
    adaptation), every fold records the same encoder weights, and every fold maps the image to the encoder
    identically. The one place this is decided (the adaptation mode answers the first part)."""
    if not isinstance(network, DinoSegmentationNetwork):
        return Sharing(False, f"{type(network).__name__} has no frozen DINO encoder")
    if not fold_states or len(fold_states) < 2:
        return Sharing(False, "a single fold: nothing to share")
    adaptations = {_adaptation_of(s) for s in fold_states} | {network.backbone.adaptation}
    own = [a for a in adaptations if not a.shares_encoder_across_folds]  # the mode object's answer
    if own:
        return Sharing(False, f"the encoder is adapted ({own[0].label}): each fold has its own")
    records = [s.get(BACKBONE_RECORD_KEY) for s in fold_states]
    if all(isinstance(r, Mapping) for r in records):
        if len({r["sha256"] for r in records}) > 1:
            return Sharing(False, "the folds were trained with different backbone weights")
        weights = f"weights {records[0]['sha256'][:12]}"
    elif any(isinstance(r, Mapping) for r in records):
        return Sharing(False, "some folds record their backbone weights and some do not")
    else:  # plain full state dicts: compare the encoder tensors themselves
        if _differing(fold_states, lambda k: k.startswith("backbone.")):
            return Sharing(False, "the folds hold different encoder tensors")
        weights = "identical encoder tensors"
    if _differing(fold_states, lambda k: k.startswith(INPUT_PREFIXES)):
        return Sharing(False, "the folds map the input channels to the encoder differently (a learned mix)")
    return Sharing(True, f"{weights}, same input mapping")


class SharedEncoder(nn.Module):
    """A frozen encoder several fold networks hold as their `backbone`: the calls that see only the image
    (`forward`, `embed`, `run_blocks` from block 0) are run once per input and their result handed to
    every fold that asks with the same input (the same tensor, or an equal one: each fold maps the image
    itself). Everything else is the wrapped encoder's. `forwards` and `reuses` count for tests and logs."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self._last: Dict[tuple, Tuple[tuple, object]] = {}
        self.forwards, self.reuses = 0, 0

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("encoder"), name)

    def forward(self, x: torch.Tensor, taps: Optional[Sequence[int]] = None):
        return self._once(("forward", None if taps is None else tuple(taps)), (x,), lambda: self.encoder(x, taps))

    def embed(self, x: torch.Tensor):
        return self._once(("embed",), (x,), lambda: self.encoder.embed(x))

    def run_blocks(self, tokens: torch.Tensor, rope: Optional[torch.Tensor], start: int, stop: int,
                   checkpoint: bool = False, grid: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        def run():
            return self.encoder.run_blocks(tokens, rope, start, stop, checkpoint=checkpoint, grid=grid)
        if start != 0 or torch.is_grad_enabled():  # after an injection the tokens are each fold's own
            return run()
        return self._once(("run_blocks", stop, checkpoint, grid), (tokens, rope), run)

    def forget(self) -> None:
        """Drop the kept features (the sliding window calls this after each batch of tiles)."""
        self._last.clear()

    def _once(self, key: tuple, inputs: tuple, compute: Callable[[], object]):
        kept = self._last.get(key)
        if kept is not None and all(_same(a, b) for a, b in zip(kept[0], inputs)):
            self.reuses += 1
            return kept[1]
        result = compute()
        self.forwards += 1
        self._last[key] = (inputs, result)
        return result


def _same(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> bool:
    if a is b:
        return True
    if a is None or b is None:
        return False
    return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)


def fold_networks(network: DinoSegmentationNetwork, fold_states: Sequence[Mapping[str, object]]) -> List[nn.Module]:
    """One network per fold, each with its fold's weights, all around one `SharedEncoder` (the encoder is
    not copied: every fold loads the same weights into it, `encoder_sharing` checked that)."""
    encoder = network.backbone.encoder if isinstance(network.backbone, SharedEncoder) else network.backbone
    networks = []
    for state in fold_states:
        copy_of = copy.deepcopy(network, memo={id(network.backbone): encoder})
        copy_of.load_state_dict(state)
        networks.append(copy_of)
    shared = SharedEncoder(encoder)
    for copy_of in networks:
        copy_of.backbone = shared
    return networks
