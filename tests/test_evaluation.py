"""Evaluation: Dice/HD95/ASD in mm against medpy, the empty-mask policy, regions and ignore label,
the folder evaluator (NIfTI and PNG) and the `nnunet-dino evaluate` command."""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import SimpleITK as sitk
from medpy.metric import binary as medpy_binary
from PIL import Image
from scipy.ndimage import gaussian_filter

from nnunet_dino.evaluation import (binary_metrics, case_metrics, classes_from_labels, evaluate_folders,
                                    ignore_label_from_labels, summarise, surface_distances)

TOLERANCE_MM = 1e-6
AAL_ATLAS = "/usr/share/mricron/templates/aal.nii.gz"  # Debian mricron-data; CI installs it
ANISOTROPIC_3D = (3.0, 0.8, 1.2)  # numpy axis order (z, y, x), mm
NNUNET_DINO = os.path.join(os.path.dirname(sys.executable), "nnunet-dino")


def random_mask(rng: np.random.Generator, shape, blur: float, level: float) -> np.ndarray:
    """Blobs (smoothed noise above `level` standard deviations); they also touch the image edge."""
    noise = gaussian_filter(rng.normal(size=shape), blur)
    return noise > level * noise.std()


def assert_matches_medpy(prediction: np.ndarray, reference: np.ndarray, spacing, ours=None) -> float:
    """Our Dice, HD95, ASD (= medpy's assd) and both directed means (medpy's asd) vs medpy; max |diff|."""
    ours = binary_metrics(prediction, reference, spacing) if ours is None else ours
    to_ref, to_pred = surface_distances(prediction, reference, spacing)
    diffs = [abs(ours["Dice"] - medpy_binary.dc(prediction, reference)),
             abs(ours["HD95"] - medpy_binary.hd95(prediction, reference, spacing)),
             abs(ours["ASD"] - medpy_binary.assd(prediction, reference, spacing)),
             abs(to_ref.mean() - medpy_binary.asd(prediction, reference, spacing)),
             abs(to_pred.mean() - medpy_binary.asd(reference, prediction, spacing))]
    assert max(diffs) <= TOLERANCE_MM, diffs
    return max(diffs)


@pytest.mark.parametrize("shape, spacing", [((70, 90), (0.7, 1.3)), ((18, 44, 40), ANISOTROPIC_3D)],
                         ids=["2d", "3d"])
def test_random_masks_match_medpy(shape, spacing):
    rng = np.random.default_rng(5)
    for blur, level in [(1.0, 0.0), (2.0, 0.5), (3.0, 1.0), (0.0, 2.0), (2.0, 1.5)]:  # (0, 2): speckles
        prediction, reference = random_mask(rng, shape, blur, level), random_mask(rng, shape, blur, level)
        assert_matches_medpy(prediction, reference, spacing)


def test_small_objects_far_apart_in_a_large_array_match_medpy():
    """The crop is the union's box: two distant objects, neither at the edge, one touching it."""
    prediction, reference = np.zeros((40, 120, 110), bool), np.zeros((40, 120, 110), bool)
    prediction[10:14, 20:31, 15:19] = True
    reference[25:31, 90:100, 80:95] = True
    reference[0:3, 0:4, 100:110] = True  # touches three image faces
    assert_matches_medpy(prediction, reference, ANISOTROPIC_3D)


def _aal() -> np.ndarray:
    assert os.path.exists(AAL_ATLAS), f"{AAL_ATLAS} missing: install Debian's mricron-data (CI does)"
    return sitk.GetArrayFromImage(sitk.ReadImage(AAL_ATLAS))  # (z, y, x) = (181, 217, 181), 1 mm


def _box_with_margin(a: np.ndarray, b: np.ndarray, margin: int = 3):
    coords = np.argwhere(a | b)
    low, high = np.maximum(coords.min(0) - margin, 0), coords.max(0) + margin + 1
    return tuple(slice(lo, hi) for lo, hi in zip(low, high))


def test_real_aal_structures_match_medpy():
    """Real anatomy: neighbouring AAL regions and a region against a shifted copy of itself.

    We evaluate the whole 181x217x181 volume; medpy runs on a crop with a margin (same answer, fast).
    """
    aal = _aal()
    precentral_l, frontal_sup_l, postcentral_l = aal == 1, aal == 3, aal == 57
    hippocampus_l = aal == 37
    shifted = np.roll(hippocampus_l, (2, -3, 1), axis=(0, 1, 2))
    frontal_lobe_l = np.isin(aal, [3, 5, 7, 9, 11, 13, 15])
    pairs = [(precentral_l, frontal_sup_l), (postcentral_l, precentral_l), (shifted, hippocampus_l),
             (frontal_lobe_l, frontal_sup_l)]
    for spacing in [(1.0, 1.0, 1.0), ANISOTROPIC_3D]:
        for prediction, reference in pairs:
            ours = binary_metrics(prediction, reference, spacing)
            box = _box_with_margin(prediction, reference)
            assert_matches_medpy(prediction[box], reference[box], spacing, ours=ours)


def test_empty_mask_policy():
    shape, spacing = (20, 24), (1.5, 0.5)
    empty, blob = np.zeros(shape, bool), np.zeros(shape, bool)
    blob[5:9, 3:12] = True
    both = binary_metrics(empty, empty, spacing)
    assert all(math.isnan(both[m]) for m in ("Dice", "IoU", "HD95", "ASD"))
    assert (both["TN"], both["n_ref"], both["n_pred"]) == (480, 0, 0)
    for prediction, reference in [(blob, empty), (empty, blob)]:  # hallucinated, missed
        one = binary_metrics(prediction, reference, spacing)
        assert one["Dice"] == 0 and one["IoU"] == 0
        assert math.isnan(one["HD95"]) and math.isnan(one["ASD"])
    with pytest.raises(ValueError, match="empty"):
        surface_distances(blob, empty, spacing)

    # aggregation: both-empty leaves every mean; one-empty enters Dice (as 0), not the distances
    shifted = np.roll(blob, 2, axis=1)
    normal = binary_metrics(shifted, blob, spacing)
    cases = [{"1": m} for m in (normal, both, binary_metrics(blob, empty, spacing),
                                binary_metrics(empty, blob, spacing))]
    [c] = classes_from_labels({"background": 0, "blob": 1})
    summary = summarise(cases, [c])
    assert summary["mean"]["1"]["Dice"] == pytest.approx(normal["Dice"] / 3)
    assert summary["mean"]["1"]["HD95"] == normal["HD95"] and summary["mean"]["1"]["ASD"] == normal["ASD"]
    assert summary["counts"]["1"] == {"n_cases": 4, "n_distance": 1, "n_both_empty": 1,
                                      "n_reference_empty_only": 1, "n_prediction_empty_only": 1}
    assert summary["foreground_mean"]["Dice"] == summary["mean"]["1"]["Dice"]
    all_empty = summarise([{"1": both}], [c])  # no value at all: NaN, not a warning or a crash
    assert math.isnan(all_empty["mean"]["1"]["Dice"]) and math.isnan(all_empty["foreground_mean"]["HD95"])


BRATS_LIKE_LABELS = {"background": 0, "whole tumour": [1, 2, 3], "tumour core": [2, 3], "enhancing": 3,
                     "ignore": 4}


def test_class_keys_follow_nnunet_label_manager():
    from nnunetv2.evaluation.evaluate_predictions import label_or_region_to_key
    from nnunetv2.utilities.label_handling.label_handling import LabelManager
    regions = classes_from_labels(BRATS_LIKE_LABELS)
    manager = LabelManager(BRATS_LIKE_LABELS, regions_class_order=[1, 2, 3])
    assert [c.key for c in regions] == [label_or_region_to_key(r) for r in manager.foreground_regions]
    assert [c.values for c in regions] == [(1, 2, 3), (2, 3), (3,)]
    assert ignore_label_from_labels(BRATS_LIKE_LABELS) == 4
    labels = classes_from_labels({"background": 0, "liver": 1, "tumour": 2})
    assert [(c.key, c.name) for c in labels] == [("1", "liver"), ("2", "tumour")]
    assert ignore_label_from_labels({"background": 0, "liver": 1}) is None


def _label_maps(rng: np.random.Generator, shape):
    """Nested labels 1 ⊃ 2 ⊃ 3 as in BraTS, plus a band of ignore label 4 in the reference."""
    def nested():
        out = np.zeros(shape, np.int32)
        for label, level in [(1, 0.0), (2, 0.4), (3, 0.8)]:
            out[random_mask(rng, shape, 2.0, level)] = label
        return out
    reference, prediction = nested(), nested()
    reference[:, 10:14] = 4
    return reference, prediction


def test_regions_and_ignore_label():
    from nnunetv2.evaluation.evaluate_predictions import compute_tp_fp_fn_tn, region_or_label_to_mask
    rng = np.random.default_rng(2)
    reference, prediction = _label_maps(rng, (16, 40, 36))
    classes, ignored = classes_from_labels(BRATS_LIKE_LABELS), reference == 4
    result = case_metrics(reference, prediction, ANISOTROPIC_3D, classes, ignore_label=4)
    for c in classes:
        ref_mask, pred_mask = np.isin(reference, c.values), np.isin(prediction, c.values)
        # counts and Dice as nnU-Net's evaluator computes them
        tp, fp, fn, tn = compute_tp_fp_fn_tn(region_or_label_to_mask(reference, c.values),
                                             region_or_label_to_mask(prediction, c.values), ignored)
        assert (result[c.key]["TP"], result[c.key]["FP"], result[c.key]["FN"], result[c.key]["TN"]) == \
            (tp, fp, fn, tn)
        assert result[c.key]["Dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12)
        # distances: the union mask with the ignored voxels removed from both sides
        assert_matches_medpy(pred_mask & ~ignored, ref_mask & ~ignored, ANISOTROPIC_3D, ours=result[c.key])

    # a prediction that differs from the reference only under the ignore label is perfect
    perfect = np.where(ignored, rng.integers(0, 4, reference.shape), reference)
    for m in case_metrics(reference, perfect, ANISOTROPIC_3D, classes, ignore_label=4).values():
        assert (m["Dice"], m["HD95"], m["ASD"]) == (1.0, 0.0, 0.0)


def _write_dataset_json(folder: str, labels: dict, file_ending: str) -> str:
    path = os.path.join(folder, "dataset.json")
    with open(path, "w") as f:
        json.dump({"channel_names": {"0": "x"}, "labels": labels, "numTraining": 3, "file_ending": file_ending}, f)
    return path


def _read_csv(path: str):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _nifti_cases(tmp_path):
    """Three 3D cases, spacing x=1.2, y=0.8, z=3.0 mm; class 2 is missed in case 1 and absent in case 2."""
    rng = np.random.default_rng(7)
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir(), pred_dir.mkdir()
    arrays = {}
    for i in range(3):
        reference, prediction = np.zeros((12, 30, 26), np.uint8), np.zeros((12, 30, 26), np.uint8)
        reference[random_mask(rng, reference.shape, 2.0, 0.1)] = 1
        prediction[random_mask(rng, reference.shape, 2.0, 0.1)] = 1
        if i == 0:
            reference[3:8, 5:12, 4:9], prediction[4:9, 6:12, 4:10] = 2, 2
        if i == 1:
            reference[3:8, 5:12, 4:9] = 2
        for array, folder in [(reference, gt_dir), (prediction, pred_dir)]:
            image = sitk.GetImageFromArray(array)
            image.SetSpacing((1.2, 0.8, 3.0))
            sitk.WriteImage(image, str(folder / f"case_{i:03d}.nii.gz"))
        arrays[f"case_{i:03d}"] = (reference, prediction)
    (pred_dir / "summary.json").write_text("{}")  # nnU-Net's own file is not a case
    dataset_json = _write_dataset_json(str(tmp_path), {"background": 0, "grey": 1, "box": 2}, ".nii.gz")
    return str(gt_dir), str(pred_dir), dataset_json, arrays


def test_folder_evaluator_nifti(tmp_path):
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    gt_dir, pred_dir, dataset_json, arrays = _nifti_cases(tmp_path)
    summary = evaluate_folders(gt_dir, pred_dir, dataset_json)  # default output: beside summary.json
    with open(os.path.join(pred_dir, "metrics_summary.json")) as f:
        assert json.load(f) == summary
    classes = classes_from_labels({"background": 0, "grey": 1, "box": 2})
    assert [os.path.basename(c["prediction_file"]) for c in summary["metric_per_case"]] == \
        ["case_000.nii.gz", "case_001.nii.gz", "case_002.nii.gz"]
    for case in summary["metric_per_case"]:
        name = os.path.basename(case["reference_file"])[:-len(".nii.gz")]
        # numpy (z, y, x) order; NIfTI stores spacing as float32
        assert case["spacing"] == pytest.approx([3.0, 0.8, 1.2], abs=1e-6)
        expected = case_metrics(*arrays[name], case["spacing"], classes)
        nnunet = compute_metrics(case["reference_file"], case["prediction_file"], SimpleITKIO(), [1, 2])
        for key, label in [("1", 1), ("2", 2)]:
            for metric, value in expected[key].items():
                assert case["metrics"][key][metric] == (None if math.isnan(value) else pytest.approx(value))
            # Dice and counts equal those in nnU-Net's summary.json, NaN (null) included
            for count in ("TP", "FP", "FN", "TN", "n_ref", "n_pred"):
                assert case["metrics"][key][count] == nnunet["metrics"][label][count]
            ours_dice, nnunet_dice = case["metrics"][key]["Dice"], nnunet["metrics"][label]["Dice"]
            assert (ours_dice is None and math.isnan(nnunet_dice)) or ours_dice == pytest.approx(nnunet_dice)
    assert summary["counts"]["2"] == {"n_cases": 3, "n_distance": 1, "n_both_empty": 1,
                                      "n_reference_empty_only": 0, "n_prediction_empty_only": 1}
    box_cases = [c["metrics"]["2"] for c in summary["metric_per_case"]]
    assert summary["mean"]["2"]["Dice"] == pytest.approx(box_cases[0]["Dice"] / 2)
    assert summary["mean"]["2"]["HD95"] == pytest.approx(box_cases[0]["HD95"])
    assert summary["foreground_mean"]["Dice"] == pytest.approx(
        (summary["mean"]["1"]["Dice"] + summary["mean"]["2"]["Dice"]) / 2)
    assert summary["label_names"] == {"1": "grey", "2": "box"}

    per_case = _read_csv(os.path.join(pred_dir, "metrics_per_case.csv"))
    assert len(per_case) == 6 and {r["class_name"] for r in per_case} == {"grey", "box"}
    absent = next(r for r in per_case if r["case"] == "case_002" and r["class_name"] == "box")
    assert (absent["empty"], absent["Dice"], absent["HD95_mm"], absent["ASD_mm"]) == ("both", "", "", "")
    missed = next(r for r in per_case if r["case"] == "case_001" and r["class_name"] == "box")
    assert (missed["empty"], float(missed["Dice"]), missed["HD95_mm"]) == ("prediction", 0.0, "")
    first = next(r for r in per_case if r["case"] == "case_000" and r["class_name"] == "grey")
    assert float(first["HD95_mm"]) == summary["metric_per_case"][0]["metrics"]["1"]["HD95"]
    per_class = _read_csv(os.path.join(pred_dir, "metrics_per_class.csv"))
    assert [r["class_name"] for r in per_class] == ["grey", "box"]
    assert float(per_class[0]["Dice_mean"]) == summary["mean"]["1"]["Dice"]
    assert float(per_class[0]["HD95_mm_sd"]) == summary["sd"]["1"]["HD95"]
    assert per_class[1]["HD95_mm_sd"] == "" and per_class[1]["n_both_empty"] == "1"

    # two worker processes give the same numbers, written to another folder
    parallel = evaluate_folders(gt_dir, pred_dir, dataset_json, output_dir=str(tmp_path / "out"), num_processes=2)
    assert parallel == summary and os.path.exists(tmp_path / "out" / "metrics_per_class.csv")


def _png_cases(tmp_path):
    rng = np.random.default_rng(11)
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir(), pred_dir.mkdir()
    arrays = {}
    for i in range(2):
        reference, prediction = np.zeros((48, 64), np.uint8), np.zeros((48, 64), np.uint8)
        for label, level in [(1, 0.0), (2, 0.5)]:
            reference[random_mask(rng, reference.shape, 2.0, level)] = label
            prediction[random_mask(rng, reference.shape, 2.0, level)] = label
        Image.fromarray(reference).save(gt_dir / f"img_{i}.png")
        Image.fromarray(prediction).save(pred_dir / f"img_{i}.png")
        arrays[f"img_{i}.png"] = (reference, prediction)
    dataset_json = _write_dataset_json(str(tmp_path), {"background": 0, "disk": 1, "core": 2}, ".png")
    return str(gt_dir), str(pred_dir), dataset_json, arrays


def test_folder_evaluator_png_is_2d(tmp_path):
    gt_dir, pred_dir, dataset_json, arrays = _png_cases(tmp_path)
    summary = evaluate_folders(gt_dir, pred_dir, dataset_json, output_dir=str(tmp_path / "out"))
    classes = classes_from_labels({"background": 0, "disk": 1, "core": 2})
    for case in summary["metric_per_case"]:
        assert case["spacing"] == [1.0, 1.0]  # the (1, 1, H, W) read is scored as a 2D image
        reference, prediction = arrays[os.path.basename(case["reference_file"])]
        for c in classes:
            assert_matches_medpy(prediction == int(c.key), reference == int(c.key), (1.0, 1.0),
                                 ours=case["metrics"][c.key])
    per_case = _read_csv(str(tmp_path / "out" / "metrics_per_case.csv"))
    assert [(r["case"], r["class_name"]) for r in per_case] == \
        [("img_0", "disk"), ("img_0", "core"), ("img_1", "disk"), ("img_1", "core")]
    assert not os.path.exists(os.path.join(pred_dir, "metrics_summary.json"))


def test_unmatched_files_are_listed(tmp_path):
    gt_dir, pred_dir, dataset_json, _ = _png_cases(tmp_path)
    os.rename(os.path.join(pred_dir, "img_1.png"), os.path.join(pred_dir, "img_9.png"))
    with pytest.raises(ValueError) as error:
        evaluate_folders(gt_dir, pred_dir, dataset_json)
    assert "without a reference" in str(error.value) and "img_9.png" in str(error.value)
    assert "without a prediction" in str(error.value) and "img_1.png" in str(error.value)
    os.remove(os.path.join(pred_dir, "img_9.png"))  # one fold against labelsTr: references may be spare
    summary = evaluate_folders(gt_dir, pred_dir, dataset_json, allow_missing_predictions=True)
    assert len(summary["metric_per_case"]) == 1


def test_cli_evaluate(tmp_path):
    gt_dir, pred_dir, dataset_json, _ = _nifti_cases(tmp_path)
    out = tmp_path / "report"
    run = subprocess.run([NNUNET_DINO, "evaluate", gt_dir, pred_dir, "-d", dataset_json, "-o", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert "Dice" in lines[0] and "HD95 mm" in lines[0] and "ASD mm" in lines[0]
    assert lines[2].startswith("| grey") and lines[3].startswith("| box") and "mean (foreground)" in lines[4]
    assert "1/0/1" in lines[3]  # box: empty in both once, missed once
    assert {p.name for p in out.iterdir()} == {"metrics_summary.json", "metrics_per_case.csv",
                                                "metrics_per_class.csv"}
    os.remove(os.path.join(gt_dir, "case_001.nii.gz"))
    run = subprocess.run([NNUNET_DINO, "evaluate", gt_dir, pred_dir, "-d", dataset_json], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2 and "case_001.nii.gz" in run.stderr


def test_full_brain_volume_is_fast(capsys):
    """Benchmark, no assertion on time: all 116 AAL regions vs a one-voxel-shifted atlas, 181x217x181.

    Measured on the 2-core dev machine: ~1.0 s for the 116 regions, ~0.6 s for the whole-brain mask.
    """
    aal = _aal()
    shifted = np.roll(aal, (1, 1, 1), axis=(0, 1, 2))
    classes = classes_from_labels({"background": 0, **{f"aal_{i}": i for i in range(1, 117)}})
    start = time.perf_counter()
    result = case_metrics(aal, shifted, ANISOTROPIC_3D, classes)
    regions_s = time.perf_counter() - start
    start = time.perf_counter()
    brain = binary_metrics(shifted > 0, aal > 0, ANISOTROPIC_3D)
    brain_s = time.perf_counter() - start
    assert all(0 < m["Dice"] < 1 and m["HD95"] > 0 for m in result.values()) and brain["ASD"] > 0
    for label in (1, 37, 116):  # per-label boxes from find_objects change nothing
        assert result[str(label)] == binary_metrics(shifted == label, aal == label, ANISOTROPIC_3D)
    with capsys.disabled():
        print(f"\n[benchmark] 181x217x181: 116 AAL regions {regions_s:.2f} s, whole-brain mask {brain_s:.2f} s")


def test_undeclared_predicted_label_is_reported(tmp_path):
    """A stray label 3 (dataset.json declares 0-2) no class scores: summary, table and CLI say so."""
    gt_dir, pred_dir, dataset_json, _ = _png_cases(tmp_path)
    stray = np.asarray(Image.open(os.path.join(gt_dir, "img_1.png"))).copy()  # perfect except label 3
    stray[:4, :5] = 3
    Image.fromarray(stray).save(os.path.join(pred_dir, "img_1.png"))
    summary = evaluate_folders(gt_dir, pred_dir, dataset_json, output_dir=str(tmp_path / "out"))
    assert summary["undeclared_labels"] == {"prediction": {"3": {"cases": ["img_1"], "voxels": 20}}, "reference": {}}
    assert summary["metric_per_case"][1]["undeclared_labels"]["prediction"] == {"3": 20}
    run = subprocess.run([NNUNET_DINO, "evaluate", gt_dir, pred_dir, "-d", dataset_json, "-o", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "WARNING: label 3 is in 1 prediction(s) (20 voxels; img_1) but dataset.json does not declare it" \
        in run.stdout


def test_nrrd_references_pair_with_nifti_predictions_by_case(tmp_path):
    gt_dir, pred_dir, _, arrays = _nifti_cases(tmp_path)
    for name in os.listdir(gt_dir):  # references as .nrrd, as dataset.json says; predictions stay .nii.gz
        path = os.path.join(gt_dir, name)
        sitk.WriteImage(sitk.ReadImage(path), path.replace(".nii.gz", ".nrrd"))
        os.remove(path)
    dataset_json = _write_dataset_json(str(tmp_path), {"background": 0, "grey": 1, "box": 2}, ".nrrd")
    summary = evaluate_folders(gt_dir, pred_dir, dataset_json, output_dir=str(tmp_path / "out"))
    pairs = [(os.path.basename(c["reference_file"]), os.path.basename(c["prediction_file"]))
             for c in summary["metric_per_case"]]
    assert pairs == [(f"case_{i:03d}.nrrd", f"case_{i:03d}.nii.gz") for i in range(3)]
    classes = classes_from_labels({"background": 0, "grey": 1, "box": 2})
    expected = case_metrics(*arrays["case_000"], summary["metric_per_case"][0]["spacing"], classes)
    assert summary["metric_per_case"][0]["metrics"]["1"]["Dice"] == pytest.approx(expected["1"]["Dice"])
    rows = _read_csv(str(tmp_path / "out" / "metrics_per_case.csv"))
    assert {r["case"] for r in rows} == {"case_000", "case_001", "case_002"}

    # a real mismatch is explained with plain numbers
    image = sitk.ReadImage(os.path.join(pred_dir, "case_001.nii.gz"))
    image.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(image, os.path.join(pred_dir, "case_001.nii.gz"))
    run = subprocess.run([NNUNET_DINO, "evaluate", gt_dir, pred_dir, "-d", dataset_json, "-o", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "spacing mismatch" in run.stderr
    assert "[3.0, 0.8, 1.2]" in run.stderr and "np.float64" not in run.stderr
