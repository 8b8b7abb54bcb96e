"""The backbone package's error types, in the lowest module of the package: any file may raise them
without importing the loaders (weights.py) or the adaptation (adaptation.py), which re-export them."""
from ..errors import UserError


class WeightsError(UserError, RuntimeError):
    """Weights missing, unreadable, unsafe or of another architecture. The message says how to fix it."""


class AdaptationError(UserError, ValueError):
    """An adaptation declared with impossible settings, or a checkpoint of another adaptation."""
