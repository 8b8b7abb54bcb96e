"""`frozen` (the default): nothing of the encoder trains; no parameter, graph or checkpoint entry is added,
and the folds of an ensemble can share one encoder forward."""
from .base import AdaptationMode, register_mode


class Frozen(AdaptationMode):
    name = "frozen"


FROZEN = register_mode(Frozen())
