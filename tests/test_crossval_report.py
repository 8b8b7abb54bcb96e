"""`nnunet-dino crossval` over three `_debug` trainers x folds 0-1 (of nnU-Net's 5) on the suite's shared
2D dataset (its own results folder), killed once mid-fold and resumed, its `--emit` scripts, and `nnunet-dino report`, whose numbers are recomputed here from the
files.

Aggregation checked (as documented in nnunet_dino.crossval.statistics): per fold, a class's Dice is the mean
over that fold's validation cases (cases where the class is in neither reference nor prediction are
left out); the table shows mean and sample sd (ddof=1) of the fold values; the *mean* row averages
a fold's class means first. The paired test uses each case's mean Dice over its classes.
"""
import csv
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_erosion
from scipy.stats import wilcoxon

from nnunet_dino.cli import main
from nnunet_dino.nnunet import predict, run_step

DATASET_ID = 990
DATASET = "Dataset990_Synth2D"
# nnU-Net's own trainer first (the reference), then two plugin trainers (the pipeline tests below need two)
TRAINERS = ("nnUNetTrainer_debug", "nnUNetTrainerSegDINO_debug", "nnUNetTrainerDinoUNet_debug")
FOLDS = range(2)  # of the 5-fold split: a mean and an sd over folds, and 4 paired validation cases
CLASSES = {"1": "disk", "2": "square"}


def _fold_folder(env, trainer, fold):
    return os.path.join(env["nnUNet_results"], DATASET, f"{trainer}__nnUNetPlans__2d", f"fold_{fold}")


def _crossval(*extra):
    return [sys.executable, "-m", "nnunet_dino.cli", "crossval", "-d", str(DATASET_ID), "-tr", *TRAINERS,
            "--device", "cpu", "--npz", "--folds", *map(str, FOLDS), *extra]


def _interrupted_fold(env):
    """A fold past its first epoch: checkpoint_latest.pth written (the `_debug` twins of our trainers
    save it every epoch) and the log already at 'Epoch 1' (so the file is complete), no final yet."""
    for trainer in TRAINERS:
        for fold in FOLDS:
            folder = _fold_folder(env, trainer, fold)
            if not os.path.isfile(os.path.join(folder, "checkpoint_latest.pth")) or \
                    os.path.isfile(os.path.join(folder, "checkpoint_final.pth")):
                continue
            logs = glob.glob(os.path.join(folder, "training_log_*.txt"))
            if any("Epoch 1" in open(log).read() for log in logs):
                return trainer, fold
    return None


def _done_folds(env):
    return {(t, f) for t in TRAINERS for f in FOLDS
            if os.path.isfile(os.path.join(_fold_folder(env, t, f), "checkpoint_final.pth"))
            and os.path.isfile(os.path.join(_fold_folder(env, t, f), "validation", "summary.json"))}


def _nnunet_paths(patch, env):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_dino_weights"):
        patch.setenv(var, env[var])


@pytest.fixture(scope="module")
def crossval_run(synthetic_2d, tmp_path_factory):
    work = tmp_path_factory.mktemp("crossval")
    env = dict(synthetic_2d["env"], nnUNet_results=str(work / "results"), nnUNet_dino_weights="random",
               nnUNet_n_proc_DA="0")

    # 1) start, and SIGKILL the whole process group once a fold is half-way
    with open(work / "first_run.log", "w") as log:
        process = subprocess.Popen(_crossval(), env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        victim, deadline = None, time.time() + 900
        while process.poll() is None and time.time() < deadline and victim is None:
            victim = _interrupted_fold(env)
            time.sleep(0.05)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert victim is not None, "crossval finished (or timed out) before any fold could be interrupted:\n" + \
        (work / "first_run.log").read_text()[-3000:]
    finished = _done_folds(env)
    final_mtimes = {key: os.path.getmtime(os.path.join(_fold_folder(env, *key), "checkpoint_final.pth"))
                    for key in finished}

    # 2) --emit (in-process, it trains nothing): the scripts for exactly the missing folds
    emit_dir = str(work / "emit")
    with pytest.MonkeyPatch.context() as patch:
        _nnunet_paths(patch, env)
        assert main(_crossval("--emit", emit_dir)[3:]) == 0
    assert _done_folds(env) == finished

    # 3) resume: finished folds skipped, the interrupted one continued with --c, the rest trained
    resumed = subprocess.run(_crossval(), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-4000:]
    return {"env": env, "work": work, "victim": victim, "finished": finished, "final_mtimes": final_mtimes,
            "emit_dir": emit_dir, "resumed": resumed.stdout}


def test_resume_skips_finished_folds_and_continues_the_interrupted_one(crossval_run):
    env, victim, out = crossval_run["env"], crossval_run["victim"], crossval_run["resumed"]
    trainer, fold = victim
    # continues from checkpoint_latest.pth, or from checkpoint_best.pth when the kill hit a checkpoint write
    assert re.search(rf"{trainer} fold {fold}: resume \(--c\): interrupted; continues from checkpoint_(latest|best)\.pth",
                     out)
    log = open(os.path.join(env["nnUNet_results"], DATASET, "crossval_logs", "commands.log")).read()
    assert f"start resume: nnUNetv2_train {DATASET_ID} 2d {fold} -tr {trainer} -p nnUNetPlans -device cpu --c" in log
    assert len(crossval_run["finished"]) >= len(FOLDS)  # all of nnUNetTrainer_debug's folds ran before the kill
    for t, f in crossval_run["finished"]:
        assert f"{t} fold {f}: done, skipped" in out
        final = os.path.join(_fold_folder(env, t, f), "checkpoint_final.pth")
        assert os.path.getmtime(final) == crossval_run["final_mtimes"][(t, f)], f"{t} fold {f} was re-run"
    assert _done_folds(env) == {(t, f) for t in TRAINERS for f in FOLDS}
    assert f"all {len(TRAINERS) * len(FOLDS)} folds done" in out


def test_emit_writes_one_command_per_missing_fold(crossval_run):
    missing = {(t, f) for t in TRAINERS for f in FOLDS} - crossval_run["finished"]
    script = open(os.path.join(crossval_run["emit_dir"], "run_folds.sh")).read()
    commands = [line for line in script.splitlines() if line.startswith("nnUNetv2_train")]
    assert len(commands) == len(missing)
    for trainer, fold in missing:
        assert any(f" 2d {fold} -tr {trainer} " in c and "--c" in c for c in commands), (trainer, fold)
    array = open(os.path.join(crossval_run["emit_dir"], "job_array.sh")).read()
    assert f"#SBATCH --array=0-{len(missing) - 1}" in array and "#SBATCH --gres=gpu:1" in array
    assert sum(1 for line in array.splitlines() if ") nnUNetv2_train" in line) == len(missing)
    assert os.access(os.path.join(crossval_run["emit_dir"], "job_array.sh"), os.X_OK)


# --- report, recomputed independently ------------------------------------------------------------

def _dice(prediction, reference):
    total = prediction.sum() + reference.sum()
    return np.nan if total == 0 else 2 * np.logical_and(prediction, reference).sum() / total


def _surface(mask):
    return mask & ~binary_erosion(mask, border_value=0)  # edge voxels count as surface


def _hd95_brute_force(prediction, reference):
    """95th percentile of all surface-to-surface nearest distances (spacing 1), by explicit pairs."""
    a, b = np.argwhere(_surface(prediction)), np.argwhere(_surface(reference))
    distances = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    return float(np.percentile(np.concatenate([distances.min(1), distances.min(0)]), 95))


def _recompute(env):
    """trainer -> fold -> case -> class key -> (Dice, HD95) from the PNG files."""
    gt_dir = os.path.join(env["nnUNet_preprocessed"], DATASET, "gt_segmentations")
    values = {}
    for trainer in TRAINERS:
        for fold in FOLDS:
            validation = os.path.join(_fold_folder(env, trainer, fold), "validation")
            for name in sorted(f for f in os.listdir(validation) if f.endswith(".png")):
                prediction = np.asarray(Image.open(os.path.join(validation, name)))
                reference = np.asarray(Image.open(os.path.join(gt_dir, name)))
                per_class = {}
                for key in CLASSES:
                    p, r = prediction == int(key), reference == int(key)
                    per_class[key] = (_dice(p, r), _hd95_brute_force(p, r) if p.any() and r.any() else np.nan)
                values.setdefault(trainer, {}).setdefault(fold, {})[name[:-4]] = per_class
    return values


@pytest.fixture(scope="module")
def report(crossval_run):
    env = crossval_run["env"]
    output = str(crossval_run["work"] / "report")
    with pytest.MonkeyPatch.context() as patch:
        _nnunet_paths(patch, env)
        assert main(["report", "-d", str(DATASET_ID), "-tr", *TRAINERS, "--folds", *map(str, FOLDS), "-o", output]) == 0
    return {"output": output, "json": json.load(open(os.path.join(output, "report.json"))),
            "recomputed": _recompute(env), "env": env}


def test_report_dice_and_hd95_equal_an_independent_recomputation(report):
    data, values = report["json"], report["recomputed"]
    for trainer in TRAINERS:
        fold_class_means = {key: [] for key in CLASSES}
        fold_means = []
        for fold in FOLDS:
            cases = values[trainer][fold]
            class_means = {key: np.nanmean([c[key][0] for c in cases.values()]) for key in CLASSES}
            for key in CLASSES:
                fold_class_means[key].append(class_means[key])
            fold_means.append(np.nanmean(list(class_means.values())))
        for key in CLASSES:
            stats = data["summary"][trainer][key]["Dice"]
            assert stats["mean"] == pytest.approx(np.nanmean(fold_class_means[key]), abs=1e-12)
            assert stats["sd"] == pytest.approx(np.nanstd(fold_class_means[key], ddof=1), abs=1e-12)
            assert stats["n_folds"] == len(FOLDS)
        assert data["summary"][trainer]["mean"]["Dice"]["mean"] == pytest.approx(np.mean(fold_means), abs=1e-12)
        assert data["summary"][trainer]["mean"]["Dice"]["sd"] == pytest.approx(np.std(fold_means, ddof=1), abs=1e-12)

    rows = list(csv.DictReader(open(os.path.join(report["output"], "cv_per_case.csv"))))
    assert len(rows) == len(TRAINERS) * 2 * len(FOLDS) * len(CLASSES)  # each fold's 2 validation cases, once each
    for row in rows:
        dice, hd95 = values[row["trainer"]][int(row["fold"])][row["case"]][row["class_key"]]
        assert (float(row["Dice"]) if row["Dice"] else np.nan) == pytest.approx(dice, abs=1e-12, nan_ok=True)
        assert (float(row["HD95_mm"]) if row["HD95_mm"] else np.nan) == pytest.approx(hd95, abs=1e-9, nan_ok=True)

    # and nnU-Net's own per-case Dice of each fold (its validation/summary.json) agrees too
    for trainer in TRAINERS:
        for fold in FOLDS:
            nnunet = json.load(open(os.path.join(_fold_folder(report["env"], trainer, fold), "validation",
                                                 "summary.json")))
            for case in nnunet["metric_per_case"]:
                name = os.path.basename(case["prediction_file"])[:-4]
                for key in CLASSES:
                    ours = values[trainer][fold][name][key][0]
                    assert case["metrics"][key]["Dice"] == pytest.approx(ours, abs=1e-9, nan_ok=True)


def test_report_wilcoxon_equals_scipy_on_independent_pairs(report):
    values = report["recomputed"]

    def per_case_mean(trainer):
        return {case: np.nanmean([c[k][0] for k in CLASSES]) for fold in FOLDS
                for case, c in values[trainer][fold].items()}

    reference, other = per_case_mean(TRAINERS[0]), per_case_mean(TRAINERS[1])
    cases = sorted(c for c in reference if np.isfinite(reference[c]) and np.isfinite(other[c]))
    expected = wilcoxon([other[c] for c in cases], [reference[c] for c in cases], zero_method="wilcox")
    data = report["json"]
    assert data["reference"] == "nnUNetTrainer_debug"
    row = next(r for r in data["comparison"] if r["trainer"] == TRAINERS[1] and r["class_key"] == "mean")
    assert row["n_cases"] == len(cases) == 2 * len(FOLDS)  # 10 cases, 2 validation cases per fold
    assert row["p_value"] == pytest.approx(expected.pvalue, rel=1e-9)
    assert row["statistic"] == pytest.approx(expected.statistic, rel=1e-9)
    assert {r["class_key"] for r in data["comparison"]} == {"mean", "1", "2"}


def test_report_files_parameter_counts_and_box_plots(report):
    output, data = report["output"], report["json"]
    for name in ("report.md", "cv_summary.csv", "cv_per_case.csv", "cv_comparison.csv"):
        assert os.path.getsize(os.path.join(output, name)) > 0, name
    for key, name in CLASSES.items():
        with open(os.path.join(output, f"boxplot_{key}_{name}.png"), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    nnunet, segdino = data["models"]["nnUNetTrainer_debug"], data["models"]["nnUNetTrainerSegDINO_debug"]
    assert nnunet["trainable_params"] == nnunet["total_params"] > 0  # nothing frozen in nnU-Net's U-Net
    assert 0 < segdino["trainable_params"] < segdino["total_params"]  # frozen DINO backbone
    markdown = open(os.path.join(output, "report.md")).read()
    assert f"{segdino['trainable_params']:,}" in markdown and "Wilcoxon" in markdown and "± " in markdown
    dice = data["summary"][TRAINERS[1]]["1"]["Dice"]  # a computed cell, and the comparison section, not fixed text
    assert f"{dice['mean']:.3f} ± {dice['sd']:.3f}" in markdown
    assert f"## Paired comparison against `{TRAINERS[0]}`" in markdown
    folds = ", ".join(map(str, FOLDS))
    assert any(f"`nnUNetTrainerSegDINO_debug` fold(s) {folds} were trained on a RANDOM frozen backbone" in note
               for note in data["notes"])  # read from each fold's own weights record
    assert not any("nnUNetTrainer_debug`" in note for note in data["notes"])
    summary = list(csv.DictReader(open(os.path.join(output, "cv_summary.csv"))))
    row = next(r for r in summary if r["trainer"] == TRAINERS[1] and r["class_key"] == "1" and r["metric"] == "Dice")
    assert float(row["mean_over_folds"]) == pytest.approx(data["summary"][TRAINERS[1]]["1"]["Dice"]["mean"])


# --- fast unit checks of the rules -----------------------------------------------------------------

def _checkpoint(path, complete=True):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if complete:
        with zipfile.ZipFile(path, "w") as archive:  # what torch.save writes
            archive.writestr("data.pkl", b"x")
    else:
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 cut short")


def test_fold_plan_rules(tmp_path):
    from nnunet_dino.crossval.folds import fold_command, fold_plan
    folder = str(tmp_path / "fold_0")
    assert fold_plan("T", 0, folder).action == "train"
    _checkpoint(os.path.join(folder, "checkpoint_best.pth"))
    _checkpoint(os.path.join(folder, "checkpoint_latest.pth"), complete=False)
    plan = fold_plan("T", 0, folder)
    assert (plan.action, plan.set_aside) == ("resume", [os.path.join(folder, "checkpoint_latest.pth")])
    assert "continues from checkpoint_best.pth" in plan.reason
    assert fold_command(plan, "42", "2d", "nnUNetPlans", "cuda", npz=True, num_gpus=2)[-4:] == \
        ["--c", "--npz", "-num_gpus", "2"]
    _checkpoint(os.path.join(folder, "checkpoint_final.pth"))
    assert fold_plan("T", 0, folder).action == "validate"  # trained, validation never finished
    os.makedirs(os.path.join(folder, "validation"))
    with open(os.path.join(folder, "validation", "summary.json"), "w") as f:
        f.write("{}")
    assert fold_plan("T", 0, folder).action == "done"
    assert fold_plan("T", 0, folder, want_npz=True).action == "validate"  # --npz asked, none exported


def test_wilcoxon_zero_differences_and_reference_choice():
    from nnunet_dino.crossval.models import choose_reference
    from nnunet_dino.crossval.statistics import paired_wilcoxon
    same = paired_wilcoxon({"a": 0.5, "b": 0.7}, {"a": 0.5, "b": 0.7, "c": 0.1})
    assert (same["p_value"], same["n_cases"], same["n_nonzero"]) == (1.0, 2, 0)
    assert "identical" in same["note"] and "only one" in same["note"]
    x, y = {c: v for c, v in zip("abcdefg", [0.9, 0.8, 0.85, 0.7, 0.6, 0.95, 0.5])}, \
        {c: v for c, v in zip("abcdefg", [0.8, 0.8, 0.80, 0.6, 0.5, 0.90, 0.6])}
    result = paired_wilcoxon(x, y)
    expected = wilcoxon(list(x.values()), list(y.values()), zero_method="wilcox")
    assert result["n_nonzero"] == 6 and result["p_value"] == pytest.approx(expected.pvalue)
    assert choose_reference(["nnUNetTrainerSegDINO", "nnUNetTrainer_250epochs", "nnUNetTrainer"]) == \
        "nnUNetTrainer_250epochs"
    assert choose_reference(["nnUNetTrainerSegDINO", "nnUNetTrainerUDFA"]) == "nnUNetTrainerSegDINO"
    with pytest.raises(ValueError, match="not among"):
        choose_reference(["A", "B"], "C")


# --- the rest of nnU-Net's pipeline on these cross-validated plugin models ------------------------------
# (folds 0-2 with --npz above; find_best_configuration across two plugin trainers and nnUNetTrainer,
# ensembling, post-processing, export to zip, install into a fresh results folder, prediction from it)
def _raw(env):
    return os.path.join(env["nnUNet_raw"], DATASET)


def test_all_folds_validated_with_softmax_exports(crossval_run):
    for trainer in TRAINERS:
        for fold in FOLDS:
            validation = os.path.join(_fold_folder(crossval_run["env"], trainer, fold), "validation")
            assert any(f.endswith(".npz") for f in os.listdir(validation)), (trainer, fold)


def test_best_configuration_ensemble_and_postprocessing(crossval_run, tmp_path):
    env = crossval_run["env"]
    run_step(["nnUNetv2_find_best_configuration", str(DATASET_ID), "-c", "2d", "-tr", *TRAINERS,
              "-f", *[str(f) for f in FOLDS], "-np", "1"], env)
    results = os.path.join(env["nnUNet_results"], DATASET)
    assert os.path.isfile(os.path.join(results, "inference_information.json"))
    ensembles = os.path.join(results, "ensembles")  # pairwise ensembles of the cross-validations
    assert len(os.listdir(ensembles)) == 3 and all(
        os.path.isfile(os.path.join(ensembles, e, "summary.json")) for e in os.listdir(ensembles))
    members = []
    for trainer in TRAINERS[1:]:
        out = str(tmp_path / trainer)
        predict(DATASET_ID, trainer, os.path.join(_raw(env), "imagesTs"), out, env, folds=FOLDS,
                extra=["--save_probabilities"])
        members.append(out)
    ensemble = str(tmp_path / "ensemble")
    run_step(["nnUNetv2_ensemble", "-i", *members, "-o", ensemble, "-np", "1"], env)
    model = os.path.join(results, f"{TRAINERS[1]}__nnUNetPlans__2d")
    best = json.load(open(os.path.join(results, "inference_information.json")))["best_model_or_ensemble"]
    processed = str(tmp_path / "postprocessed")  # with the post-processing find_best_configuration chose
    run_step(["nnUNetv2_apply_postprocessing", "-i", ensemble, "-o", processed, "-pp_pkl_file",
              best["postprocessing_file"], "-np", "1", "-plans_json", best["some_plans_file"],
              "-dataset_json", os.path.join(model, "dataset.json")], env)
    cases = sorted(os.listdir(os.path.join(_raw(env), "labelsTs")))
    for folder in (ensemble, processed):
        assert sorted(f for f in os.listdir(folder) if f.endswith(".png")) == cases


def test_export_install_and_predict_from_a_fresh_results_folder(crossval_run, tmp_path):
    env = crossval_run["env"]
    archive = str(tmp_path / "model.zip")
    run_step(["nnUNetv2_export_model_to_zip", "-d", str(DATASET_ID), "-o", archive, "-c", "2d", "-tr", TRAINERS[1],
              "-f", *[str(f) for f in FOLDS]], env)
    fresh = dict(env, nnUNet_results=str(tmp_path / "fresh_results"))
    os.makedirs(fresh["nnUNet_results"])
    run_step(["nnUNetv2_install_pretrained_model_from_zip", archive], fresh)
    out = str(tmp_path / "predictions")
    predict(DATASET_ID, TRAINERS[1], os.path.join(_raw(env), "imagesTs"), out, fresh, folds=FOLDS)
    assert len([f for f in os.listdir(out) if f.endswith(".png")]) == 2
