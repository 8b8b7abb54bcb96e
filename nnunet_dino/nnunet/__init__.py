"""The one door to nnU-Net: its folders (dataset id/name, plans, results and fold folders), its
console commands run as subprocesses, and the facts of a trained model folder. Nothing else in the
plugin derives an nnU-Net path or starts an nnU-Net process."""
from .folders import (dataset_id, dataset_name, fold_folder, gt_folder, model_folder,
                      nnunet_environment, plans_file, plans_flags, preprocessed_folder, results_root,
                      require_plans, require_trainers)
from .runner import (NnUNetCommandError, evaluate, nnunet_command, plan_and_preprocess, predict, run_nnunet,
                     run_step, train)

__all__ = ["NnUNetCommandError", "dataset_id", "dataset_name", "evaluate", "fold_folder",
           "gt_folder", "model_folder", "nnunet_command", "nnunet_environment", "plan_and_preprocess",
           "plans_file", "plans_flags", "predict", "preprocessed_folder", "require_plans", "require_trainers",
           "results_root", "run_nnunet", "run_step", "train"]
