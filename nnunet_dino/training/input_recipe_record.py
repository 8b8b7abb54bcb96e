"""The trainer side of input recipes (`networks.input_adapters` builds their modules): resolve a
trainer's declared recipe against the plans and the weights, refuse what cannot work before anything
is written, and keep the result in the plans configuration so prediction rebuilds the same input module.

CT recipes take a channel normalised by nnU-Net's CTNormalization (HU recovered from the plans'
intensity properties, exact inside its foreground percentile clip range, which can be narrow: an
organ's own HU range) or a channel named 'CT' that the plans leave in HU (`NoNormalization`: set it
in the plans' normalization_schemes and preprocess again), where windows see the full HU range.

A trainer declares `input_recipe` ('auto', 'zscore', 'rgb', 'ct_windows', 'meddinov3', 'official') and
`input_recipe_options` (ct_windows: {'windows': three preset names or (width, level) pairs};
official: {'rgb_affine': True} to apply the weights' mean/std to three rgb_to_0_1 channels).
'auto' is 'rgb' for three rgb_to_0_1 channels and 'zscore' otherwise.
"""
from __future__ import annotations

from typing import Optional, Sequence

from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from ..backbones.normalization import HU_SPACE
from ..networks.input_adapters import (CT_RECIPES, DEFAULT_WINDOWS, MEDDINOV3_WINDOWS, RECIPES, InputRecipeError,
                                      parse_windows)

#: key of the recipe record in a plans configuration
INPUT_RECIPE_KEY = "nnunet_dino_input"
CT_SCHEME, RGB_SCHEME, NO_SCHEME = "CTNormalization", "RGBTo01Normalization", "NoNormalization"


def input_record(configuration_manager: ConfigurationManager) -> dict:
    """The recorded recipe ({} for plans trained before recipes were recorded)."""
    return configuration_manager.configuration.get(INPUT_RECIPE_KEY, {})


def _all_rgb(schemes: Sequence[str]) -> bool:
    return len(schemes) == 3 and all(s == RGB_SCHEME for s in schemes)


def unrecorded_rgb_affine(configuration_manager: ConfigurationManager, input_channels: int) -> bool:
    """Plans trained before recipes were recorded: three rgb_to_0_1 channels -- the data 'auto' resolves
    to 'rgb' -- got the ImageNet mean/std in the network's own adapter, so a rebuilt network does too."""
    return (not input_record(configuration_manager) and input_channels == 3
            and _all_rgb(configuration_manager.normalization_schemes))


def _resolve(recipe: str, schemes: Sequence[str], space: str) -> str:
    if recipe not in RECIPES:
        raise InputRecipeError(f"unknown input_recipe {recipe!r}; known: {', '.join(RECIPES)}")
    if recipe != "auto":
        return recipe
    return "rgb" if _all_rgb(schemes) and space != HU_SPACE else "zscore"


def _keeps_hu(schemes: Sequence[str], channel_names: Optional[dict]) -> bool:
    """A plan whose one channel is named CT and left unnormalised: the data are HU already."""
    return list(schemes) == [NO_SCHEME] and str((channel_names or {}).get("0", "")).lower() == "ct"


def _check(recipe: str, schemes: Sequence[str], normalization, trainer: str, channel_names: Optional[dict]) -> None:
    if recipe in CT_RECIPES and list(schemes) != [CT_SCHEME] and not _keeps_hu(schemes, channel_names):
        raise InputRecipeError(
            f"{trainer}: input_recipe '{recipe}' needs exactly one CT channel normalised by nnU-Net's "
            f"{CT_SCHEME} (or kept in HU by {NO_SCHEME}), but the plans' normalization_schemes are "
            f"{list(schemes)}. For MR and other modalities use input_recipe 'zscore'; for CT, name the "
            f"channel 'CT' in dataset.json.")
    if recipe == "rgb" and not _all_rgb(schemes):
        raise InputRecipeError(f"{trainer}: input_recipe 'rgb' needs three {RGB_SCHEME} channels (nnU-Net's "
                               f"rgb_to_0_1), but the plans' normalization_schemes are {list(schemes)}.")
    if recipe == "rgb" and normalization.space == HU_SPACE:
        raise InputRecipeError(f"{trainer}: these weights were trained on CT in HU ({normalization.origin}); "
                               f"the 'rgb' recipe cannot feed them. Use 'meddinov3', 'ct_windows' or 'zscore'.")


def input_recipe_record(trainer_cls, plans_manager: PlansManager, configuration: str, weights_source,
                        channel_names: Optional[dict] = None) -> dict:
    """The recipe record for `trainer_cls` on these plans and weights (`channel_names`: dataset.json's);
    InputRecipeError if it cannot apply."""
    schemes = list(plans_manager.get_configuration(configuration).normalization_schemes)
    spec = trainer_cls.backbone_spec()
    normalization = weights_source.normalization(spec)  # resolved once with the load's own
    recipe = _resolve(trainer_cls.input_recipe, schemes, normalization.space)
    options = dict(trainer_cls.input_recipe_options or {})
    _check(recipe, schemes, normalization, trainer_cls.__name__, channel_names)
    record = {"recipe": recipe, "normalization": normalization.record()}
    if recipe in CT_RECIPES and _keeps_hu(schemes, channel_names):
        record["ct_intensities"] = {"mean": 0.0, "std": 1.0}  # the plan keeps HU: nothing to invert
    elif recipe in CT_RECIPES:
        intensities = plans_manager.plans.get("foreground_intensity_properties_per_channel", {}).get("0")
        if not intensities or not {"mean", "std"} <= set(intensities):
            raise InputRecipeError(f"{trainer_cls.__name__}: the plans hold no foreground intensity properties for "
                                   f"channel 0, so HU cannot be recovered; re-run nnUNetv2_plan_and_preprocess.")
        record["ct_intensities"] = {k: float(intensities[k]) for k in
                                    ("mean", "std", "percentile_00_5", "percentile_99_5") if k in intensities}
    if recipe == "ct_windows":
        record["windows"] = [list(w) for w in parse_windows(options.get("windows", DEFAULT_WINDOWS))]
    if recipe == "official":
        record["weights_affine"] = bool(options.get("rgb_affine")) and _all_rgb(schemes)
    unused = set(options) - {"ct_windows": {"windows"}, "official": {"rgb_affine"}}.get(recipe, set())
    if unused:
        raise InputRecipeError(f"{trainer_cls.__name__}: input_recipe_options {sorted(unused)} do not apply to "
                               f"input_recipe '{recipe}'")
    return record


def describe_recipe(record: dict) -> str:
    """One log line: the recipe, its windows and normalisation, and windows beyond the HU clip range."""
    text = f"input recipe {record['recipe']}"
    if "windows" in record:
        text += ", HU windows (width, level) " + ", ".join(f"({w:g}, {c:g})" for w, c in record["windows"])
    clip = record.get("ct_intensities", {})
    if "percentile_00_5" in clip:
        lo, hi = clip["percentile_00_5"], clip["percentile_99_5"]
        text += f"; HU recovered exactly inside nnU-Net's clip range [{lo:g}, {hi:g}]"
        windows = MEDDINOV3_WINDOWS[:1] if record["recipe"] == "meddinov3" else record.get("windows", [])
        beyond = [f"({w:g}, {c:g})" for w, c in windows if c - w / 2 < lo or c + w / 2 > hi]
        if beyond:
            text += f" (windows {', '.join(beyond)} reach beyond it and saturate there)"
    norm = record.get("normalization", {})
    return text + f"; weights' normalisation: {norm.get('origin', '?')}"

