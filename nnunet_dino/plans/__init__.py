"""nnU-Net plans for DINO trainers: the plugin's record in a configuration and the patch rounding
(`edit`), planning presets nnU-Net cannot find by `-pl` (`presets`), and running them with
preprocessing (`preprocess`). The root folder `plans/` documents them for nnU-Net users."""
from .edit import PLANS_RECORD_KEY, rounded_patch_size, update_configuration
from .presets import PRESETS, plan_preset
from .preprocess import plan_with_preset

__all__ = ["PLANS_RECORD_KEY", "PRESETS", "plan_preset", "plan_with_preset", "rounded_patch_size",
           "update_configuration"]
