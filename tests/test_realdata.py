"""One small real-data run: Colin27 + AAL slabs (Debian mricron-data, installed by `make test` and
CI), a `_debug` trainer, prediction and evaluation with Dice / HD95 / ASD in mm."""
import os

import pytest
import SimpleITK as sitk

from nnunet_dino.datasets.colin27 import MricronDataMissingError, make_colin27_dataset, require_mricron_templates
from nnunet_dino.evaluation import evaluate_folders
from nnunet_dino.nnunet import nnunet_environment, plan_and_preprocess, predict, train
from nnunet_helpers import results_folder
from nnunet_helpers import clean_environment


def test_pipeline_runs_on_real_anatomy(tmp_path):
    try:
        require_mricron_templates()
    except MricronDataMissingError as error:
        pytest.fail(f"{error} (CI installs it: `make realdata`)", pytrace=False)
    env = nnunet_environment(str(tmp_path / "nnunet"), clean_environment(nnUNet_dino_weights="random"))
    built = make_colin27_dataset(env["nnUNet_raw"], 903, downsample=2, slab=6, test_slabs=4)
    plan_and_preprocess(903, env)
    trainer = "nnUNetTrainerUDFA_S_debug"
    train(903, trainer, env)
    out = str(tmp_path / "predictions")
    predict(903, trainer, os.path.join(built.folder, "imagesTs"), out, env)
    summary = evaluate_folders(os.path.join(built.folder, "labelsTs"), out, os.path.join(built.folder, "dataset.json"))
    assert len(summary["metric_per_case"]) == 4
    assert set(summary["mean"]) == {str(v) for k, v in built.labels.items() if k != "background"}
    assert os.path.isfile(os.path.join(out, "metrics_per_case.csv"))
    model = results_folder(env, built.name, trainer)
    assert os.path.isfile(os.path.join(model, "fold_0", "checkpoint_final.pth"))
    # geometry is preserved; after 30 steps on a random backbone the prediction is not degenerate (neither
    # empty nor all foreground) and overlaps the brain. Learning quality is what `make demo` reports.
    whole_brain = []
    for case in sorted(os.listdir(os.path.join(built.folder, "labelsTs"))):
        reference = sitk.ReadImage(os.path.join(built.folder, "labelsTs", case))
        prediction = sitk.ReadImage(os.path.join(out, case))
        assert prediction.GetSize() == reference.GetSize() and prediction.GetSpacing() == reference.GetSpacing()
        ref, pred = sitk.GetArrayFromImage(reference) > 0, sitk.GetArrayFromImage(prediction) > 0
        assert 0.05 < pred.mean() < 0.95, pred.mean()
        whole_brain.append(2 * (ref & pred).sum() / (ref.sum() + pred.sum()))
    assert sum(whole_brain) / len(whole_brain) > 0.3, whole_brain
