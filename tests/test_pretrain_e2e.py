"""`nnunet-dino pretrain` end to end: a tiny ViT pretrained on synthetic scans through the command line,
resumed after an interruption to the very same weights, its record and refusals; and a full-size
backbone file from it trains and predicts in a plugin `_debug` trainer, whose cross-validation report
flags the pretraining cases as leakage."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from dino_weights_helpers import tiny_spec
from nnunet_dino.backbones import FrozenDinoBackbone, load_backbone_weights, locate_weights, registry
from nnunet_dino.cli import main
from nnunet_dino.datasets.synthetic import make_synthetic_2d
from nnunet_dino.nnunet import nnunet_environment, predict, train
from nnunet_dino.pretrain.loop import PretrainRun
from nnunet_helpers import clean_environment, free_port, results_folder

pytestmark = pytest.mark.usefixtures("one_thread")
TINY_RECIPE = ["--batch-size", "8", "--global-size", "64", "--local-size", "32", "--local-crops", "2",
               "--prototypes", "64", "--head-hidden", "64", "--head-bottleneck", "32", "--no-progress"]


@pytest.fixture
def tiny(monkeypatch):
    """A tiny DINOv3 row registered for one test (the command names backbones by registry name)."""
    spec = tiny_spec("dinov3_vits16")
    monkeypatch.setitem(registry._REGISTRY, spec.name, spec)
    return spec


@pytest.fixture
def raw_dataset(monkeypatch, tmp_path):
    env = nnunet_environment(str(tmp_path / "nnunet"), clean_environment())
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, env[var])
    return make_synthetic_2d(env["nnUNet_raw"], 990, num_train=6, num_test=0)


def _tensors(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_pretrain_resumes_an_interrupted_run_to_the_same_weights_and_records_it(tiny, raw_dataset, tmp_path,
                                                                              monkeypatch, capsys):
    args = ["pretrain", "-d", "990", "--backbone", tiny.name, "--init", "random", "--steps", "12",
            "--save-every", "4", *TINY_RECIPE]
    assert main(args + ["-o", str(tmp_path / "straight.pth")]) == 0

    step = PretrainRun.train_step
    def killed_after_six(run):  # the process dies in step 7: the last save was after step 4
        if run.step == 6:
            raise KeyboardInterrupt
        return step(run)
    monkeypatch.setattr(PretrainRun, "train_step", killed_after_six)
    out = tmp_path / "resumed.pth"
    assert main(args + ["-o", str(out)]) == 130
    assert not out.exists() and torch.load(tmp_path / "resumed.pretrain_state.pth", weights_only=True)["step"] == 4
    monkeypatch.setattr(PretrainRun, "train_step", step)
    assert main(args + ["-o", str(out)]) == 0
    straight, resumed = _tensors(tmp_path / "straight.pth"), _tensors(out)
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)

    record = json.loads((tmp_path / "resumed.pretrain.json").read_text())
    assert record["data"][0]["group"] == "Dataset990_Synth2D"
    assert record["data"][0]["cases"] == [f"case_{i:03d}" for i in range(6)]
    assert record["steps"] == 12 and record["starting_weights"]["source"] == "random"
    assert set(record["final_losses"]) == {"loss", "dino", "ibot", "koleo", "gram"}
    assert all(np.isfinite(v) for v in record["final_losses"].values())
    assert (tmp_path / "resumed.losses.png").read_bytes()[:4] == b"\x89PNG"

    monkeypatch.setenv("nnUNet_dino_weights", str(out))  # the file loads as users point to it
    info = load_backbone_weights(FrozenDinoBackbone(tiny), locate_weights(tiny))
    assert info["format"] == "meta" and info["sha256"] == record["weights_sha256"]
    capsys.readouterr()
    assert main(["weights", "verify", str(out), "--backbone", tiny.name]) == 0
    assert "OK:" in capsys.readouterr().out

    assert main(args + ["-o", str(out), "--lr", "1e-3"]) == 2  # another recipe: refused, not mixed
    assert "--restart" in capsys.readouterr().err


def test_gram_anchoring_trains_against_the_teacher_of_the_last_refresh(tiny, raw_dataset, tmp_path):
    args = ["pretrain", "-d", "990", "--backbone", tiny.name, "--init", "random", "--gram-weight", "1",
            "--gram-refresh", "3", *TINY_RECIPE, "-o", str(tmp_path / "gram.pth")]
    state_file = tmp_path / "gram.pretrain_state.pth"
    assert main(args + ["--steps", "3"]) == 0
    after_3 = torch.load(state_file, weights_only=False)
    assert main(args + ["--steps", "5"]) == 0  # continues the finished run; the Gram teacher refreshes at step 3
    after_5 = torch.load(state_file, weights_only=False)
    assert after_5["gram_teacher"].keys() == after_3["teacher"].keys()
    assert all(torch.equal(after_5["gram_teacher"][k], after_3["teacher"][k]) for k in after_3["teacher"])
    assert not all(torch.equal(after_5["teacher"][k], after_3["teacher"][k]) for k in after_3["teacher"])
    history = after_5["history"]
    assert len(history) == 5 and all(h["gram"] > 0 for h in history)
    assert all(abs(h["loss"] - h["dino"] - h["ibot"] - 0.1 * h["koleo"] - h["gram"]) < 1e-4 for h in history)


def test_pretrain_refuses_empty_selections_unreadable_images_and_existing_outputs(tiny, tmp_path, capsys):
    base = ["pretrain", "--backbone", tiny.name, "--init", "random", "--steps", "2", *TINY_RECIPE]
    (tmp_path / "empty").mkdir()
    assert main(base + ["--folder", str(tmp_path / "empty"), "-o", str(tmp_path / "a.pth")]) == 2
    assert "no images in" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "scan.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    assert main(base + ["--folder", str(broken), "-o", str(tmp_path / "b.pth")]) == 2
    assert "scan.nii.gz" in capsys.readouterr().err and not (tmp_path / "b.pth").exists()
    (tmp_path / "c.pth").write_bytes(b"precious")
    make_synthetic_2d(str(tmp_path / "raw"), 990, num_train=2, num_test=0)
    images = str(tmp_path / "raw" / "Dataset990_Synth2D" / "imagesTr")
    assert main(base + ["--folder", images, "-o", str(tmp_path / "c.pth")]) == 2
    assert (tmp_path / "c.pth").read_bytes() == b"precious"


# --- DDP: two gloo processes, as `-num_gpus 2` / torchrun start them ---------------------------------------
def _digest(module) -> list:
    return [float(v.double().sum()) for v in module.state_dict().values() if v.is_floating_point()]


def _ddp_worker(rank, world, port, folder, out, results):
    from nnunet_dino.pretrain.data import select_cases
    from nnunet_dino.pretrain.loop import PretrainJob
    from nnunet_dino.pretrain.recipe import Recipe
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    cases, groups = select_cases(folders=[folder])
    recipe = Recipe(steps=3, batch_size=4, global_size=32, local_size=16, local_crops=2, prototypes=32,
                    head_hidden=32, head_bottleneck=16, save_every=3)
    run = PretrainRun(PretrainJob(tiny_spec("dinov3_vits16"), "random", cases, groups, recipe, out, device="cpu",
                                  progress=False))
    try:
        initial = _digest(run.student)
        record = run.run()
        results[rank] = {"initial": initial, "student": _digest(run.student), "record": record,
                         "losses": [h["loss"] for h in run.history]}
    finally:
        torch.distributed.destroy_process_group()


def test_two_processes_train_one_model_and_only_rank_0_writes(tmp_path):
    import torch.multiprocessing as mp
    from nnunet_dino.datasets.textures import write_texture_folder
    folder = str(tmp_path / "unlabelled")
    write_texture_folder(folder, 8, seed=0, size=64)
    out = str(tmp_path / "ddp.pth")
    results = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(2, free_port(), folder, out, results), nprocs=2, join=True)
    assert results[0]["student"] == results[1]["student"]  # gradients averaged: one model on both ranks
    assert results[0]["student"] != results[0]["initial"]
    assert results[0]["losses"] != results[1]["losses"]  # each rank trains on its own slices and crops
    assert results[0]["record"]["world_size"] == 2 and results[1]["record"] == {}  # rank 1 writes nothing
    assert sorted(os.listdir(tmp_path)) == sorted(["unlabelled", "ddp.pth", "ddp.pretrain.json", "ddp.losses.png",
                                                   "ddp.pretrain_state.pth"])


# --- a plugin trainer with the written file -------------------------------------------------------------
def test_a_debug_trainer_trains_and_predicts_with_pretrained_weights_and_the_report_flags_leakage(
        synthetic_2d, tmp_path, monkeypatch, capsys):
    env = dict(synthetic_2d["env"], nnUNet_results=str(tmp_path / "results"))
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, env[var])
    out = tmp_path / "ct_dinov3_vits16.pth"
    assert main(["pretrain", "-d", "990", "--backbone", "dinov3_vits16", "--init", "random", "--steps", "2",
                 "--gradient-checkpointing", *TINY_RECIPE, "-o", str(out)]) == 0
    record = json.loads((tmp_path / "ct_dinov3_vits16.pretrain.json").read_text())
    assert record["data"][0]["read_from"].endswith("nnUNetPlans_2d")  # preprocessed, as the trainers see it
    assert len(record["data"][0]["cases"]) == 10
    assert main(["weights", "verify", str(out)]) == 0
    assert "loads into dinov3_vits16 " in capsys.readouterr().out

    trainer = "nnUNetTrainerSegDINO_debug"
    env["nnUNet_dino_weights"] = str(out)
    train(990, trainer, env)
    model = results_folder(env, synthetic_2d["dataset"], trainer)
    fold_record = json.load(open(os.path.join(model, "fold_0", "backbone_weights.json")))
    assert fold_record["sha256"] == record["weights_sha256"] and fold_record["weights"]["path"] == str(out)
    predictions = tmp_path / "predictions"
    predict(990, trainer, os.path.join(synthetic_2d["raw_folder"], "imagesTs"), str(predictions), env)
    assert sorted(p for p in os.listdir(predictions) if p.endswith(".png")) == ["case_010.png", "case_011.png"]

    from nnunet_dino.crossval import build_report
    report = build_report("990", [trainer], folds=[0], output=str(tmp_path / "report"))
    leakage = [note for note in report.notes if note.startswith("LEAKAGE")]
    assert len(leakage) == 1 and "2 of the 2 cases" in leakage[0] and str(out) in leakage[0], report.notes


def test_leakage_notes_match_dataset_cases_and_folder_file_names_of_the_pretraining_record(tmp_path):
    from nnunet_dino.pretrain.record import RECORD_KIND, leakage_notes
    from nnunet_dino.training.records import write_fold_weights_record
    weights = tmp_path / "w.pth"
    (tmp_path / "w.pretrain.json").write_text(json.dumps({"kind": RECORD_KIND, "data": [
        {"group": "Dataset007_X", "cases": ["a", "b"]}, {"group": "Dataset008_Y", "cases": ["c"]},
        {"group": str(tmp_path / "scans"), "cases": ["sub/d_0000", "e"]}]}))
    model = tmp_path / "model"
    for fold, path in ((0, str(weights)), (1, str(weights)), (2, "")):
        os.makedirs(model / f"fold_{fold}")
        write_fold_weights_record(str(model / f"fold_{fold}"), {"sha256": "x", "weights": {"path": path}})
    notes = leakage_notes("T", str(model), [0, 1, 2], {"a", "c", "d", "z"}, "Dataset007_X")
    assert len(notes) == 1 and "2 of the 4 cases" in notes[0] and "(a, d)" in notes[0]
    assert leakage_notes("T", str(model), [0, 1, 2], {"z"}, "Dataset007_X") == []
    assert leakage_notes("T", str(model), [2], {"a"}, "Dataset007_X") == []  # random backbone: no file
