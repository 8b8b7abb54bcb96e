"""2.5D slabs (networks/slab.py, plans/slab.py, training/slab.py): the slab network equals the 2D network
slice by slice at initialisation, sees its neighbours where asked, fuses across slices once trained,
traces under torch.compile; the preset writes the configuration nnU-Net runs; 3D plans are refused."""
import copy

import pytest
import torch

from network_table import FAMILY_NAMES, build_tiny
from nnunet_dino.errors import OptionError
from nnunet_dino.networks.slab import SliceFusion, make_slab, neighbour_channels, slab_of, slices_of
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


def test_fusion_runs_in_fp32_under_cpu_bf16_autocast():
    """oneDNN's bf16 Conv3d corrupted the heap for full-size U-DFA slabs: the fusion leaves CPU autocast."""
    fusion = SliceFusion(4, K)
    torch.nn.init.normal_(fusion.conv.weight, std=0.3)
    features = torch.randn(2 * K, 4, 8, 8).bfloat16()
    seen = []
    fusion.conv.register_forward_hook(lambda module, inputs, output: seen.append((inputs[0].dtype, output.dtype)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fusion(features)
    assert seen == [(torch.float32, torch.float32)]
    expected = features.float() + slices_of(fusion.conv(slab_of(features.float(), K)))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, rtol=1e-2, atol=2e-2)


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


# --- learning: what one slice cannot tell ------------------------------------------------------------
def _volumes(seed, n, shape=(10, 32, 32)):
    import numpy as np
    from nnunet_dino.datasets.slab_synthetic import columns_and_flakes
    rng = np.random.default_rng(seed)
    pairs = [columns_and_flakes(rng, shape) for _ in range(n)]
    return (torch.from_numpy(np.stack([p[0] for p in pairs]))[:, None] * 3.0,  # (N, 1, Z, H, W), ~z-scored
            torch.from_numpy(np.stack([p[1] for p in pairs])).long())         # (N, Z, H, W)


def _train(net, images, labels, slab: bool, steps=250, slabs_per_step=2):
    """AdamW on random windows of K slices (the slab network: `slabs_per_step` slabs; the 2D network: the
    same K x `slabs_per_step` slices one by one)."""
    gen = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=2e-3)
    net.train()
    for _ in range(steps):
        cases = torch.randint(0, images.shape[0], (slabs_per_step,), generator=gen).tolist()
        starts = torch.randint(0, images.shape[2] - K + 1, (slabs_per_step,), generator=gen).tolist()
        x = torch.stack([images[c, :, s:s + K] for c, s in zip(cases, starts)])
        y = torch.stack([labels[c, s:s + K] for c, s in zip(cases, starts)])
        logits = net(x) if slab else slab_of(net(slices_of(x)), K)
        loss = torch.nn.functional.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval()


def _predict(net, image, slab: bool):
    """(1, Z, H, W) -> (Z, H, W) labels; slabs centred on each slice (the volume's edges repeated)."""
    with torch.no_grad():
        if not slab:
            return net(image.transpose(0, 1)).argmax(1)
        z = image.shape[1]
        padded = torch.cat([image[:, :1]] * (K // 2) + [image] + [image[:, -1:]] * (K // 2), dim=1)
        windows = torch.stack([padded[:, s:s + K] for s in range(z)])
        return net(windows)[:, :, K // 2].argmax(1)


def _mean_foreground_dice(predicted, reference):
    dice = [2 * ((predicted == c) & (reference == c)).sum() / ((predicted == c).sum() + (reference == c).sum())
            for c in (1, 2)]
    return float(sum(dice) / 2)


def test_at_an_equal_budget_the_slab_network_tells_columns_from_flakes_and_the_2d_one_cannot(one_thread):
    """Columns (3 slices) and flakes (1 slice) look alike in every slice: slice-wise, a mean foreground
    Dice above 0.5 is out of reach in expectation (datasets/slab_synthetic.py). Same tiny U-DFA, same
    steps, same slices per step; the slab network sees the neighbours. Twelve test volumes: on three,
    the 2D network's score swung across training seeds far enough to reach the slab network's."""
    images, labels = _volumes(0, 8)
    test_images, test_labels = _volumes(1, 12)
    flat = _train(build_tiny("U-DFA", 1, 3, cpu_precision="fp32"), images, labels, slab=False)
    slab = _train(make_slab(build_tiny("U-DFA", 1, 3, cpu_precision="fp32"), K, "rgb"), images, labels, slab=True)
    scores = {name: _mean_foreground_dice(torch.stack([_predict(net, x, name == "2.5d") for x in test_images]),
                                          test_labels)
              for name, net in (("2d", flat), ("2.5d", slab))}
    assert scores["2.5d"] > max(0.6, scores["2d"] + 0.15), scores
