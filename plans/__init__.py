"""Plans handling for DINO trainers (installed as `nnunet_dino.plans`). Thin by design."""
from .edit import PLANS_RECORD_KEY, rounded_patch_size, update_configuration
from .presets import plan_preset

__all__ = ["PLANS_RECORD_KEY", "rounded_patch_size", "update_configuration", "plan_preset"]
