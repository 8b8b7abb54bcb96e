"""2.5D slabs (networks/slab.py, plans/slab.py, training/slab.py): the slab network equals the 2D network
slice by slice at initialisation, sees its neighbours where asked, fuses across slices once trained,
traces under torch.compile; the preset writes the configuration nnU-Net runs; 3D plans are refused."""
import copy

import pytest
import torch

from network_table import FAMILY_NAMES, build_tiny
from nnunet_dino.errors import OptionError
from nnunet_dino.networks.slab import make_slab, neighbour_channels, slab_of, slices_of
from nnunet_dino.plans.slab import SLAB_RECORD_KEY, slab_configuration

K = 5


def _pair(family, input_channels=1, neighbours="repeat"):
    """The tiny 2D network and its slab twin with identical weights (both seeded)."""
    flat = build_tiny(family, input_channels, 3, cpu_precision="fp32").eval()
    slab = make_slab(build_tiny(family, input_channels, 3, cpu_precision="fp32"), K, neighbours).eval()
    return flat, slab


def test_slices_and_neighbours_are_laid_out_slab_by_slab():
    x = torch.arange(2 * 1 * K * 2 * 2, dtype=torch.float32).view(2, 1, K, 2, 2)
    flat = slices_of(x)
    assert flat.shape == (2 * K, 1, 2, 2) and torch.equal(flat[K + 3], x[1, :, 3])
    assert torch.equal(slab_of(flat, K), x)
    rgb = neighbour_channels(flat.expand(-1, 3, -1, -1), K).view(2, K, 3, 2, 2)
    below, centre, above = rgb[1, :, 0], rgb[1, :, 1], rgb[1, :, 2]
    assert torch.equal(centre, x[1, 0]) and torch.equal(below[2], x[1, 0, 1]) and torch.equal(above[2], x[1, 0, 3])
    assert torch.equal(below[0], x[1, 0, 0]) and torch.equal(above[K - 1], x[1, 0, K - 1])  # edges repeat


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_at_initialisation_the_slab_network_is_the_2d_network_slice_by_slice(family, one_thread):
    flat, slab = _pair(family)
    x = torch.randn(2, 1, K, 40, 36)
    with torch.no_grad():
        out = slab(x)
        assert out.shape == (2, 3, K, 40, 36)
        for k in range(K):
            torch.testing.assert_close(out[:, :, k], flat(x[:, :, k]), rtol=0, atol=1e-5)
        for fusion in slab.slab.fusions:  # a trained fusion mixes slices: the hooks are live
            torch.nn.init.normal_(fusion.conv.weight, std=0.1)
        changed = (slab(x) - out).abs().amax(dim=(0, 1, 3, 4))
    assert len(slab.slab.fusions) >= 1 and bool((changed > 1e-4).all()), changed
    assert set(slab.state_dict()) - set(flat.state_dict()) == {
        k for k in slab.state_dict() if k.startswith("slab.fusions.")}


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_neighbour_mode_feeds_slices_above_and_below_as_the_three_channels(family, one_thread):
    _, slab = _pair(family, neighbours="rgb")
    rgb_net = build_tiny(family, 3, 3, cpu_precision="fp32").eval()  # same weights: 1 and 3 channels add none
    x = torch.randn(1, 1, K, 40, 36)
    with torch.no_grad():
        out = slab(x)
        for k in range(K):
            stacked = torch.cat([x[:, :, max(k - 1, 0)], x[:, :, k], x[:, :, min(k + 1, K - 1)]], dim=1)
            torch.testing.assert_close(out[:, :, k], rgb_net(stacked), rtol=1e-4, atol=1e-4)


def test_slab_network_refuses_other_depths():
    _, slab = _pair("SegDINO")
    with pytest.raises(ValueError, match=f"\\(B, C, {K}, H, W\\)"):
        slab(torch.randn(1, 1, K + 1, 32, 32))


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_every_trainable_parameter_of_a_slab_network_gets_a_gradient(family, one_thread):
    """nnU-Net's DDP has no find_unused_parameters (tests/test_ddp.py runs a slab network under DDP)."""
    _, slab = _pair(family, neighbours="rgb")
    slab(torch.randn(1, 1, K, 40, 36)).square().mean().backward()
    missing = [n for n, p in slab.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing and all(f.conv.weight.grad.abs().sum() > 0 for f in slab.slab.fusions), missing


def test_compiled_slab_network_matches_eager_forward_and_backward(one_thread):
    """The fusions are forward hooks: torch.compile traces them (the mechanism is the same for every family)."""
    _, slab = _pair("SegDINO", neighbours="rgb")
    for fusion in slab.slab.fusions:
        torch.nn.init.normal_(fusion.conv.weight, std=0.1)
    x = torch.randn(1, 1, K, 40, 36)
    out = torch.compile(slab, backend="aot_eager")(x)
    torch.testing.assert_close(out, slab(x), rtol=1e-4, atol=1e-5)
    out.sum().backward()
    assert all(f.conv.weight.grad is not None for f in slab.slab.fusions)


# --- plans -------------------------------------------------------------------------------------------
def _plans():
    arch = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {"n_stages": 3, "features_per_stage": [32, 64, 128],
                            "conv_op": "torch.nn.modules.conv.Conv2d", "kernel_sizes": [[3, 3]] * 3,
                            "strides": [[1, 1], [2, 2], [2, 2]], "n_conv_per_stage": [2] * 3,
                            "n_conv_per_stage_decoder": [2] * 2, "conv_bias": True,
                            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d", "norm_op_kwargs": {},
                            "dropout_op": None, "dropout_op_kwargs": None,
                            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}
    two_d = {"data_identifier": "nnUNetPlans_2d", "preprocessor_name": "DefaultPreprocessor", "batch_size": 12,
             "patch_size": [64, 80], "spacing": [1.0, 1.0], "architecture": arch}
    full = dict(copy.deepcopy(two_d), data_identifier="nnUNetPlans_3d_fullres", spacing=[3.0, 1.0, 1.0],
                patch_size=[8, 64, 80])
    return {"transpose_forward": [0, 1, 2], "configurations": {"2d": two_d, "3d_fullres": full}}


FINGERPRINT = {"spacings": [[3.0, 1.0, 1.0]] * 3, "shapes_after_crop": [[12, 64, 80]] * 3}


def test_preset_configuration_is_the_2d_one_as_a_slab(tmp_path):
    config = slab_configuration(_plans(), K, str(tmp_path), FINGERPRINT)
    assert config["patch_size"] == [K, 64, 80] and config["batch_size"] == 2  # ~ the 2D batch's slices per step
    assert config["spacing"] == [1.0, 1.0] and config["data_identifier"] == "nnUNetPlans_2d"
    assert config[SLAB_RECORD_KEY] == {"slices": K}
    kwargs = config["architecture"]["arch_kwargs"]
    assert kwargs["conv_op"].endswith("Conv3d") and kwargs["norm_op"].endswith("InstanceNorm3d")
    assert all(s[0] == 1 for s in kwargs["strides"]) and all(k[0] == 1 for k in kwargs["kernel_sizes"])  # z kept


def test_preset_reuses_3d_fullres_data_only_when_it_holds_the_same_voxels(tmp_path):
    (tmp_path / "nnUNetPlans_3d_fullres").mkdir()
    (tmp_path / "nnUNetPlans_3d_fullres" / "case_000.b2nd").write_bytes(b"x")
    config = slab_configuration(_plans(), K, str(tmp_path), FINGERPRINT)
    assert config["data_identifier"] == "nnUNetPlans_3d_fullres" and config["spacing"] == [3.0, 1.0, 1.0]
    mixed = dict(FINGERPRINT, spacings=[[3.0, 1.0, 1.0], [2.0, 1.0, 1.0], [3.0, 1.0, 1.0]])  # resampled along z
    assert slab_configuration(_plans(), K, str(tmp_path), mixed)["data_identifier"] == "nnUNetPlans_2d"
    (tmp_path / "nnUNetPlans_2d").mkdir()
    (tmp_path / "nnUNetPlans_2d" / "case_000.b2nd").write_bytes(b"x")
    assert slab_configuration(_plans(), K, str(tmp_path), FINGERPRINT)["data_identifier"] == "nnUNetPlans_2d"


def test_preset_refuses_slabs_that_do_not_fit(tmp_path):
    with pytest.raises(OptionError, match="--slices 30"):
        slab_configuration(_plans(), 30, str(tmp_path), FINGERPRINT)
    with pytest.raises(OptionError, match="needs volumes"):
        slab_configuration(_plans(), K, str(tmp_path), dict(FINGERPRINT, shapes_after_crop=[[1, 64, 80]] * 3))


# --- trainers ----------------------------------------------------------------------------------------
def _slab_plans():
    plans = _plans()
    plans["configurations"]["2.5d"] = slab_configuration(plans, K, "/nonexistent", FINGERPRINT)
    plans["configurations"]["3d_fullres"].update(normalization_schemes=["ZScoreNormalization"])
    plans["configurations"]["2.5d"].update(normalization_schemes=["ZScoreNormalization"])
    return plans


def test_3d_fullres_is_refused_naming_the_2_5d_preset_and_the_slab_is_accepted():
    from nnunet_dino.training.trainers import nnUNetTrainerUDFA
    plans = _slab_plans()
    with pytest.raises(ValueError) as error:
        nnUNetTrainerUDFA._check_configuration(plans, "3d_fullres")
    assert "is 3D" in str(error.value) and "--preset 2.5d" in str(error.value)
    assert "nnUNetv2_train DATASET 2.5d FOLD -tr nnUNetTrainerUDFA" in str(error.value)
    nnUNetTrainerUDFA._check_configuration(plans, "2.5d")


@pytest.mark.parametrize("channels,expected", [(1, "rgb"), (2, "repeat")])
def test_the_trainer_builds_the_slab_its_plans_record(channels, expected):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnunet_dino.training.slab import slab_record
    from nnunet_dino.training.trainers import nnUNetTrainerSegDINO
    configuration = PlansManager(_slab_plans()).get_configuration("2.5d")
    record = slab_record(nnUNetTrainerSegDINO, configuration, channels)
    assert record == {"slices": K, "neighbours": expected, "fusion": "conv"}
    if channels == 1:
        net = nnUNetTrainerSegDINO.build_network_architecture(PlansManager(_slab_plans()), configuration, 1, 3)
        assert (net.slab.slices, net.slab.neighbours, len(net.slab.fusions)) == (K, "rgb", 4)
