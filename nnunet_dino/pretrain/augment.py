"""Multi-crop views of grey medical slices, and the iBOT patch masks.

Each slice gives 2 global crops (area `global_scale` of the slice, `global_size` pixels) and
`local_crops` local crops (`local_scale`, `local_size`), random aspect 3/4-4/3, mirrored along
either axis (as nnU-Net mirrors). Intensity augmentations suit z-scored grey data: contrast
(about the crop's mean), brightness, gamma (on the crop's own min-max range, as nnU-Net's), Gaussian
blur (DINOv2's probabilities: always on the first global crop, rarely on the second, half the
local crops), additive noise. No colour jitter: the grey slice is repeated to 3 channels at the
end, as the plugin's networks feed a grey image to the encoder. Every random number comes from one
CPU `torch.Generator`, whose state is saved with the training state.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def crop_thetas(n: int, scale: Tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    """(n, 2, 3) `affine_grid` matrices: a random area fraction in `scale`, aspect 3/4-4/3, random
    position inside the image, each axis mirrored with probability 1/2."""
    area = _uniform(n, scale[0], scale[1], generator)
    ratio = torch.exp(_uniform(n, math.log(3 / 4), math.log(4 / 3), generator))
    width, height = (area * ratio).sqrt().clamp(max=1.0), (area / ratio).sqrt().clamp(max=1.0)
    cx = (2 * torch.rand(n, generator=generator) - 1) * (1 - width)
    cy = (2 * torch.rand(n, generator=generator) - 1) * (1 - height)
    flip_x = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    flip_y = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = width * flip_x, cx
    theta[:, 1, 1], theta[:, 1, 2] = height * flip_y, cy
    return theta


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each of (N, 1, S, S) with its own sigma (pixels); sigma 0 leaves a crop as it is."""
    n, _, s, _ = x.shape
    radius = max(1, min(int(math.ceil(3 * float(sigma.max()))), s - 1))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    sig = sigma.to(x.device, x.dtype).clamp(min=1e-3)[:, None]
    kernel = torch.exp(-0.5 * (offsets[None] / sig) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)                        # (N, K)
    y = F.pad(x.reshape(1, n, s, s), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, kernel[:, None, :, None], groups=n)
    y = F.conv2d(y, kernel[:, None, None, :], groups=n)
    return y.reshape(n, 1, s, s)


def intensity_augment(x: torch.Tensor, blur_probability: float, recipe, generator: torch.Generator) -> torch.Tensor:
    """Contrast, brightness, gamma, blur, noise on (N, 1, S, S) crops of z-scored slices."""
    n, s = x.shape[0], x.shape[-1]

    def chosen(probability: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator) < probability).to(x.device)[:, None, None, None]

    def draw(low: float, high: float) -> torch.Tensor:
        return _uniform(n, low, high, generator).to(x.device, x.dtype)[:, None, None, None]

    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = torch.where(chosen(0.8), (x - mean) * draw(*recipe.contrast) + mean, x)
    x = torch.where(chosen(0.8), x + draw(-recipe.brightness, recipe.brightness), x)
    low, high = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
    span = (high - low).clamp(min=1e-6)
    gamma = ((x - low) / span).clamp(min=0) ** draw(*recipe.gamma) * span + low
    x = torch.where(chosen(recipe.gamma_probability), gamma, x)
    sigma = _uniform(n, 0.1, 2.0, generator) * s / 224 * (torch.rand(n, generator=generator) < blur_probability)
    x = _gaussian_blur(x, sigma) if bool(sigma.any()) else x
    noise = torch.randn(x.shape, generator=generator).to(x.device, x.dtype) * draw(0.0, recipe.noise)
    return torch.where(chosen(0.2), x + noise, x)


def _views(images: Sequence[torch.Tensor], count: int, size: int, scale, generator) -> List[torch.Tensor]:
    """`count` crops of every image: a list over crops k of (B, 1, size, size)."""
    thetas = crop_thetas(len(images) * count, scale, generator).view(len(images), count, 2, 3)
    per_image = []
    for image, theta in zip(images, thetas):
        grid = F.affine_grid(theta.to(image.device, image.dtype), [count, 1, size, size], align_corners=False)
        per_image.append(F.grid_sample(image[None, None].expand(count, 1, -1, -1), grid, mode="bilinear",
                                       padding_mode="reflection", align_corners=False))
    return list(torch.stack(per_image, dim=1))


def multi_crop(slices: Sequence[np.ndarray], recipe, generator: torch.Generator, device: torch.device
               ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(global crops (2B, 3, G, G), local crops (nB, 3, L, L) or None), crop-major: rows k*B .. k*B+B-1
    are crop k of every slice."""
    images = [torch.from_numpy(np.ascontiguousarray(s)).to(device, torch.float32) for s in slices]
    first, second = _views(images, 2, recipe.global_size, recipe.global_scale, generator)
    views = [intensity_augment(first, 1.0, recipe, generator), intensity_augment(second, 0.1, recipe, generator)]
    globals_ = torch.cat(views).expand(-1, 3, -1, -1)
    if not recipe.local_crops:
        return globals_, None
    local = torch.cat(_views(images, recipe.local_crops, recipe.local_size, recipe.local_scale, generator))
    return globals_, intensity_augment(local, 0.5, recipe, generator).expand(-1, 3, -1, -1)


def random_masks(n: int, grid: Tuple[int, int], probability: float, ratio: Tuple[float, float],
                 generator: torch.Generator) -> torch.Tensor:
    """(n, h, w) bool iBOT masks: each image is masked with `probability`, then exactly
    round(r * h * w) of its patches (at least one), r uniform in `ratio`, chosen at random."""
    h, w = grid
    masks = torch.zeros(n, h * w, dtype=torch.bool)
    masked = torch.rand(n, generator=generator) < probability
    ratios = _uniform(n, ratio[0], ratio[1], generator)
    for i in range(n):
        if masked[i]:
            count = max(1, int(round(float(ratios[i]) * h * w)))
            masks[i, torch.randperm(h * w, generator=generator)[:count]] = True
    return masks.view(n, h, w)
