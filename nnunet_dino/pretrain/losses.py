"""The self-distillation losses (DINOv2, Oquab et al. 2023; Gram anchoring: DINOv3, Siméoni et al. 2025).

- DINO: cross-entropy between the teacher's centred, sharpened softmax of each global crop and the
  student's softmax (temperature `student_temp`) of every other crop (global crops are never paired
  with themselves), averaged over pairs and images.
- iBOT: the same cross-entropy per masked patch of the global crops, the teacher seeing the unmasked
  crop; each image's masked patches weigh 1 / (its number of masked patches), summed and divided by
  the number of images (DINOv2's `forward_masked`).
- Centring: the centre is an EMA of the mean teacher score vector (over the images, for iBOT over the
  masked patches): centre <- m * centre + (1 - m) * batch mean, after the teacher's probabilities
  of the step have been computed with the old centre; under DDP the mean is over every rank.
- Sinkhorn-Knopp centring (DINOv2's `sinkhorn_knopp_teacher`, the alternative to the EMA centre): the
  teacher's probabilities are exp(scores / temperature) rescaled alternately so that every prototype
  gets an equal share of the batch and every row sums to 1 (3 iterations), which rules out the
  collapse of every image onto one prototype (images the encoder cannot tell apart still get uniform
  targets); under DDP the sums run over every rank.
- KoLeo: -mean log(distance of each L2-normalised vector to its nearest other one) (Sablayrolles et al.).
- Gram anchoring: mean squared difference between the patch-similarity (Gram) matrices of the
  student and of an earlier teacher, per image, on L2-normalised patch features.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def teacher_probabilities(scores: torch.Tensor, centre: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.softmax((scores.float() - centre) / temperature, dim=-1)


def _all_reduce_(tensor: torch.Tensor) -> torch.Tensor:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(tensor)
    return tensor


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, temperature: float, iterations: int = 3) -> torch.Tensor:
    """(N, K) teacher scores (cosines, in [-1, 1]: exp cannot overflow) -> (N, K) probabilities, each
    row summing to 1 and each prototype's column to N / K (up to the last row normalisation)."""
    q = torch.exp(scores.float() / temperature).t()  # (K, N)
    prototypes = q.shape[0]
    rows = _all_reduce_(torch.tensor(float(q.shape[1]), device=q.device))
    q /= _all_reduce_(q.sum())
    for _ in range(iterations):
        q /= _all_reduce_(q.sum(dim=1, keepdim=True))
        q /= prototypes
        q /= q.sum(dim=0, keepdim=True)
        q /= rows
    return (q * rows).t()


def _cross_entropy(teacher_probs: torch.Tensor, student_scores: torch.Tensor, student_temp: float) -> torch.Tensor:
    """Per row: -sum_k p_t,k log softmax(s / student_temp)_k."""
    return -(teacher_probs * F.log_softmax(student_scores.float() / student_temp, dim=-1)).sum(dim=-1)


def dino_loss(student_scores: Sequence[torch.Tensor], teacher_probs: Sequence[torch.Tensor],
              student_temp: float) -> torch.Tensor:
    """`student_scores`: one (B, K) per crop, global crops first in the teacher's order;
    `teacher_probs`: one (B, K) per global crop."""
    total, pairs = 0.0, 0
    for s_index, scores in enumerate(student_scores):
        for t_index, probs in enumerate(teacher_probs):
            if s_index != t_index:
                total = total + _cross_entropy(probs, scores, student_temp).mean()
                pairs += 1
    return total / pairs


def ibot_loss(student_scores: torch.Tensor, teacher_probs: torch.Tensor, masks: torch.Tensor,
              student_temp: float) -> torch.Tensor:
    """`student_scores`, `teacher_probs`: (M, K) at the masked patches, in `masks[masks]` order;
    `masks`: (n, h, w) bool."""
    flat = masks.flatten(1)
    if not bool(flat.any()):
        return student_scores.sum() * 0.0
    weights = (1.0 / flat.sum(dim=1).clamp(min=1))[:, None].expand_as(flat)[flat]
    return (_cross_entropy(teacher_probs, student_scores, student_temp) * weights).sum() / flat.shape[0]


def koleo_loss(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """KoLeo of the rows of (n, D), n >= 2 (DINOv2's `KoLeoLoss`)."""
    x = F.normalize(x.float(), p=2, dim=-1, eps=eps)
    with torch.no_grad():
        dots = x @ x.t()
        dots.fill_diagonal_(-2.0)
        nearest = dots.argmax(dim=1)
    distances = F.pairwise_distance(x, x[nearest], p=2, eps=eps)
    return -torch.log(distances + eps).mean()


def gram_loss(student_patches: torch.Tensor, target_patches: torch.Tensor) -> torch.Tensor:
    """(B, N, D) each: MSE between the per-image Gram matrices of L2-normalised patch features."""
    s = F.normalize(student_patches.float(), dim=-1)
    t = F.normalize(target_patches.float(), dim=-1)
    return F.mse_loss(s @ s.transpose(1, 2), t @ t.transpose(1, 2))


class Centre(nn.Module):
    """The EMA centre of the teacher's scores (a buffer: saved and restored with the state)."""

    def __init__(self, dim: int, momentum: float):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("value", torch.zeros(1, dim))

    @torch.no_grad()
    def update(self, teacher_scores: torch.Tensor) -> None:
        """teacher_scores (N, K): value <- m * value + (1 - m) * mean over N (over all ranks)."""
        if teacher_scores.shape[0] == 0:
            return
        total = teacher_scores.float().sum(dim=0, keepdim=True)
        count = torch.tensor(float(teacher_scores.shape[0]), device=total.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(total)
            torch.distributed.all_reduce(count)
        self.value.mul_(self.momentum).add_(total / count, alpha=1 - self.momentum)
