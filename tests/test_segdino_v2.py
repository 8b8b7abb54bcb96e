"""The SegDINO family completed: the authors' current x4 head, ViT-L, and SegDINO v2 (token pyramid
adaptation + residual depthwise decoder); parameter counts against the authors' code."""
import pytest
import torch

from dino_weights_helpers import tiny_spec
from nnunet_dino.backbones import get_backbone_spec
from nnunet_dino.networks.segdino import SegDINO, SegDINOHead
from nnunet_dino.networks.segdino_v2 import ResidualDepthwiseBlock, ScaleAwareDecoder, SegDINOv2, TokenPyramid
from nnunet_dino.training import trainers


def _count(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


@pytest.mark.parametrize("dim, paper, x4", [(384, 2_213_793, 2_475_937), (768, 2_766_753, 3_028_897),
                                           (1024, 3_135_393, 3_397_537)])
def test_segdino_heads_have_the_authors_parameter_counts(dim, paper, x4):
    # the authors' code: paper-era head (abf68e9) and the current one with the x4 ConvTranspose (e383124)
    assert _count(SegDINOHead(dim, 1)) == paper
    assert _count(SegDINOHead(dim, 1, head="x4")) == x4


@pytest.mark.parametrize("dim, expected", [(384, 3_299_593), (768, 3_692_809)])
def test_segdino_v2_decoder_has_the_authors_parameter_count(dim, expected):
    # the authors' DPT (segdino_v2 bc08a45, decoder_dim 256, one class) with a stub backbone of width D
    assert _count(TokenPyramid(dim, 256), ScaleAwareDecoder(256, 1)) == expected


def test_segdino_v2_network_counts_and_frozen_backbone():
    net = SegDINOv2(1, 1, backbone="dinov3_vits16")
    trainable, total = net.parameter_counts()
    assert trainable == 3_299_593 and total - trainable == _count(net.backbone)
    assert not any(p.requires_grad for p in net.backbone.parameters())


def test_residual_depthwise_blocks_start_as_the_identity_and_then_learn():
    block = ResidualDepthwiseBlock(32)
    x = torch.randn(2, 32, 6, 7)
    assert torch.equal(block(x), x)
    block(x).sum().backward()
    assert block.gamma.grad is not None and block.gamma.grad.abs() > 0


@pytest.mark.parametrize("network, options", [(SegDINOv2, {"decoder_dim": 32}), (SegDINO, {"head": "x4"})])
@pytest.mark.parametrize("channels, size", [(1, (64, 64)), (2, (50, 70)), (4, (32, 48))])
def test_output_matches_input_size(network, options, channels, size):
    net = network(channels, 3, backbone=tiny_spec("dinov3_vits16"), **options)
    out = net(torch.randn(2, channels, *size))
    assert out.shape == (2, 3, *size)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_trainers_declare_the_family():
    assert trainers.nnUNetTrainerSegDINO_L.backbone == "dinov3_vitl16"
    assert get_backbone_spec("dinov3_vitl16").default_taps == (4, 11, 17, 23)  # the authors' ViT-L taps
    assert trainers.nnUNetTrainerSegDINO_HeadX4.network_kwargs == {"head": "x4"}
    assert trainers.nnUNetTrainerSegDINOv2.network_class is SegDINOv2
    assert trainers.nnUNetTrainerSegDINOv2_B.backbone == "dinov3_vitb16"
    with pytest.raises(ValueError, match="head"):
        SegDINOHead(64, 1, head="dpt")


# --- 2.5D: SegDINO v2 declares its slab fusion points, one per pyramid level ------------------------------
def _segdino_v2(seed=0):
    torch.manual_seed(seed)
    return SegDINOv2(1, 3, backbone=tiny_spec("dinov3_vits16"), decoder_dim=16, cpu_precision="fp32")


def test_segdino_v2_becomes_a_slab_network_equal_to_the_2d_one_at_initialisation(one_thread):
    from nnunet_dino.networks.slab import make_slab
    flat, slab = _segdino_v2().eval(), make_slab(_segdino_v2(), 5).eval()
    # one fusion per pyramid level, after its own residual block (as SegDINO fuses after each tap's refinement)
    assert len(slab.slab.fusions) == 4
    x = torch.randn(2, 1, 5, 40, 36)
    with torch.no_grad():
        out = slab(x)
        assert out.shape == (2, 3, 5, 40, 36)
        for k in range(5):  # zero-initialised fusions: slice by slice the 2D network
            torch.testing.assert_close(out[:, :, k], flat(x[:, :, k]), rtol=0, atol=1e-5)
        for fusion in slab.slab.fusions:  # trained fusions mix the slices: the hooks are live
            torch.nn.init.normal_(fusion.conv.weight, std=0.1)
        assert bool(((slab(x) - out).abs().amax(dim=(0, 1, 3, 4)) > 1e-4).all())
    slab.train()
    slab(x).square().mean().backward()
    assert [n for n, p in slab.named_parameters() if p.requires_grad and p.grad is None] == []


def test_segdino_v2_trainer_builds_a_2_5d_network_from_slab_plans():
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from test_slab import _slab_plans
    plans = PlansManager(_slab_plans())
    net = trainers.nnUNetTrainerSegDINOv2.build_network_architecture(plans, plans.get_configuration("2.5d"), 1, 3)
    assert (net.slab.slices, net.slab.neighbours, len(net.slab.fusions)) == (5, "rgb", 4)


# A user's trainer found through nnUNet_extTrainer: SegDINO v2 on a tiny DINOv3, so the run stays cheap
TINY_SEGDINO_V2 = '''
from nnunet_dino.backbones.registry import get_backbone_spec, register_backbone
from nnunet_dino.training.trainers import nnUNetTrainerSegDINOv2_debug

TINY = register_backbone(get_backbone_spec("dinov3_vits16").variant("tiny_v2_dinov3", embed_dim=64, depth=4,
                                                                    num_heads=4)).name


class nnUNetTrainerTinySegDINOv2_debug(nnUNetTrainerSegDINOv2_debug):
    backbone = TINY
    network_kwargs = {"decoder_dim": 16}
'''


def test_segdino_v2_trains_and_predicts_in_2_5d_through_nnunet(synthetic_slabs, tmp_path):
    """nnUNetv2_train 2.5d -> nnUNetv2_predict -c 2.5d in a new process (the slab rebuilt from the saved plans)."""
    import json
    import os

    import SimpleITK as sitk

    from nnunet_dino.nnunet import model_folder, predict, train
    trainer = "nnUNetTrainerTinySegDINOv2_debug"
    (tmp_path / "my_trainers").mkdir()
    (tmp_path / "my_trainers" / "tiny_segdino_v2_trainers.py").write_text(TINY_SEGDINO_V2)
    env = dict(synthetic_slabs["env"], nnUNet_extTrainer=str(tmp_path / "my_trainers"),
               nnUNet_results=str(tmp_path / "results"))
    train(993, trainer, env, configuration="2.5d")
    model = model_folder(synthetic_slabs["name"], trainer, "nnUNetPlans", "2.5d", results=env["nnUNet_results"])
    saved = json.load(open(os.path.join(model, "plans.json")))["configurations"]["2.5d"]
    assert saved["nnunet_dino_slab"] == {"slices": 5, "neighbours": "rgb", "fusion": "conv"}
    weights = torch.load(os.path.join(model, "fold_0", "checkpoint_final.pth"), map_location="cpu",
                         weights_only=False)["network_weights"]
    assert {k.split(".")[2] for k in weights if k.startswith("slab.fusions.")} == {"0", "1", "2", "3"}
    images, out = os.path.join(synthetic_slabs["raw"], "imagesTs"), str(tmp_path / "predictions")
    predict(993, trainer, images, out, env, configuration="2.5d")
    cases = sorted(f for f in os.listdir(out) if f.endswith(".nii.gz"))
    assert len(cases) == 2
    for case in cases:
        image = sitk.ReadImage(os.path.join(images, case.replace(".nii.gz", "_0000.nii.gz")))
        assert sitk.ReadImage(os.path.join(out, case)).GetSize() == image.GetSize()
