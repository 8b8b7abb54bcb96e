"""Prediction with nnU-Net's own machinery, where the folds of an ensemble share one frozen encoder
forward per tile and mirror (`DinoPredictor`; `nnunet-dino predict` is its command)."""
from .predictor import DinoPredictor, default_tile_batch
from .sharing import SharedEncoder, Sharing, encoder_sharing, fold_networks

__all__ = ["DinoPredictor", "default_tile_batch", "SharedEncoder", "Sharing", "encoder_sharing", "fold_networks"]
