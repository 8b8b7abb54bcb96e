"""What pretraining is for: a tiny ViT pretrained by `nnunet-dino pretrain` (from random weights, on
unlabelled texture slices, with the iBOT loss: from random weights the class-token DINO loss collapses to
uniform outputs) gives frozen patch features that a linear probe segments clearly better
than the same ViT's random weights, on other slices, at the same probe budget. The texture classes
(stripe orientation, random phase, equal mean intensity) are out of reach of the near-linear features
of a random ViT (timm's 1e-5 layer scales).

The configuration is `bench/texture_probe.py`'s; `python -m nnunet_dino.bench.texture_probe WORKDIR`
measures the effect over several pretraining seeds, and MARGIN sits below the smallest effect measured
there (README, Pretraining)."""
from __future__ import annotations

import pytest

from nnunet_dino.backbones import registry
from nnunet_dino.bench.texture_probe import pretrain_on_textures, probe_effect, probe_slices, texture_backbone
from nnunet_dino.pretrain.recipe import Recipe

pytestmark = pytest.mark.usefixtures("one_thread")
MARGIN = 0.05  # mean foreground Dice


def test_a_pretrained_encoder_beats_its_random_weights_under_a_linear_probe(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # the tiny spec stays in this test
    spec = texture_backbone()
    weights = pretrain_on_textures(spec, str(tmp_path), seed=Recipe().seed)
    effect = probe_effect(spec, weights, *probe_slices())
    assert effect["effect"] >= MARGIN, effect

