"""A linear probe of a backbone's frozen patch features: how well a 1x1 convolution on them segments a
labelled set of slices, at the patch grid. It measures what pretraining changed in the features, with
nothing else trained: the same probe, seed and budget for every backbone compared.

Labels become the majority class of each patch; features are standardised with the training set's
per-channel mean and deviation; the probe is fitted to convergence (full batch, L-BFGS, a small L2
penalty) on class-balanced cross-entropy; the score is the Dice of each foreground class over the
test patches.
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
                      classes: int, iterations: int = 1000, l2: float = 1e-4, seed: int = 0) -> List[float]:
    """Features (N, D, h, w) and patch labels (N, h, w) -> the test Dice of classes 1 .. classes-1.

    The probe (a 1x1 convolution: a linear map of each patch's features) is fitted to convergence with
    L-BFGS, so that the score measures the features and not the probe's training budget: a probe
    trained for a fixed few hundred Adam steps read out part of what pretrained features hold and
    all of what random ones hold."""
    def rows(x: torch.Tensor) -> torch.Tensor:  # (N, D, h, w) -> (N h w, D)
        return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
    train_rows, test_rows = rows(train_x), rows(test_x)
    mean, std = train_rows.mean(dim=0), train_rows.std(dim=0) + 1e-6
    inputs, targets = (train_rows - mean) / std, train_y.flatten()
    weight = 1.0 / torch.bincount(targets, minlength=classes).float().clamp(min=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = torch.nn.Linear(train_x.shape[1], classes)
    optimizer = torch.optim.LBFGS(probe.parameters(), max_iter=iterations, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12)

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = F.cross_entropy(probe(inputs), targets, weight=weight / weight.sum()) + l2 * probe.weight.pow(2).sum()
        value.backward()
        return value
    with torch.enable_grad():
        optimizer.step(loss)
    with torch.no_grad():
        predicted = probe((test_rows - mean) / std).argmax(dim=1)
    truth = test_y.flatten()
    dice = []
    for c in range(1, classes):
        both = ((predicted == c) & (truth == c)).sum()
        total = (predicted == c).sum() + (truth == c).sum()
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
