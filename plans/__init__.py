"""Plans handling for DINO trainers (installed as `nnunet_dino.plans`). Thin by design."""
from .edit import PLANS_RECORD_KEY, dino_record, rounded_patch_size, trained_on_random_backbone, update_configuration
from .presets import plan_preset

__all__ = ["PLANS_RECORD_KEY", "dino_record", "trained_on_random_backbone", "rounded_patch_size", "update_configuration",
           "plan_preset"]
