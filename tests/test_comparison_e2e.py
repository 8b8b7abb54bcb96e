"""End to end on a tiny synthetic 3D dataset through nnU-Net's own commands: nnU-Net's trainer in
`3d_fullres` and a plugin trainer in `2d` (scored in 3D against the same references), the plugin one
also at half of each fold's training cases (the full-data folds, finished, are skipped), `--emit` of a
fraction run, one report with every section, a case missing from one model refused with its name, and the
HTML report opened in a real headless browser (Chromium)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from nnunet_dino.cli import main
from nnunet_dino.datasets.synthetic import make_synthetic_3d
from nnunet_dino.nnunet import nnunet_environment, plan_and_preprocess
from nnunet_helpers import clean_environment

DATASET_ID = 994
DATASET = "Dataset994_Synth3D"
MODELS = ("nnUNetTrainer_debug:3d_fullres", "nnUNetTrainerSegDINO_debug")
FOLDERS = {MODELS[0]: "nnUNetTrainer_debug__nnUNetPlans__3d_fullres",
           MODELS[1]: "nnUNetTrainerSegDINO_debug__nnUNetPlans__2d"}
FOLDS = ("0", "1")
CASES = [f"case_{i:03d}" for i in range(8)]
SECTIONS = ("## Summary", "## Per class, mean ± sd over folds", "### Dice", "### HD95 mm", "### ASD mm",
            "## Paired comparison against `nnUNetTrainer_debug:3d_fullres`", "## Box plots",
            "## Label efficiency (learning curves)", "## Models", "## Notes", "## How the numbers are made")


def _fold(env, model, fold):
    return os.path.join(env["nnUNet_results"], DATASET, FOLDERS[model], f"fold_{fold}")


def _done(env):
    return {(m, f) for m in MODELS for f in FOLDS
            if os.path.isfile(os.path.join(_fold(env, m, f), "validation", "summary.json"))}


def _cli(*args):
    return [sys.executable, "-m", "nnunet_dino.cli", *args]


def _paths(patch, env):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_dino_weights"):
        patch.setenv(var, env[var])


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    work = tmp_path_factory.mktemp("comparison")
    env = nnunet_environment(str(work), clean_environment(nnUNet_dino_weights="random", nnUNet_def_n_proc="1"))
    make_synthetic_3d(env["nnUNet_raw"], DATASET_ID, num_train=len(CASES), num_test=1, shape=(5, 40, 48))
    plan_and_preprocess(DATASET_ID, env, configurations=("2d", "3d_fullres"))
    splits = [{"train": CASES[1::2], "val": CASES[0::2]}, {"train": CASES[0::2], "val": CASES[1::2]}]
    with open(os.path.join(env["nnUNet_preprocessed"], DATASET, "splits_final.json"), "w") as f:
        json.dump(splits, f)
    env["nnUNet_n_proc_DA"] = "0"
    crossval = _cli("crossval", "-d", str(DATASET_ID), "-tr", *MODELS, "--folds", *FOLDS, "--device", "cpu")

    # crossval killed and resumed is tested once, in test_crossval_report.py
    trained = subprocess.run(crossval, env=env, capture_output=True, text=True)
    assert trained.returncode == 0, trained.stdout[-4000:] + trained.stderr[-4000:]
    finished = _done(env)
    mtimes = {key: os.path.getmtime(os.path.join(_fold(env, *key), "checkpoint_final.pth")) for key in finished}
    fractions = subprocess.run(_cli("crossval", "-d", str(DATASET_ID), "-tr", MODELS[1], "--folds", *FOLDS,
                                    "--device", "cpu", "--train-fractions", "0.5", "1.0"),
                               env=env, capture_output=True, text=True)
    assert fractions.returncode == 0, fractions.stdout[-4000:] + fractions.stderr[-4000:]
    output, emitted = str(work / "report"), str(work / "emit")
    with pytest.MonkeyPatch.context() as patch:
        _paths(patch, env)
        assert main(["crossval", "-d", str(DATASET_ID), "-tr", MODELS[0], "--folds", *FOLDS, "--train-fractions",
                     "0.5", "--emit", emitted]) == 0
        assert main(["report", "-d", str(DATASET_ID), "-tr", *MODELS, "--folds", *FOLDS, "--train-fractions", "0.5",
                     "1.0", "--resamples", "1000", "-o", output]) == 0
    return {"env": env, "work": work, "finished": finished, "mtimes": mtimes,
            "fractions": fractions.stdout, "output": output, "emit": emitted,
            "json": json.load(open(os.path.join(output, "report.json"))),
            "markdown": open(os.path.join(output, "report.md")).read()}


def test_fraction_runs_leave_the_finished_full_data_runs_alone(comparison):
    env, fractions = comparison["env"], comparison["fractions"]
    assert comparison["finished"] == {(m, f) for m in MODELS for f in FOLDS}
    for model, fold in comparison["finished"]:
        final = os.path.join(_fold(env, model, fold), "checkpoint_final.pth")
        assert os.path.getmtime(final) == comparison["mtimes"][(model, fold)], f"{model} fold {fold} was re-run"
    splits = json.load(open(os.path.join(env["nnUNet_preprocessed"], DATASET, "splits_final.json")))
    for fold in FOLDS:  # the full-data runs are skipped; the half-data ones are folds 2, 3 of the same folder
        assert f"{MODELS[1]} fold {fold}: done, skipped" in fractions
        entry = 2 + int(fold)
        assert f"{MODELS[1]} fold {fold} at 0.5 of its training cases (nnU-Net fold {entry})" in fractions
        assert splits[entry]["val"] == splits[int(fold)]["val"] and len(splits[entry]["train"]) == 2
        assert set(splits[entry]["train"]) <= set(splits[int(fold)]["train"])
        log = "".join(open(os.path.join(_fold(env, MODELS[1], entry), f)).read()
                      for f in os.listdir(_fold(env, MODELS[1], entry)) if f.startswith("training_log"))
        assert "This split has 2 training and 4 validation cases." in log
    array = open(os.path.join(comparison["emit"], "job_array.sh")).read()  # the same subsets for nnU-Net's model
    assert f"nnUNetv2_train {DATASET_ID} 3d_fullres 2 -tr nnUNetTrainer_debug -p nnUNetPlans" in array
    assert f"nnUNetv2_train {DATASET_ID} 3d_fullres 3 -tr nnUNetTrainer_debug -p nnUNetPlans" in array
    assert "#SBATCH --array=0-1" in array


def test_one_report_with_every_section(comparison):
    text, data, output = comparison["markdown"], comparison["json"], comparison["output"]
    positions = [text.index(heading) for heading in SECTIONS]
    assert positions == sorted(positions), "sections out of order"
    summary = text[text.index("## Summary"):text.index("## Per class")]
    assert summary.count("\n") < 40 and "RANDOM frozen backbone" in summary  # one screen
    assert any(v in summary for v in ("better", "worse", "no detectable difference at 95 %"))
    assert data["reference"] == MODELS[0] and data["trainers"] == list(MODELS)
    rows = data["comparison"]
    assert {(r["metric"], r["class_key"]) for r in rows} == {(m, k) for m in ("Dice", "HD95", "ASD")
                                                             for k in ("mean", "1", "2")}
    for row in rows:
        assert row["n_cases"] <= 8 and row["n_resamples"] == 1000
        assert row["n_cases"] == 8 or row["metric"] != "Dice"
        assert row["p_value"] is None or row["p_holm"] >= row["p_value"]
    # 2d predictions of 3D volumes are scored in 3D, like the 3d_fullres ones
    for stem in ("nnUNetTrainer_debug__3d_fullres", MODELS[1]):
        evaluated = json.load(open(os.path.join(output, "evaluation", stem, "fold_0", "metrics_summary.json")))
        assert {len(case["spacing"]) for case in evaluated["metric_per_case"]} == {3}
    curves = [r for r in data["learning_curves"] if r["class_key"] == "mean" and r["metric"] == "Dice"]
    assert [(r["trainer"], r["fraction"], r["n_train"]) for r in curves] == \
        [(MODELS[0], 1.0, 4.0), (MODELS[1], 0.5, 2.0), (MODELS[1], 1.0, 4.0)]  # nnU-Net's: the full-data point
    assert all(r["ci_low"] <= r["case_mean"] <= r["ci_high"] and r["n_cases"] == 8 for r in curves)
    assert any(f"`{MODELS[0]}` has no runs at train fraction(s) 0.5" in note for note in data["notes"])
    nnunet, segdino = data["models"][MODELS[0]], data["models"][MODELS[1]]
    assert nnunet["adaptation"] is None and segdino["adaptation"] == "frozen"
    assert 0 < segdino["trainable_params"] < segdino["total_params"]
    for facts in (nnunet, segdino):
        assert facts["epoch_seconds"] > 0 and facts["epochs_timed"] >= 4 and facts["predict_seconds_per_case"] > 0
    assert f"| `{MODELS[1]}` | nnUNetTrainerSegDINO_debug | 2d | nnUNetPlans | {segdino['trainable_params']:,} |" in text
    figures = [f for f in os.listdir(output) if f.endswith(".png")]
    assert sorted(figures) == ["boxplot_1_disk.png", "boxplot_2_square.png", "learning_curves.png"]
    for name in ("cv_summary.csv", "cv_per_case.csv", "cv_comparison.csv", "cv_learning_curves.csv"):
        assert os.path.getsize(os.path.join(output, name)) > 0
    page = open(os.path.join(output, "report.html")).read()
    assert page.count('src="data:image/png;base64,') == len(figures) and "<script" not in page


def test_a_case_missing_from_one_model_is_refused_with_its_name(comparison, tmp_path, capsys):
    validation = os.path.join(_fold(comparison["env"], MODELS[1], "0"), "validation")
    moved = str(tmp_path / "case_002.nii.gz")
    shutil.move(os.path.join(validation, "case_002.nii.gz"), moved)
    try:
        with pytest.MonkeyPatch.context() as patch:
            _paths(patch, comparison["env"])
            code = main(["report", "-d", str(DATASET_ID), "-tr", *MODELS, "--folds", *FOLDS, "--resamples", "100",
                         "-o", str(tmp_path / "refused")])
    finally:
        shutil.move(moved, os.path.join(validation, "case_002.nii.gz"))
    err = capsys.readouterr().err
    assert code == 2 and "case_002 (fold 0): validated by nnUNetTrainer_debug:3d_fullres; missing from " \
        "nnUNetTrainerSegDINO_debug" in err, err
    assert not os.path.exists(tmp_path / "refused")  # refused before anything was scored or written


PROBE = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var shown = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images-loaded", shown + "/" + images.length);
});
</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.fail("Chromium is needed to open report.html in a real browser: run `make browser` "
                "(Debian: apt-get install chromium)")


def test_html_report_opens_in_headless_chromium(comparison, tmp_path):
    page = os.path.join(comparison["output"], "report.html")
    text = open(page).read()
    images = text.count('src="data:image/png;base64,')
    probe = tmp_path / "probe.html"  # the report plus a script that counts the figures the browser decoded
    probe.write_text(text.replace("</body>", PROBE + "\n</body>"))
    browser = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run(browser + ["--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=180)
    assert f'data-images-loaded="{images}/{images}"' in dom.stdout, dom.stderr[-3000:]
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    shot = tmp_path / "report.png"
    run = subprocess.run(browser + ["--window-size=1280,1600", f"--screenshot={shot}", f"file://{page}"],
                         capture_output=True, text=True, timeout=180)
    assert shot.is_file(), run.stderr[-3000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (1600, 1280)
    assert pixels.std() > 10 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # text, tables, figures
