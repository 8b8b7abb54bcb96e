"""The networks under test, one table for every test: the plugin families of `nnunet-dino gpu-check`
(nnunet_dino.bench.gpu_check.FAMILIES), built tiny (a 64-dim, 4-block ViT and narrow CNNs)."""
from nnunet_dino.bench.gpu_check import FAMILIES

FAMILY_NAMES = [family.name for family in FAMILIES]
_BY_NAME = {family.name: family for family in FAMILIES}


def build_tiny(family: str, input_channels: int = 1, num_classes: int = 3, adaptation=None, **options):
    """The family's network with a tiny backbone and CNN; seeded, so two builds are identical.
    `adaptation` (backbones/adaptation.py) adapts its encoder, as the trainers do after building."""
    network = _BY_NAME[family].build(input_channels, num_classes, tiny=True, **options)
    if adaptation is not None:
        network.backbone.adapt(adaptation)
    return network
