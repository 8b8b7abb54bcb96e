"""Planning presets nnU-Net cannot find by `-pl` (it only searches inside its own package), run
through `nnunet-dino plan -d ID --preset NAME`.

`dinounet512` is the Dino U-Net recipe: 2D only, in-plane spacing rescaled so the median slice
becomes 512 x 512, a 512 x 512 patch, 4 stages. It writes its own plans identifier and reuses
nnU-Net's default preprocessed 2D data when the spacing does not change.
"""
from __future__ import annotations

import os
from typing import Sequence, Tuple

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import load_json, save_json
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

from ..errors import MissingInputError, OptionError
from ..nnunet.folders import preprocessed_folder


class FixedInPlaneShapePlanner(ExperimentPlanner):
    """2D plans whose spacing maps the median slice to `target_shape`, with that patch size."""

    target_shape: Tuple[int, int] = (512, 512)
    num_stages: int = 4

    def get_plans_for_configuration(self, spacing, median_shape, data_identifier, approximate_n_voxels_dataset, _cache):
        if len(spacing) != 2:
            return super().get_plans_for_configuration(spacing, median_shape, data_identifier,
                                                       approximate_n_voxels_dataset, _cache)
        target = np.array(self.target_shape, dtype=float)
        new_spacing = np.asarray(spacing, dtype=float) * np.asarray(median_shape[:2], dtype=float) / target
        unchanged = bool(np.allclose(new_spacing, spacing, rtol=1e-6))
        if unchanged:  # same voxels as nnU-Net's default 2d data: reuse it
            data_identifier, new_spacing = "nnUNetPlans_2d", np.asarray(spacing, dtype=float)
        plan = super().get_plans_for_configuration(new_spacing, tuple(int(t) for t in target), data_identifier,
                                                   approximate_n_voxels_dataset, _cache)
        arch = plan["architecture"]["arch_kwargs"]
        n = self.num_stages
        arch.update(n_stages=n, features_per_stage=[min(512, 32 * 2 ** i) for i in range(n)],
                    kernel_sizes=[[3, 3]] * n, strides=[[1, 1]] + [[2, 2]] * (n - 1),
                    n_conv_per_stage=[2] * n, n_conv_per_stage_decoder=[2] * (n - 1))
        plan["patch_size"] = [int(t) for t in target]
        plan["batch_size"] = int(max(2, plan["batch_size"]))
        return plan


PRESETS = ("dinounet512",)


def plan_preset(dataset_id: int, preset: str, target_shape: Sequence[int] = (512, 512),
                plans_name: str = "") -> Tuple[str, dict]:
    """Plan `dataset_id` with a preset; returns (plans identifier, plans). Only the 2d configuration
    is kept. The dataset fingerprint must exist (nnUNetv2_plan_and_preprocess or
    nnUNetv2_extract_fingerprint first)."""
    if preset not in PRESETS:
        raise OptionError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
    planner_class = type("DinoUNetPlanner", (FixedInPlaneShapePlanner,), {"target_shape": tuple(target_shape)})
    name = plans_name or ("nnUNetPlansDinoUNet512" if tuple(target_shape) == (512, 512)
                          else "nnUNetPlansDinoUNet" + "x".join(str(t) for t in target_shape))
    planner = planner_class(dataset_id, plans_name=name)
    if not os.path.isfile(os.path.join(preprocessed_folder(planner.dataset_name), "dataset_fingerprint.json")):
        raise MissingInputError(f"No fingerprint for {planner.dataset_name}: run `nnUNetv2_plan_and_preprocess -d "
                                f"{dataset_id} -c 2d` (or nnUNetv2_extract_fingerprint) first.")
    plans = planner.plan_experiment()
    plans["configurations"] = {"2d": plans["configurations"]["2d"]}  # 3D configs: not for these trainers
    plans_file = os.path.join(preprocessed_folder(planner.dataset_name), name + ".json")
    save_json(plans, plans_file, sort_keys=False)
    return name, load_json(plans_file)
