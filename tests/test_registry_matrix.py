"""Every network family x {2d, 2.5d} x every encoder adaptation mode, read from the registries
(networks/registry.py, backbones/modes/): a family or a mode added later is covered here without a change.

Each row builds the family tiny (a 64-wide, 4-block ViT, narrow CNNs; the mode at its `example` settings),
runs a training step, and checks that every trainable parameter got a gradient, that the frozen ones got none
and did not move, that the encoder trains exactly what the mode says, and that the slim checkpoint written
after the step loads into a freshly built network and gives the same outputs."""
import pytest
import torch

from nnunet_dino.backbones import WeightsSource, load_backbone_weights
from nnunet_dino.backbones.adaptation import Adaptation
from nnunet_dino.backbones.modes import modes
from nnunet_dino.networks.base import BACKBONE_RECORD_KEY
from nnunet_dino.networks.registry import network_families
from nnunet_dino.networks.slab import make_slab

SLICES = 3
ROWS = [(family, slab, mode) for family in network_families() for slab in (False, True) for mode in modes()]


def _build(family, slab: bool, mode, seed: int):
    net = family.build(1, 3, tiny=True, seed=seed, cpu_precision="fp32")
    load_backbone_weights(net.backbone, WeightsSource("random"))  # seeded: a slim checkpoint can rebuild it
    net.backbone.adapt(Adaptation.example(mode.name))
    return make_slab(net, SLICES, "rgb") if slab else net


def _input(family, slab: bool):
    size = max(32, family.network_class.min_input_size)
    gen = torch.Generator().manual_seed(0)
    return torch.randn((1, 1, SLICES, size, size) if slab else (2, 1, size, size), generator=gen)


def test_the_matrix_covers_every_registered_family_and_mode():
    assert {f.name for f in network_families()} >= {"SegDINO", "SegDINO v2", "U-DFA", "Dino U-Net"}
    assert {m.name for m in modes()} >= {"frozen", "lora", "last_k", "full"}
    assert len(ROWS) == len(network_families()) * 2 * len(modes())


@pytest.mark.filterwarnings("ignore:.*RANDOM FROZEN BACKBONE")  # the seeded random backbone, said on every reload
@pytest.mark.parametrize("family, slab, mode", ROWS,
                         ids=[f"{f.key}-{'2.5d' if s else '2d'}-{m.name}" for f, s, m in ROWS])
def test_family_by_dimension_by_mode_trains_and_round_trips_its_slim_checkpoint(family, slab, mode, one_thread):
    net = _build(family, slab, mode, seed=0).train()
    x = _input(family, slab)
    frozen = {n: p.detach().clone() for n, p in net.named_parameters() if not p.requires_grad}
    trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]

    # the encoder trains exactly what the mode says
    encoder = {f"backbone.{n}" for n, _ in net.backbone.adapted_parameters()}
    assert {n for n, _ in trainable if n.startswith("backbone.")} == encoder
    assert bool(encoder) == mode.trains
    if slab:
        assert len(net.slab.fusions) == len(family.slab_fusion_points) >= 1

    optimizer = torch.optim.SGD([p for _, p in trainable], lr=0.1)
    out = net(x)
    assert out.shape == ((1, 3, SLICES) if slab else (2, 3)) + x.shape[-2:]
    out.square().mean().backward()
    assert [n for n, p in trainable if p.grad is None] == []
    assert [n for n, p in net.named_parameters() if not p.requires_grad and p.grad is not None] == []
    optimizer.step()
    assert all(torch.equal(p, frozen[n]) and not p.requires_grad
               for n, p in net.named_parameters() if n in frozen)

    with net.slim_state_dict():
        slim = net.state_dict()
    kept = {k for k in slim if k.startswith("backbone.")}
    assert kept == {f"backbone.{k}" for k in net.backbone.state_dict() if mode.keeps_key(
        net.backbone.adaptation, k, net.backbone.depth)}
    assert bool(kept) == mode.trains and BACKBONE_RECORD_KEY in slim
    fresh = _build(family, slab, mode, seed=1)  # other initial weights: what it predicts comes from the checkpoint
    fresh.load_state_dict(slim)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), net.eval()(x), rtol=0, atol=1e-6)
