"""`nnunet-dino bench` runs end to end on tiny settings and reports self-consistent figures.
No speed goal is asserted here: the benchmark prints them, timed tests would only be flaky."""
import json
import math
import os
import subprocess
import sys

import pytest

from nnunet_dino.bench import GOALS, bench_plans
from nnunet_dino.networks.base import cpu_has_native_bf16

MODEL_FIELDS = ("label", "trainer", "network", "backbone", "optimizer", "loss", "params", "train_step", "checkpoint",
                "inference", "backbone_forward", "prediction", "memory", "checkpoint_vit_b", "ratios")
RATIO_FIELDS = ("step", "prediction", "inference_tiles_per_s", "checkpoint", "memory_train_over_inference",
                "backbone_share", "backbone_gflops_over_matmul", "checkpoint_vit_b_slim_over_full")


def test_baseline_network_is_nnunets_default_2d_plan():
    _, configuration, dataset_json = bench_plans((224, 224), 2, 1, 4)
    arch = configuration.network_arch_init_kwargs
    assert arch["n_stages"] == 6 and list(arch["features_per_stage"]) == [32, 64, 128, 256, 512, 512]  # 224 / 2^5 = 7
    assert list(configuration.patch_size) == [224, 224] and configuration.batch_dice
    assert len(dataset_json["labels"]) == 4


def test_baseline_architecture_equals_nnunets_own_planner(synthetic_2d):
    """bench_plans must give what nnU-Net's ExperimentPlanner planned for a real dataset of that patch."""
    folder = os.path.join(synthetic_2d["env"]["nnUNet_preprocessed"], synthetic_2d["dataset"])
    planned = json.load(open(os.path.join(folder, "nnUNetPlans.json")))["configurations"]["2d"]
    _, configuration, _ = bench_plans(tuple(planned["patch_size"]), planned["batch_size"], 1, 2)
    assert list(configuration.patch_size) == planned["patch_size"]
    ours = configuration.configuration["architecture"]
    assert ours["network_class_name"] == planned["architecture"]["network_class_name"]
    assert json.loads(json.dumps(ours["arch_kwargs"])) == planned["architecture"]["arch_kwargs"]


def _run_bench(out, *args):
    cli = os.path.join(os.path.dirname(sys.executable), "nnunet-dino")
    env = dict(os.environ, OMP_NUM_THREADS="1")  # one thread: no spinning against other jobs
    done = subprocess.run([cli, "bench", "--patch", "64", "64", "--batch", "1", "--repeats", "1", "--warmup", "0",
                           "--device", "cpu", "--threads", "1", "--json", str(out), *args],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads(out.read_text())


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    return _run_bench(tmp_path_factory.mktemp("bench") / "bench.json", "--families", "segdino")


def test_prints_the_table_and_the_goals(bench_run):
    stdout, _ = bench_run
    for text in ("| model", "nnUNetTrainer (PlainConvUNet)", "SegDINO ViT-S/16", "step / nnU", "ckpt slim MB",
                 "goals:", "machine:", "1 threads", "precision: nnUNetTrainer fp32; plugin networks"):
        assert text in stdout
    assert sum(line.strip().startswith(("met", "MISSED")) for line in stdout.splitlines()) == 5  # SegDINO's goals


def test_udfa_and_dino_unet_paths_run_with_sane_figures(tmp_path):
    """U-DFA's stage-wise backbone timing and Dino U-Net's extractor path (the SegDINO run covers the rest)."""
    _, results = _run_bench(tmp_path / "bench.json", "--families", "udfa", "dinounet", "--no-vit-b")
    for key in ("udfa", "dinounet"):
        m = results["models"][key]
        assert m["train_step"]["median_s"] > 0 and m["prediction"]["tiles"] == 9
        assert m["backbone_forward"]["gflop"] > 0 and 0 < m["ratios"]["backbone_share"]
        assert 0 < m["checkpoint"]["slim_bytes"] < m["checkpoint"]["full_bytes"]
        assert m["memory"]["train"]["delta_bytes"] > m["memory"]["inference"]["delta_bytes"] > 0
        assert m["checkpoint_vit_b"] is None and m["ratios"]["checkpoint_vit_b_slim_over_full"] is None
    assert results["models"]["udfa"]["backbone"] == "dinov2_vits14"
    assert results["models"]["dinounet"]["optimizer"] == "SGD"


def test_json_has_every_figure_with_sane_values(bench_run):
    _, results = bench_run
    assert {"cpu", "cores", "torch", "threads"} <= set(results["machine"]) and results["machine"]["threads"] == 1
    # cpu_precision auto: the plugin networks (and the matmul ceiling they are compared with) in bf16 where native
    assert results["settings"]["cpu_precision"] == "auto"
    assert results["matmul"]["dtype"] == ("bfloat16" if cpu_has_native_bf16() else "float32")
    models = results["models"]
    assert set(models) == {"nnunet", "segdino"}
    for key, m in models.items():
        assert set(MODEL_FIELDS) <= set(m) and set(RATIO_FIELDS) <= set(m["ratios"])
        assert 0 < m["params"]["trainable"] <= m["params"]["total"]
        assert m["train_step"]["median_s"] > 0 and all(t > 0 for t in m["train_step"]["times_s"])
        assert m["inference"]["batch"] == 1 and m["inference"]["median_s"] > 0
        assert math.isclose(m["inference"]["tiles_per_s"], 1 / m["inference"]["median_s"])
        assert m["prediction"]["median_s"] > 0 and m["prediction"]["tiles"] == 9  # 128^2 case, 64^2 tiles, step 0.5
        assert m["prediction"]["forwards"] == 36                                   # mirrored along both axes
        for phase in ("train", "inference"):
            assert m["memory"][phase]["delta_bytes"] > 0
            # lazily imported modules (timm: ~40 MB) must not count as the network's memory
            assert {"timm", "nnunetv2", "batchgeneratorsv2"} <= set(m["memory"][phase]["imported_before_baseline"])
        assert m["checkpoint"]["full_bytes"] > 0
    base, seg = models["nnunet"], models["segdino"]
    assert base["params"]["trainable"] == base["params"]["total"] and base["backbone_forward"] is None
    assert seg["params"]["trainable"] < seg["params"]["total"] / 5          # the frozen ViT-S dominates
    assert seg["optimizer"] == "AdamW" and base["optimizer"] == "SGD"
    assert base["loss"] == "DeepSupervisionWrapper" and seg["loss"] == "DC_and_CE_loss"

    ck, vit_b = seg["checkpoint"], seg["checkpoint_vit_b"]
    assert 0 < ck["slim_bytes"] < ck["full_bytes"] and 0 < vit_b["slim_bytes"] < vit_b["full_bytes"]
    assert vit_b["backbone"] == "dinov3_vitb16" and vit_b["full_bytes"] > 300 * 1024 ** 2  # ViT-B: ~344 MB frozen

    bb = seg["backbone_forward"]
    assert bb["median_s"] > 0 and bb["gflop"] > 0 and bb["matmul_gflops"] > 0

    # every ratio is computed from the JSON's own numbers
    r = seg["ratios"]
    assert math.isclose(r["step"], seg["train_step"]["median_s"] / base["train_step"]["median_s"])
    assert math.isclose(r["prediction"], seg["prediction"]["median_s"] / base["prediction"]["median_s"])
    assert math.isclose(r["checkpoint"], ck["slim_bytes"] / base["checkpoint"]["full_bytes"])
    assert math.isclose(r["memory_train_over_inference"],
                        seg["memory"]["train"]["delta_bytes"] / seg["memory"]["inference"]["delta_bytes"])
    assert math.isclose(r["backbone_share"], bb["median_s"] / seg["train_step"]["median_s"])
    assert math.isclose(bb["gflops"], bb["gflop"] / bb["median_s"])
    assert math.isclose(r["backbone_gflops_over_matmul"], bb["gflops"] / bb["matmul_gflops"])
    assert math.isclose(r["checkpoint_vit_b_slim_over_full"], vit_b["slim_bytes"] / vit_b["full_bytes"])
    assert math.isclose(base["ratios"]["step"], 1.0) and math.isclose(base["ratios"]["prediction"], 1.0)

    goals = {(g["figure"], g["family"]): g for g in results["goals"]}
    assert len(goals) == 5
    for figure, ratio, targets, op in GOALS:
        goal = goals[(figure, "segdino")] if "segdino" in targets else None
        if goal is None:
            continue
        assert math.isclose(goal["value"], r[ratio])
        assert goal["met"] == (r[ratio] <= targets["segdino"] if op == "<=" else r[ratio] >= targets["segdino"])
