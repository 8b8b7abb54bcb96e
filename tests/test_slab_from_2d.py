"""A slab model that starts where the 2d model ends (`2.5d+2d`, training/slab_start.py), and what a slab
model costs at prediction (training/slab.py): in-process, tiny ViTs, no training.

The trainers run as nnUNetv2_train runs them (plans and dataset.json on disk, `initialize`, nnU-Net's own
`save_checkpoint`) on a synthetic plan; nothing is preprocessed because nothing is trained."""
import json
import os

import pytest
import torch

from nnunet_dino.backbones.registry import get_backbone_spec, register_backbone
from nnunet_dino.bench.contenders import bench_plans
from nnunet_dino.errors import MissingInputError
from nnunet_dino.plans.slab import (SLAB_CONFIGURATION, SLAB_FROM_2D_CONFIGURATION, add_chained_configuration,
                                    chained_configuration, slab_configuration)
from nnunet_dino.training.slab import SLAB_Z_STEP_KEY, validation_at_slab_steps
from nnunet_dino.training.trainers import nnUNetTrainerSegDINO_debug, nnUNetTrainerUDFA_S_debug
from nnunet_helpers import make_trainer

K = 5
DATASET = "Dataset000_Bench"
V3 = register_backbone(get_backbone_spec("dinov3_vits16").variant("tiny_from2d_v3", embed_dim=64, depth=4,
                                                                   num_heads=4)).name
V2 = register_backbone(get_backbone_spec("dinov2_vits14").variant("tiny_from2d_v2", embed_dim=64, depth=4,
                                                                   num_heads=4)).name


class nnUNetTrainerTinySegDINO_debug(nnUNetTrainerSegDINO_debug):
    backbone, network_kwargs = V3, {"cpu_precision": "fp32"}


class nnUNetTrainerTinyUDFA_debug(nnUNetTrainerUDFA_S_debug):
    backbone = V2
    network_kwargs = {"cpu_precision": "fp32", "spa_channels": [8, 16, 16, 32, 32], "bottleneck_channels": 32}


TRAINERS = (nnUNetTrainerTinySegDINO_debug, nnUNetTrainerTinyUDFA_debug)


@pytest.fixture
def dataset(tmp_path, monkeypatch, one_thread):
    """nnUNet_preprocessed/Dataset000_Bench with plans holding 2d (32 x 32), 2.5d and 2.5d+2d; a fresh
    results folder; a random backbone."""
    manager, _, dataset_json = bench_plans((32, 32), 2 * K, 1, 3)
    plans = manager.plans
    fingerprint = {"spacings": [[1.0, 1.0, 1.0]], "shapes_after_crop": [[12, 32, 32]]}
    plans["configurations"][SLAB_CONFIGURATION] = slab_configuration(plans, K, "/nonexistent", fingerprint)
    folder = tmp_path / "preprocessed" / DATASET
    (folder / "nnUNetPlans_2d").mkdir(parents=True)
    (folder / "nnUNetPlans_2d" / "case.b2nd").write_bytes(b"")  # nnU-Net's initialize asks the data's format
    json.dump(plans, open(folder / "nnUNetPlans.json", "w"))
    json.dump(dataset_json, open(folder / "dataset.json", "w"))
    assert add_chained_configuration(str(folder / "nnUNetPlans.json"))  # plans made before the chain existed
    for name, value in (("nnUNet_preprocessed", tmp_path / "preprocessed"), ("nnUNet_results", tmp_path / "results"),
                        ("nnUNet_raw", tmp_path / "raw"), ("nnUNet_dino_weights", "random"), ("nnUNet_compile", "f")):
        monkeypatch.setenv(name, str(value))
    return str(tmp_path / "preprocessed")


def _trained_2d(trainer_class, preprocessed):
    """A 2d fold as training leaves it: the trainer's network with every adapter weight moved off its
    initialisation (zero-initialised gates come alive), saved by the trainer's own `save_checkpoint`."""
    trainer = make_trainer(trainer_class, preprocessed, DATASET, configuration="2d")
    trainer.initialize()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in trainer.network.named_parameters():
            if not name.startswith("backbone."):
                param.add_(0.1 * torch.randn(param.shape, generator=gen))
    trainer.save_checkpoint(os.path.join(trainer.output_folder, "checkpoint_final.pth"))
    return trainer


@pytest.mark.parametrize("trainer_class", TRAINERS, ids=lambda c: c.__name__)
def test_the_2_5d_model_starts_at_the_2d_models_logits_slice_by_slice(trainer_class, dataset):
    flat = _trained_2d(trainer_class, dataset).network.eval()
    chain = make_trainer(trainer_class, dataset, DATASET, configuration=SLAB_FROM_2D_CONFIGURATION)
    chain.initialize()  # loads the 2d fold, as nnUNetv2_train DATASET 2.5d+2d 0 does
    slab = chain.network.eval()
    assert slab.slab.neighbours == "repeat" and slab.slab.fusions  # each slice's own channels; fusions live
    x = torch.randn(2, 1, K, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = slab(x)
        for k in range(K):
            torch.testing.assert_close(logits[:, :, k], flat(x[:, :, k]), rtol=0, atol=1e-5)
    record = chain.configuration_manager.configuration["nnunet_dino_slab"]
    assert record == {"slices": K, "neighbours": "repeat", "fusion": "conv", "start_from": "2d"}


def test_the_fine_tuning_stage_trains_the_fusions_at_full_rate_and_the_2d_model_gently(dataset):
    _trained_2d(nnUNetTrainerTinySegDINO_debug, dataset)
    chain = make_trainer(nnUNetTrainerTinySegDINO_debug, dataset, DATASET, configuration=SLAB_FROM_2D_CONFIGURATION)
    chain.initialize()
    fusions = {id(p) for p in chain.network.slab.fusions.parameters()}
    trainable = {id(p) for p in chain.network.parameters() if p.requires_grad}
    scales = {id(p): g["lr_scale"] for g in chain.optimizer.param_groups for p in g["params"]}
    assert set(scales) == trainable and fusions < trainable
    assert {scales[p] for p in fusions} == {1.0}
    assert {scales[p] for p in trainable - fusions} == {chain.slab_start_lr_scale} == {0.1}
    schedule = chain.lr_scheduler
    assert schedule.warmup_epochs == 1 and schedule.lr_at(0) == chain.initial_lr / 2  # _debug: 2 epochs
    # training mirrors the slab along z too; prediction only in-plane, as the 2d model
    *_, training_axes = chain.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    assert training_axes == (0, 1, 2) and chain.inference_allowed_mirroring_axes == (1, 2)
    assert chain.configuration_manager.configuration[SLAB_Z_STEP_KEY] == K - 1


def test_a_chained_stage_without_its_2d_fold_names_the_command_that_trains_it(dataset):
    chain = make_trainer(nnUNetTrainerTinySegDINO_debug, dataset, DATASET, configuration=SLAB_FROM_2D_CONFIGURATION,
                         fold=1)
    with pytest.raises(MissingInputError, match=r"nnUNetv2_train Dataset000_Bench 2d 1 -tr nnUNetTrainerTinySegDINO_debug"):
        chain.initialize()


def test_the_chained_configuration_is_the_slab_one_with_its_start():
    plans = bench_plans((32, 32), 2 * K, 1, 3)[0].plans
    fingerprint = {"spacings": [[1.0, 1.0, 1.0]], "shapes_after_crop": [[12, 32, 32]]}
    slab = slab_configuration(plans, K, "/nonexistent", fingerprint)
    chained = chained_configuration(slab)
    assert chained["nnunet_dino_slab"] == {"slices": K, "start_from": "2d"}
    assert {k: v for k, v in chained.items() if k != "nnunet_dino_slab"} == \
        {k: v for k, v in slab.items() if k != "nnunet_dino_slab"}  # same data, patch, batch, architecture


# --- one command for the chain: nnunet-dino crossval TRAINER:2.5d+2d -----------------------------------
def _finished_fold(folder):
    """A fold folder as a finished nnUNetv2_train leaves it (crossval reads only these files)."""
    os.makedirs(os.path.join(folder, "validation"))
    torch.save({}, os.path.join(folder, "checkpoint_final.pth"))
    json.dump({}, open(os.path.join(folder, "validation", "summary.json"), "w"))


def test_crossval_runs_each_folds_2d_model_then_its_2_5d_stage_and_emits_them_as_one_task(dataset, tmp_path):
    from nnunet_dino.crossval import emit_scripts
    from nnunet_dino.crossval.models import parse_model
    folder = os.path.join(dataset, DATASET)
    plans = json.load(open(os.path.join(folder, "nnUNetPlans.json")))
    del plans["configurations"][SLAB_FROM_2D_CONFIGURATION]  # plans made before the chain existed
    json.dump(plans, open(os.path.join(folder, "nnUNetPlans.json"), "w"))
    json.dump([{"train": ["a"], "val": ["b"]}] * 2, open(os.path.join(folder, "splits_final.json"), "w"))
    trainer = "nnUNetTrainerSegDINO_debug"
    _finished_fold(str(tmp_path / "results" / DATASET / f"{trainer}__nnUNetPlans__2d" / "fold_0"))

    model = parse_model(f"{trainer}:2.5d+2d")
    assert model.label == f"{trainer}:2.5d+2d" and model.start == parse_model(trainer)
    result = emit_scripts(DATASET, [model.label], str(tmp_path / "emit"), folds=(0, 1), device="cpu")
    assert SLAB_FROM_2D_CONFIGURATION in json.load(open(os.path.join(folder, "nnUNetPlans.json")))["configurations"]
    assert [(p.model.label, p.fold, p.action) for p in result["plans"]] == [
        (trainer, 0, "done"), (model.label, 0, "train"), (trainer, 1, "train"), (model.label, 1, "train")]
    train = ["nnUNetv2_train", "0", "{}", "{}", "-tr", trainer, "-p", "nnUNetPlans", "-device", "cpu", "--c"]

    def command(configuration, fold):
        return [w.format(configuration if i == 2 else fold) for i, w in enumerate(train)]
    assert [c for _, c in result["commands"]] == [command("2.5d+2d", 0), [command("2d", 1), command("2.5d+2d", 1)]]
    listed_after = emit_scripts(DATASET, [model.label, trainer], str(tmp_path / "emit2"), folds=(0, 1), device="cpu")
    assert [(p.model.label, p.fold) for p in listed_after["plans"]] == [(p.model.label, p.fold) for p in result["plans"]]
    script = open(result["run_folds"]).read()
    assert "nnUNetv2_train 0 2d 1 -tr nnUNetTrainerSegDINO_debug -p nnUNetPlans -device cpu --c && nnUNetv2_train 0 " \
           "2.5d+2d 1" in script
    assert "  1) nnUNetv2_train 0 2d 1 " in open(result["job_array"]).read()


# --- what a slab model costs at prediction ---------------------------------------------------------------
def _encoded_slices(predictor, network, volume) -> int:
    """Slices the frozen encoder encodes while the predictor runs its sliding window over `volume`."""
    seen = []
    hook = network.backbone.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[0]))
    try:
        predictor.predict_sliding_window_return_logits(volume)
    finally:
        hook.remove()
    return sum(seen)


def test_a_slab_model_encodes_each_slice_at_most_1_25_times_as_often_as_the_2d_model(dataset):
    """Z = 12 slices of 48 x 48 (4 in-plane tiles of 32): the 2d model encodes each slice once per tile and
    mirror; the 2.5d model, mirrored in-plane as training allows and tiled every K - 1 = 4 slices along z,
    15 of 12 slices per tile and mirror (nnU-Net's single step of 0.5 would take 20)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunet_dino.prediction import DinoPredictor
    flat = _trained_2d(nnUNetTrainerTinySegDINO_debug, dataset)
    chain = make_trainer(nnUNetTrainerTinySegDINO_debug, dataset, DATASET, configuration=SLAB_FROM_2D_CONFIGURATION)
    chain.initialize()
    volume = torch.randn(1, 12, 48, 48, generator=torch.Generator().manual_seed(0))
    counts = {}
    for name, trainer, predictor_class in (("2d", flat, nnUNetPredictor), ("2.5d nnU-Net", chain, nnUNetPredictor),
                                           ("2.5d", chain, DinoPredictor)):
        trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()  # the checkpoint's mirroring axes
        predictor = predictor_class(tile_step_size=0.5, use_mirroring=True, device=torch.device("cpu"),
                                    perform_everything_on_device=False, allow_tqdm=False)
        predictor.manual_initialization(trainer.network, trainer.plans_manager, trainer.configuration_manager, None,
                                        trainer.dataset_json, type(trainer).__name__,
                                        trainer.inference_allowed_mirroring_axes)
        counts[name] = _encoded_slices(predictor, trainer.network, volume)
    mirrors = 4  # both configurations: the two in-plane axes
    assert counts["2d"] == 12 * 4 * mirrors
    assert counts["2.5d"] == 15 * 4 * mirrors and counts["2.5d nnU-Net"] == 20 * 4 * mirrors
    plain = nnUNetPredictor._internal_get_sliding_window_slicers
    assert len(plain(predictor, (12, 48, 48))) == 4 * 4
    with validation_at_slab_steps():  # the trainer's validation tiles as nnunet-dino predict does
        assert len(nnUNetPredictor._internal_get_sliding_window_slicers(predictor, (12, 48, 48))) == 3 * 4
    assert nnUNetPredictor._internal_get_sliding_window_slicers is plain
