"""`last_k`: the last k blocks and the final norm train; the blocks before them run without a graph."""
from .base import AdaptationMode, register_mode


class LastK(AdaptationMode):
    name = "last_k"
    trains = True
    shares_encoder_across_folds = False
    structure_fields = ("last_k",)
    example = {"last_k": 2}

    def problems(self, adaptation):
        return [] if adaptation.last_k >= 1 else [f"last_k needs last_k >= 1 blocks, got {adaptation.last_k}"]

    def check_backbone(self, adaptation, depth: int, backbone: str):
        if adaptation.last_k > depth:
            return [f"last_k = {adaptation.last_k}, but {backbone} has {depth} blocks: declare at most {depth} "
                    f"(or mode 'full')"]
        return []

    def label(self, adaptation) -> str:
        return f"last {adaptation.last_k} blocks"

    def describe(self, adaptation) -> str:
        return f"last {adaptation.last_k} blocks + final norm train (the rest frozen, no graph)"

    def trains_vit_layer(self, adaptation, layer, depth) -> bool:
        return layer is not None and layer > depth - adaptation.last_k

    def first_graph_block(self, adaptation, depth: int) -> int:
        return depth - adaptation.last_k


LAST_K = register_mode(LastK())
