"""The networks under test, one table for every test: the families of the network registry
(nnunet_dino.networks.registry, the table `nnunet-dino gpu-check` runs too), built tiny (a 64-dim, 4-block
ViT and narrow CNNs). A family added to the registry is tested here without a change."""
from nnunet_dino.networks.registry import get_network_family, network_families

FAMILY_NAMES = [family.name for family in network_families()]


def build_tiny(family: str, input_channels: int = 1, num_classes: int = 3, adaptation=None, **options):
    """The family's network with a tiny backbone and CNN; seeded, so two builds are identical.
    `adaptation` (backbones/adaptation.py) adapts its encoder, as the trainers do after building."""
    network = get_network_family(family).build(input_channels, num_classes, tiny=True, **options)
    if adaptation is not None:
        network.backbone.adapt(adaptation)
    return network
