"""nnU-Net plans for DINO trainers: the plugin's record in a configuration and the patch rounding
(`edit`), planning presets nnU-Net cannot find by `-pl` (`presets`), and running them with
preprocessing (`preprocess`), the 2.5D slab configuration (`slab`). The root folder `plans/`
documents them for nnU-Net users."""
from .edit import PLANS_RECORD_KEY, rounded_patch_size, update_configuration
from .presets import PRESETS, plan_preset
from .preprocess import plan_with_preset
from .slab import (DEFAULT_SLICES, SLAB_CONFIGURATION, SLAB_PRESET, SLAB_RECORD_KEY, add_slab_configuration,
                   slab_configuration)

__all__ = ["DEFAULT_SLICES", "PLANS_RECORD_KEY", "PRESETS", "SLAB_CONFIGURATION", "SLAB_PRESET", "SLAB_RECORD_KEY",
           "add_slab_configuration", "plan_preset", "plan_with_preset", "rounded_patch_size", "slab_configuration",
           "update_configuration"]
