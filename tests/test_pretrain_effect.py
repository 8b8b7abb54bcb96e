"""What pretraining is for: a tiny ViT pretrained by `nnunet-dino pretrain` (from random weights, on
unlabelled texture slices, with the iBOT loss: from random weights the class-token DINO loss collapses to
uniform outputs) gives frozen patch features that a linear probe segments clearly better
than the same ViT's random weights, on other slices, at the same probe budget. The texture classes
(stripe orientation, random phase, equal mean intensity) are out of reach of the near-linear features
of a random ViT (timm's 1e-5 layer scales)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dino_weights_helpers import tiny_spec
from nnunet_dino.backbones import registry
from nnunet_dino.cli import main
from nnunet_dino.datasets.textures import texture_slices, write_texture_folder
from nnunet_dino.pretrain.probe import probe_weights

pytestmark = pytest.mark.usefixtures("one_thread")
STEPS = 1000
RECIPE = ["--batch-size", "16", "--global-size", "96", "--local-size", "48", "--local-crops", "2",
          "--prototypes", "256", "--head-hidden", "128", "--head-bottleneck", "64", "--lr", "2e-3",
          "--mask-probability", "1.0", "--dino-weight", "0", "--no-progress"]  # iBOT and KoLeo only
MARGIN = 0.05  # mean foreground Dice


def _stack(slices):
    images = torch.from_numpy(np.stack([(image - 0.5) / 0.2 for image, _ in slices]))[:, None]
    labels = torch.from_numpy(np.stack([label for _, label in slices]))
    return images, labels


def test_a_pretrained_encoder_beats_its_random_weights_under_a_linear_probe(monkeypatch, tmp_path):
    spec = tiny_spec("dinov3_vits16")
    monkeypatch.setitem(registry._REGISTRY, spec.name, spec)
    folder = str(tmp_path / "unlabelled")
    write_texture_folder(folder, 64, seed=0)
    out = str(tmp_path / "textures.pth")
    assert main(["pretrain", "--folder", folder, "--backbone", spec.name, "--init", "random", "--steps", str(STEPS),
                 "--save-every", str(STEPS), *RECIPE, "-o", out]) == 0
    # other slices than pretraining saw
    train, test = _stack(texture_slices(48, seed=1)), _stack(texture_slices(48, seed=2))
    random_dice, pretrained_dice = (float(np.mean(probe_weights(spec, setting, train, test, 3)))
                                    for setting in ("random", out))
    assert pretrained_dice >= random_dice + MARGIN, (random_dice, pretrained_dice)
