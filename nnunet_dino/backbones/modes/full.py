"""`full`: every encoder tensor the forward uses trains (the patch embedding, prefix tokens and position
embedding, every block, the final norm); the slim checkpoint holds the whole ViT (no base is needed)."""
from .base import AdaptationMode, register_mode


class Full(AdaptationMode):
    name = "full"
    trains = True
    shares_encoder_across_folds = False
    holds_whole_encoder = True
    example = {"layer_decay": 0.5, "backbone_lr_ratio": 0.25}

    def describe(self, adaptation) -> str:
        return "fully fine-tuned"

    def trains_vit_layer(self, adaptation, layer, depth) -> bool:
        return layer is not None

    def first_graph_block(self, adaptation, depth: int) -> int:
        return 0

    def embedding_trains(self, adaptation) -> bool:
        return True

    def keeps_key(self, adaptation, key: str, depth: int) -> bool:
        return key.startswith("vit.")  # every ViT tensor, those the forward never uses included


FULL = register_mode(Full())
