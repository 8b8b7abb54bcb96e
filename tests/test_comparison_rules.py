"""The comparison's rules on fixed inputs, each against an independent recomputation: model
specifications, the paired bootstrap interval, Holm's correction, the verdicts, the train-fraction
splits (nested, seeded, validation unchanged, full-data folds untouched), nnU-Net's logged times and
the self-contained HTML."""
import json

import numpy as np
import pytest
from scipy.stats import bootstrap, wilcoxon

from nnunet_dino.crossval.fractions import RECORD_FILE, fraction_folds, training_subset
from nnunet_dino.crossval.models import ModelSpec, choose_reference, parse_model, parse_models
from nnunet_dino.crossval.report_html import markdown_to_html
from nnunet_dino.crossval.statistics import (BETTER, NO_DIFFERENCE, WORSE, bootstrap_interval, compare_to_reference,
                                             holm, paired_comparison)
from nnunet_dino.errors import MissingInputError, OptionError
from nnunet_dino.nnunet.logs import epoch_times, validation_seconds_per_case


def test_model_specifications_and_reference():
    assert parse_model("nnUNetTrainer:3d_fullres:nnUNetResEncUNetMPlans") == \
        ModelSpec("nnUNetTrainer", "3d_fullres", "nnUNetResEncUNetMPlans")
    assert parse_model("nnUNetTrainerUDFA:2.5d") == ModelSpec("nnUNetTrainerUDFA", "2.5d", "nnUNetPlans")
    assert parse_model("nnUNetTrainerUDFA", "3d_fullres", "P") == ModelSpec("nnUNetTrainerUDFA", "3d_fullres", "P")
    assert parse_model("T:2d").label == "T" and parse_model("T:3d_fullres").label == "T:3d_fullres"
    assert parse_model("T:2d:P").label == "T:2d:P" and parse_model("T:3d_fullres:P").file_stem == "T__3d_fullres__P"
    for bad in ("T::P", "T:2d:P:x", ":2d", "T:a b", "T:2d:my__plans"):
        with pytest.raises(OptionError):
            parse_model(bad)
    with pytest.raises(OptionError, match="named twice"):
        parse_models(["T", "T:2d"])
    labels = [m.label for m in parse_models(["nnUNetTrainerSegDINO", "nnUNetTrainer:3d_fullres", "nnUNetTrainer"])]
    assert choose_reference(labels) == "nnUNetTrainer:3d_fullres"  # the first of nnU-Net's own
    assert choose_reference(labels, "nnUNetTrainer:2d") == "nnUNetTrainer"
    assert choose_reference(labels, "nnUNetTrainerSegDINO") == "nnUNetTrainerSegDINO"
    with pytest.raises(OptionError, match="full TRAINER:CONFIGURATION"):
        choose_reference(["nnUNetTrainerSegDINO:3d_fullres", "nnUNetTrainerSegDINO:2d:P"], "nnUNetTrainerSegDINO")


def _pairs(seed=1, n=25, shift=0.0):
    rng = np.random.default_rng(seed)
    reference = rng.uniform(0.4, 0.8, n)
    return reference + shift + rng.normal(0, 0.05, n), reference


def test_paired_bootstrap_interval_equals_scipy_and_a_plain_loop():
    x, y = _pairs()
    low, high = bootstrap_interval(x - y, n_resamples=2000, seed=7)
    scipy_ci = bootstrap((x - y,), np.mean, n_resamples=2000, method="percentile", confidence_level=0.95,
                         random_state=np.random.default_rng(7)).confidence_interval
    assert (low, high) == pytest.approx((scipy_ci.low, scipy_ci.high), abs=1e-12)
    # the same resamples drawn as a (2000, n) matrix, averaged one by one, sorted, linear percentile by hand
    draws = np.random.default_rng(7).integers(0, len(x), (2000, len(x)))
    means = sorted(sum(x[i] - y[i] for i in row) / len(row) for row in draws)

    def percentile(q):
        position = q / 100 * (len(means) - 1)
        below = int(np.floor(position))
        return means[below] + (position - below) * (means[min(below + 1, len(means) - 1)] - means[below])
    assert (low, high) == pytest.approx((percentile(2.5), percentile(97.5)), abs=1e-12)
    result = paired_comparison(dict(enumerate(x)), dict(enumerate(y)), n_resamples=2000, seed=7)
    assert (result["ci_low"], result["ci_high"]) == (low, high) and result["n_resamples"] == 2000
    assert result["p_value"] == pytest.approx(wilcoxon(x, y, zero_method="wilcox").pvalue, rel=1e-12)


def test_holm_equals_the_step_down_definition():
    p = [0.01, 0.04, 0.03, float("nan"), 0.005, 0.5, 0.04]
    finite = [(v, i) for i, v in enumerate(p) if v == v]
    m, expected, running = len(finite), [float("nan")] * len(p), 0.0
    for rank, (value, index) in enumerate(sorted(finite)):  # p_(1) <= ... <= p_(m)
        running = max(running, min(1.0, (m - rank) * value))
        expected[index] = running
    assert holm(p) == pytest.approx(expected, nan_ok=True)
    assert holm([0.01, 0.04, 0.03, 0.005, 0.5, 0.04]) == pytest.approx([0.05, 0.12, 0.12, 0.03, 0.5, 0.12])


def _rows(values, metric_offsets):
    return [{"fold": 0, "case": f"c{i}", "class_key": "1", "Dice": v, "HD95": 10 * (1 - v) + metric_offsets,
             "ASD": 3 * (1 - v)} for i, v in enumerate(values)]


def test_verdicts_better_worse_and_no_detectable_difference():
    x, y = _pairs(shift=0.15)
    per_case = {"ref": _rows(y, 0.0), "good": _rows(x, 0.0), "same": _rows(y, 0.0), "bad": _rows(2 * y - x, 0.0)}
    rows = compare_to_reference(per_case, "ref", ["1"], n_resamples=1000, seed=0)
    verdicts = {(r["trainer"], r["metric"], r["class_key"]): r["verdict"] for r in rows}
    assert verdicts[("good", "Dice", "mean")] == verdicts[("good", "HD95", "1")] == BETTER  # lower HD95 is better
    assert verdicts[("bad", "Dice", "1")] == verdicts[("bad", "ASD", "mean")] == WORSE
    assert {v for (model, _, _), v in verdicts.items() if model == "same"} == {NO_DIFFERENCE}
    assert [r["metric"] for r in rows][:6] == ["Dice"] * 6  # Dice rows first
    assert [r["p_holm"] for r in rows] == pytest.approx(holm([r["p_value"] for r in rows]), nan_ok=True)
    assert len(rows) == 3 * 3 * 2  # models x metrics x (mean, class 1)


def _preprocessed(tmp_path, monkeypatch, cases=10):
    root = tmp_path / "preprocessed"
    folder = root / "Dataset501_Frac"
    (folder / "gt_segmentations").mkdir(parents=True)
    for i in range(cases):
        (folder / "gt_segmentations" / f"case_{i:03d}.nii.gz").write_bytes(b"")
    (folder / "dataset.json").write_text(json.dumps({"file_ending": ".nii.gz", "numTraining": cases}))
    monkeypatch.setenv("nnUNet_preprocessed", str(root))
    return folder


def test_train_fraction_splits(tmp_path, monkeypatch):
    from nnunetv2.utilities.crossval_split import generate_crossval_split
    from nnunet_dino.crossval.folds import available_folds
    folder = _preprocessed(tmp_path, monkeypatch)
    name = folder.name
    assert fraction_folds(name, [0, 1], [0.5, 1.0]) == {(0, 1.0): 0, (1, 1.0): 1}  # reading creates nothing
    assert not (folder / "splits_final.json").exists()
    runs = fraction_folds(name, [0, 1], [0.25, 0.5, 1.0], seed=3, create=True)
    splits = json.loads((folder / "splits_final.json").read_text())
    nnunet = generate_crossval_split([f"case_{i:03d}" for i in range(10)], seed=12345, n_splits=5)
    assert splits[:5] == [{"train": list(s["train"]), "val": list(s["val"])} for s in nnunet]  # nnU-Net's own split
    assert runs == {(0, 1.0): 0, (1, 1.0): 1, (0, 0.25): 5, (0, 0.5): 6, (1, 0.25): 7, (1, 0.5): 8}
    for (fold, fraction), index in runs.items():
        assert splits[index]["val"] == splits[fold]["val"]
        assert set(splits[index]["train"]) <= set(splits[fold]["train"])
        assert len(splits[index]["train"]) == {1.0: 8, 0.5: 4, 0.25: 2}[fraction]
    assert set(splits[5]["train"]) <= set(splits[6]["train"])  # nested
    assert splits[6]["train"] == training_subset(splits[0]["train"], 0.5, 3, 0)
    assert available_folds(name)[0] == 5  # the added entries are not folds of the dataset
    before = (folder / "splits_final.json").read_text()
    assert fraction_folds(name, [0, 1], [0.25, 0.5, 1.0], seed=3, create=True) == runs  # idempotent
    assert (folder / "splits_final.json").read_text() == before
    assert fraction_folds(name, [0], [0.5], seed=4, create=True)[(0, 0.5)] == 9  # another seed, another entry
    # a run killed between the record and the splits: the next call appends what the record lists
    (folder / "splits_final.json").write_text(json.dumps(json.loads(before)))
    assert fraction_folds(name, [0], [0.5], seed=4, create=True)[(0, 0.5)] == 9
    assert len(json.loads((folder / "splits_final.json").read_text())) == 10
    changed = json.loads((folder / "splits_final.json").read_text())
    changed[6]["train"] = changed[6]["train"][:1]
    (folder / "splits_final.json").write_text(json.dumps(changed))
    with pytest.raises(OptionError, match="entry 6 is not the training subset"):
        fraction_folds(name, [0], [0.5], seed=3)
    assert json.loads((folder / RECORD_FILE).read_text())["base_folds"] == 5
    with pytest.raises(OptionError, match="in \\(0, 1\\]"):
        fraction_folds(name, [0], [0.0, 1.0])
    with pytest.raises(OptionError, match="numbered folds"):
        fraction_folds(name, ["all"], [0.5])


LOG = """
2026-01-01 10:00:00.000000: Epoch 0
2026-01-01 10:00:10.000000: Epoch time: 10.5 s
2026-01-01 10:00:20.000000: Epoch time: 9.5 s
2026-01-01 10:01:00.000000: predicting case_001
2026-01-01 10:01:03.000000: predicting case_002
2026-01-01 10:01:04.500000: predicting case_003
2026-01-01 10:01:06.000000: Validation complete
"""


def test_times_from_nnunet_logs(tmp_path):
    (tmp_path / "training_log_2026_1_1_10_00_00.txt").write_text(LOG)
    assert epoch_times(str(tmp_path)) == [10.5, 9.5]
    assert validation_seconds_per_case(str(tmp_path)) == pytest.approx(2.0)
    assert validation_seconds_per_case(str(tmp_path / "nothing")) is None


def test_html_embeds_figures_and_renders_tables(tmp_path):
    from PIL import Image
    Image.new("RGB", (4, 3), "red").save(tmp_path / "fig.png")
    page = markdown_to_html("# Title `x<y`\n\n| a | b |\n|---|---|\n| **1** | *2* |\n\n![fig](fig.png)\n\n"
                            "- item one\n  continued\n- two\n\nplain *text*", str(tmp_path))
    assert "<h1>Title <code>x&lt;y</code></h1>" in page
    assert "<th>a</th><th>b</th>" in page and "<td><strong>1</strong></td><td><em>2</em></td>" in page
    assert 'src="data:image/png;base64,iVBORw0KGgo' in page
    assert "<li>item one continued</li>" in page and "<p>plain <em>text</em></p>" in page
    with pytest.raises(MissingInputError, match="missing"):
        markdown_to_html("![gone](gone.png)", str(tmp_path))
