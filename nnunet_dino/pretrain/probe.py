"""A linear probe of a backbone's frozen patch features: how well a 1x1 convolution on them segments a
labelled set of slices, at the patch grid. It measures what pretraining changed in the features, with
nothing else trained: the same probe, seed and budget for every backbone compared.

Labels become the majority class of each patch; features are standardised with the training set's
per-channel mean and deviation; the probe is trained full batch with Adam on class-balanced
cross-entropy; the score is the Dice of each foreground class over the test patches.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F

from ..backbones import BackboneSpec, FrozenDinoBackbone, load_backbone_weights, locate_weights


@torch.no_grad()
def patch_features(backbone: FrozenDinoBackbone, images: torch.Tensor, taps: Sequence[int]) -> torch.Tensor:
    """(N, 1, H, W) z-scored grey slices -> (N, D * len(taps), H / p, W / p)."""
    return torch.cat(backbone(images.expand(-1, 3, -1, -1), taps=list(taps)), dim=1)


def patch_labels(labels: torch.Tensor, patch: int, classes: int) -> torch.Tensor:
    """(N, H, W) integer labels -> (N, H / p, W / p): each patch's majority class."""
    onehot = F.one_hot(labels.long(), classes).permute(0, 3, 1, 2).float()
    return F.avg_pool2d(onehot, patch).argmax(dim=1)


def linear_probe_dice(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                      classes: int, steps: int = 300, lr: float = 1e-2, seed: int = 0) -> List[float]:
    """Features (N, D, h, w) and patch labels (N, h, w) -> the test Dice of classes 1 .. classes-1."""
    mean = train_x.mean(dim=(0, 2, 3), keepdim=True)
    std = train_x.std(dim=(0, 2, 3), keepdim=True) + 1e-6
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = torch.nn.Conv2d(train_x.shape[1], classes, 1)
    optimizer = torch.optim.Adam(probe.parameters(), lr=lr)
    weight = 1.0 / torch.bincount(train_y.flatten(), minlength=classes).float().clamp(min=1)
    inputs = (train_x - mean) / std
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(probe(inputs), train_y, weight=weight / weight.sum()).backward()
        optimizer.step()
    with torch.no_grad():
        predicted = probe((test_x - mean) / std).argmax(dim=1)
    dice = []
    for c in range(1, classes):
        both = ((predicted == c) & (test_y == c)).sum()
        total = (predicted == c).sum() + (test_y == c).sum()
        dice.append(float(2 * both / total) if total else 1.0)
    return dice


def probe_weights(spec: BackboneSpec, setting: str, train, test, classes: int) -> List[float]:
    """The probe's test Dice per foreground class for `spec` with weights `setting` (a file, folder or
    'random'), on the patch features of all its blocks; `train` / `test`: ((N, 1, H, W) z-scored images,
    (N, H, W) labels)."""
    backbone = FrozenDinoBackbone(spec)
    load_backbone_weights(backbone, locate_weights(spec, setting))
    taps = range(spec.depth)
    (train_x, train_y), (test_x, test_y) = train, test
    return linear_probe_dice(patch_features(backbone, train_x, taps), patch_labels(train_y, spec.patch_size, classes),
                             patch_features(backbone, test_x, taps), patch_labels(test_y, spec.patch_size, classes),
                             classes)
