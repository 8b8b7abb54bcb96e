"""Input recipes: HU recovered exactly from nnU-Net's CTNormalization, CT windows and MedDINOv3's
recipe computed from it equal the same computed from raw HU, the recipe is resolved, checked and
recorded in the plans, and a network built from the plans alone (as the predictor does) applies it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from nnunetv2.preprocessing.normalization.default_normalization_schemes import CTNormalization
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_dino.backbones import WeightsSource
from nnunet_dino.backbones.normalization import IMAGENET, MEDDINOV3_CT, SAT493M
from nnunet_dino.networks.input_adapters import (CTWindowsInput, InputRecipeError, RGBInput, WINDOW_PRESETS,
                                                hu_from_ct_normalization, input_module, parse_windows)
from nnunet_dino.training.input_recipe_record import INPUT_RECIPE_KEY, input_recipe_record, input_record

RANDOM = WeightsSource("random")


def _ct_volume(seed=0, shape=(4, 48, 40)):
    """Synthetic HU: air, fat, soft tissue, a bright bone-like blob, and noise."""
    rng = np.random.default_rng(seed)
    hu = rng.choice([-1000.0, -100.0, 40.0, 60.0, 700.0], size=shape, p=[0.2, 0.1, 0.4, 0.2, 0.1])
    return (hu + rng.normal(0, 30, size=shape)).astype(np.float32)


def _intensities(hu):
    fg = hu[hu > -500]
    return {"mean": float(fg.mean()), "std": float(fg.std()), "percentile_00_5": float(np.percentile(fg, 0.5)),
            "percentile_99_5": float(np.percentile(fg, 99.5)), "median": float(np.median(fg))}


def _ct_normalize(hu, props):
    return CTNormalization(use_mask_for_norm=False, intensityproperties=props).run(hu.copy())


def test_hu_recovered_from_ct_normalization_inside_the_clip_range():
    hu = _ct_volume()
    props = _intensities(hu)
    normalised = torch.from_numpy(_ct_normalize(hu, props))
    recovered = hu_from_ct_normalization(normalised, props["mean"], props["std"]).numpy()
    lo, hi = props["percentile_00_5"], props["percentile_99_5"]
    inside = (hu >= lo) & (hu <= hi)
    assert inside.mean() > 0.5
    err = float(np.abs(recovered[inside] - hu[inside]).max())
    print(f"\n[recipes] synthetic HU recovery: max |error| {err:.2e} HU over {int(inside.sum())} voxels")
    assert err < 1e-3  # float32 rounding of values up to ~1000 HU
    assert np.allclose(recovered[hu < lo], lo, atol=1e-3) and np.allclose(recovered[hu > hi], hi, atol=1e-3)


def _window_reference(hu, windows, normalization):
    """Windows from raw HU, written independently: clip, scale to [0, 1], the weights' mean/std."""
    channels = []
    for c, (width, level) in enumerate(windows):
        low, high = level - width / 2, level + width / 2
        x = (np.clip(hu, low, high) - low) / width
        channels.append((x - normalization.mean[c]) / normalization.std[c])
    return np.stack(channels, axis=1)


@pytest.mark.parametrize("normalization", [IMAGENET, SAT493M])
def test_ct_windows_from_normalised_data_equal_windows_of_raw_hu(normalization):
    hu = _ct_volume(seed=1)
    props = _intensities(hu)
    props["percentile_00_5"], props["percentile_99_5"] = -1100.0, 1500.0  # every window inside the clip range
    windows = parse_windows(["soft_tissue", "liver", "bone"])
    module = CTWindowsInput(props, windows, normalization)
    ours = module(torch.from_numpy(_ct_normalize(hu, props))[:, None]).numpy()
    assert np.abs(ours - _window_reference(hu[:, None], windows, normalization)[:, :, 0]).max() < 1e-4


def test_meddinov3_recipe_equals_its_published_formula():
    hu = _ct_volume(seed=2)
    props = _intensities(hu)
    inside = (hu >= props["percentile_00_5"]) & (hu <= props["percentile_99_5"])
    module = input_module({"recipe": "meddinov3", "ct_intensities": props, "normalization": MEDDINOV3_CT.record()})
    ours = module(torch.from_numpy(_ct_normalize(hu, props))[:, None]).numpy()
    expected = (np.clip(hu, -1000, 1000) - 65.1084213256836) / (178.01663208007812 + 1e-8)
    assert ours.shape == (hu.shape[0], 3) + hu.shape[1:]
    for c in range(3):
        assert np.abs(ours[:, c][inside] - expected[inside]).max() < 1e-5


def test_windows_accept_presets_and_width_level_pairs_and_refuse_nonsense():
    assert parse_windows(["bone", (350, 50), "lung"]) == [WINDOW_PRESETS["bone"], (350.0, 50.0), WINDOW_PRESETS["lung"]]
    assert WINDOW_PRESETS["soft_tissue"] == (400.0, 40.0) and WINDOW_PRESETS["liver"] == (150.0, 30.0)
    with pytest.raises(InputRecipeError, match="unknown CT window 'livr'"):
        parse_windows(["livr", "bone", "lung"])
    with pytest.raises(InputRecipeError, match="three windows"):
        parse_windows(["bone"])
    with pytest.raises(InputRecipeError, match="width must be > 0"):
        parse_windows([(0, 40), "bone", "lung"])


def test_rgb_recipe_applies_the_weights_mean_and_std():
    x = torch.rand(2, 3, 8, 8)
    out = RGBInput(SAT493M)(x)
    assert torch.allclose(out[:, 1], (x[:, 1] - 0.411) / 0.156)


# --- the plans hook ----------------------------------------------------------------------------------
def _plans(schemes, props=None):
    config = {"patch_size": [64, 64], "normalization_schemes": schemes, "batch_size": 2,
              "architecture": {"network_class_name": "x", "arch_kwargs": {}, "_kw_requires_import": []}}
    return PlansManager({"configurations": {"2d": config},
                         "foreground_intensity_properties_per_channel": {"0": props or _intensities(_ct_volume())}})


def _trainer(recipe, backbone="dinov3_vits16", **options):
    from nnunet_dino.training.trainers import nnUNetTrainerSegDINO
    return type("T", (nnUNetTrainerSegDINO,), {"input_recipe": recipe, "backbone": backbone,
                                               "input_recipe_options": options})


def test_ct_windows_on_a_non_ct_channel_is_refused_before_training():
    with pytest.raises(InputRecipeError, match=r"exactly one CT channel.*\['ZScoreNormalization'\].*'zscore'"):
        input_recipe_record(_trainer("ct_windows"), _plans(["ZScoreNormalization"]), "2d", RANDOM)
    with pytest.raises(InputRecipeError, match="three RGBTo01Normalization"):
        input_recipe_record(_trainer("rgb"), _plans(["CTNormalization"]), "2d", RANDOM)
    with pytest.raises(InputRecipeError, match="unknown input_recipe 'hu'"):
        input_recipe_record(_trainer("hu"), _plans(["CTNormalization"]), "2d", RANDOM)
    with pytest.raises(InputRecipeError, match="do not apply"):
        input_recipe_record(_trainer("zscore", windows=["bone"] * 3), _plans(["CTNormalization"]), "2d", RANDOM)


def test_a_plan_that_keeps_hu_feeds_the_windows_raw_hu():
    plans = _plans(["NoNormalization"])
    with pytest.raises(InputRecipeError, match="kept in HU"):  # not named CT: could be anything
        input_recipe_record(_trainer("ct_windows"), plans, "2d", RANDOM, {"0": "MR"})
    record = input_recipe_record(_trainer("ct_windows"), plans, "2d", RANDOM, {"0": "CT"})
    assert record["ct_intensities"] == {"mean": 0.0, "std": 1.0}
    hu = torch.from_numpy(_ct_volume(seed=4))[:, None]
    windows = parse_windows(["soft_tissue", "liver", "bone"])
    expected = _window_reference(hu.numpy(), windows, IMAGENET)[:, :, 0]
    assert np.abs(input_module(record)(hu).numpy() - expected).max() < 1e-4


def test_rgb_recipe_refuses_weights_trained_on_hu():
    with pytest.raises(InputRecipeError, match="trained on CT in HU"):
        input_recipe_record(_trainer("rgb", backbone="meddinov3_vitb16"), _plans(["RGBTo01Normalization"] * 3), "2d",
                            RANDOM)


def test_auto_resolves_to_rgb_for_rgb_plans_and_zscore_otherwise():
    rgb = input_recipe_record(_trainer("auto"), _plans(["RGBTo01Normalization"] * 3), "2d", RANDOM)
    assert rgb["recipe"] == "rgb" and rgb["normalization"]["mean"] == list(IMAGENET.mean)
    assert input_recipe_record(_trainer("auto"), _plans(["ZScoreNormalization"]), "2d", RANDOM)["recipe"] == "zscore"


def test_network_built_from_the_plans_alone_applies_the_recorded_recipe():
    """What nnUNetv2_predict does in a fresh process: plans -> build_network_architecture."""
    trainer = _trainer("ct_windows", backbone="meddinov3_vitb16", windows=["soft_tissue", "liver", (1800, 400)])
    plans = _plans(["CTNormalization"])
    record = input_recipe_record(trainer, plans, "2d", RANDOM)
    assert record["windows"] == [[400.0, 40.0], [150.0, 30.0], [1800.0, 400.0]]
    assert record["normalization"] == MEDDINOV3_CT.record()
    plans.plans["configurations"]["2d"][INPUT_RECIPE_KEY] = record
    fresh = PlansManager(plans.plans)  # as loaded from plans.json
    assert input_record(fresh.get_configuration("2d")) == record
    net = trainer.build_network_architecture(fresh, fresh.get_configuration("2d"), 1, 2)
    assert isinstance(net.input_adapter, CTWindowsInput)
    x = torch.randn(1, 1, 32, 32)
    assert torch.equal(net.input_adapter(x), input_module(record)(x))


def test_the_trainer_refuses_ct_windows_on_grey_png_data_before_nnunet_writes_anything(nnunet_paths, monkeypatch):
    import os
    from nnunet_helpers import make_trainer
    monkeypatch.setenv("nnUNet_dino_weights", "random")
    with pytest.raises(InputRecipeError, match="ZScoreNormalization"):
        make_trainer(_trainer("ct_windows"), os.environ["nnUNet_preprocessed"], nnunet_paths["dataset"])
    assert not os.path.exists(os.environ["nnUNet_results"])
