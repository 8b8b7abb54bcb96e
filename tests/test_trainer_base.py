"""The trainer base's integration rules, exercised in-process on a real preprocessed dataset."""
import copy
import dataclasses
import json
import os
import time
import warnings

import pytest
import torch

from nnunet_dino.backbones import WeightsError
from nnunet_dino.training.trainers import nnUNetTrainerSegDINO_debug
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from nnunet_helpers import make_trainer


class SegDINOOnDinov2Trainer(nnUNetTrainerSegDINO_debug):
    """Test-only: a patch-14 backbone, so the 64x80 plan must be rounded (to 70x84)."""
    backbone = "dinov2_vits14"


def _results_written(tmp_path) -> list:
    root = tmp_path / "results"
    return [str(p) for p in root.rglob("*")] if root.exists() else []


def test_refuses_3d_configuration_before_writing_anything(nnunet_paths, monkeypatch, tmp_path):
    monkeypatch.setenv("nnUNet_dino_weights", "random")
    folder = os.path.join(nnunet_paths["env"]["nnUNet_preprocessed"], nnunet_paths["dataset"])
    plans = json.load(open(os.path.join(folder, "nnUNetPlans.json")))
    plans["configurations"]["3d_fullres"] = dict(copy.deepcopy(plans["configurations"]["2d"]),
                                                 patch_size=[8, 64, 80], spacing=[3.0, 1.0, 1.0])
    plans["continue_training"] = False
    with pytest.raises(ValueError) as err:
        nnUNetTrainerSegDINO_debug(plans, "3d_fullres", 0, json.load(open(os.path.join(folder, "dataset.json"))),
                                   torch.device("cpu"))
    assert "3d_fullres" in str(err.value) and "2d" in str(err.value) and "slice by slice" in str(err.value)
    assert _results_written(tmp_path) == []


def test_refuses_to_start_without_weights_and_writes_nothing(nnunet_paths, monkeypatch, tmp_path):
    monkeypatch.delenv("nnUNet_dino_weights", raising=False)
    with pytest.raises(WeightsError) as err:
        make_trainer(nnUNetTrainerSegDINO_debug, nnunet_paths["env"]["nnUNet_preprocessed"], nnunet_paths["dataset"])
    message = str(err.value)
    assert "nnUNet_dino_weights" in message and "random" in message and "dinov3_vits16" in message
    assert _results_written(tmp_path) == []


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other_model"])
def test_refuses_unusable_weights_before_the_fold_folder_exists(nnunet_paths, monkeypatch, tmp_path, damage):
    from dino_weights_helpers import tiny_spec
    from nnunet_dino.backbones import FrozenDinoBackbone
    path = tmp_path / "weights.pth"
    spec = tiny_spec("dinov3_vits16") if damage == "other_model" else nnUNetTrainerSegDINO_debug.backbone_spec()
    torch.save(FrozenDinoBackbone(spec).vit.state_dict(), path)
    data = path.read_bytes()
    path.write_bytes({"garbage": bytes(range(256)) * 4, "truncated": data[: len(data) // 2]}.get(damage, data))
    monkeypatch.setenv("nnUNet_dino_weights", str(path))
    with pytest.raises(WeightsError) as err:
        make_trainer(nnUNetTrainerSegDINO_debug, nnunet_paths["env"]["nnUNet_preprocessed"], nnunet_paths["dataset"])
    expected = {"garbage": "is not a checkpoint", "truncated": "truncated or corrupt", "other_model": "do not fit"}
    assert str(path) in str(err.value) and expected[damage] in str(err.value)
    assert _results_written(tmp_path) == []  # no fold_0/training_log_*.txt


def test_patch_size_is_rounded_in_the_plans_themselves(nnunet_paths, monkeypatch):
    monkeypatch.setenv("nnUNet_dino_weights", "random")
    trainer = make_trainer(SegDINOOnDinov2Trainer, nnunet_paths["env"]["nnUNet_preprocessed"], nnunet_paths["dataset"])
    assert trainer.plans_manager.plans["configurations"]["2d"]["patch_size"] == [70, 84]
    assert list(trainer.configuration_manager.patch_size) == [70, 84]


def test_training_steps_touch_only_trainable_parameters(nnunet_paths, monkeypatch, tmp_path):
    monkeypatch.setenv("nnUNet_dino_weights", "random")
    trainer = make_trainer(nnUNetTrainerSegDINO_debug, nnunet_paths["env"]["nnUNet_preprocessed"], nnunet_paths["dataset"])
    trainer.on_train_start()  # initialize + dataloaders + plans.json into the results folder
    net = trainer.unwrapped_network
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    assert optimised == trainable and trainable
    assert not any(id(p) in optimised for p in net.backbone.parameters())
    backbone_before = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    head_before = {k: v.clone() for k, v in net.head.state_dict().items()}
    trainer.network.train()  # what nnU-Net does every epoch
    assert not net.backbone.vit.training and net.head.training
    losses = [float(trainer.train_step(next(trainer.dataloader_train))["loss"]) for _ in range(2)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(torch.equal(v, net.backbone.state_dict()[k]) for k, v in backbone_before.items())
    assert any(not torch.equal(v, net.head.state_dict()[k]) for k, v in head_before.items())
    trainer.set_deep_supervision_enabled(False)  # nnU-Net calls this around validation

    # the saved plans carry the record, and rebuild exactly this network (as nnUNetv2_predict does)
    saved = json.load(open(os.path.join(trainer.output_folder_base, "plans.json")))
    record = saved["configurations"]["2d"]["nnunet_dino"]
    assert record["backbone"] == "dinov3_vits16" and record["weights"]["format"] == "random"
    pm = PlansManager(saved)
    with warnings.catch_warnings(record=True) as caught:  # the plans, shared by all folds, say nothing ...
        warnings.simplefilter("always")
        rebuilt = nnUNetTrainerSegDINO_debug.build_network_architecture(
            pm, pm.get_configuration("2d"), 1, trainer.label_manager.num_segmentation_heads, False)
    assert not [w for w in caught if "RANDOM" in str(w.message)]
    with net.slim_state_dict():
        slim = net.state_dict()
    with pytest.warns(UserWarning, match="RANDOM FROZEN BACKBONE: this model was trained on a random backbone"):
        rebuilt.load_state_dict(slim, strict=True)  # ... the checkpoint does
    x = torch.randn(1, 1, 64, 80)
    net.eval(), rebuilt.eval()
    assert torch.equal(net(x), rebuilt(x))


def test_time_budget_fits_epochs_and_schedule_to_the_budget(nnunet_paths, monkeypatch):
    from nnunet_dino.training.trainers import nnUNetTrainerSegDINO_demo

    class TinyBudget(nnUNetTrainerSegDINO_demo):
        time_budget_s = 4.0
        budget_iterations_per_epoch = 2

    monkeypatch.setenv("nnUNet_dino_weights", "random")
    trainer = make_trainer(TinyBudget, nnunet_paths["env"]["nnUNet_preprocessed"], nnunet_paths["dataset"])
    started = time.monotonic()
    trainer.run_training()
    took = time.monotonic() - started
    epochs = trainer.current_epoch
    assert 1 <= epochs <= trainer.num_epochs < 10_000  # refitted after every epoch
    assert trainer.lr_scheduler.num_epochs == trainer.num_epochs  # poly/constant stretched to the budget
    assert os.path.isfile(os.path.join(trainer.output_folder, "checkpoint_final.pth"))
    assert took < 4.0 + 60  # setup and the final checkpoint on top of the budget, never epochs past it


def test_time_budget_refits_after_a_slow_first_epoch(monkeypatch):
    """First epochs run slow (kernel selection, loader start-up): fitting the budget to the first epoch
    alone would stop far too early. A fake clock makes this exact."""
    from types import SimpleNamespace
    from nnunet_dino.training import budget

    clock = [0.0]
    monkeypatch.setattr(budget.time, "monotonic", lambda: clock[0])

    class FakeTrainer(budget.BudgetMixin):
        time_budget_s = 60.0

        def __init__(self):  # no nnU-Net: only what the loop touches
            self.num_epochs, self.current_epoch, self.num_iterations_per_epoch = 10_000, 0, 10
            self.lr_scheduler, self.logs = SimpleNamespace(num_epochs=None), []

        def print_to_log_file(self, *args):
            self.logs.append(" ".join(map(str, args)))

        def on_train_start(self):
            pass

        def on_train_end(self):
            pass

        def _run_epoch(self):
            clock[0] += 10.0 if self.current_epoch == 0 else 1.0
            self.current_epoch += 1

    trainer = FakeTrainer()
    trainer.run_training()
    # 10 s, then 1 s epochs: the first epoch alone predicts 6 epochs; refitting fills the budget exactly
    assert trainer.current_epoch == 51 and clock[0] == 60.0
    assert trainer.num_epochs == trainer.lr_scheduler.num_epochs == 51
    assert any("reached after 51 epochs" in line for line in trainer.logs)


def test_validation_predictors_show_their_progress_only_inside_validation():
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunet_dino.training.progress import sliding_window_progress
    with sliding_window_progress():
        assert nnUNetPredictor(allow_tqdm=False, device=torch.device("cpu")).allow_tqdm  # as nnU-Net builds it
    assert not nnUNetPredictor(allow_tqdm=False, device=torch.device("cpu")).allow_tqdm


def test_iteration_budget_stops_after_exactly_n_steps_whatever_the_clock(nnunet_paths, monkeypatch):
    """The demo's budget: N training steps (epochs of k, the last one shorter), the schedule stretched
    to them, however slow the clock says training is."""
    from nnunet_dino.training import budget
    from nnunet_dino.training.trainers import nnUNetTrainer_demo

    class SevenSteps(nnUNetTrainer_demo):
        budget_iterations, budget_iterations_per_epoch, budget_val_iterations_per_epoch = 7, 3, 1

    monkeypatch.delenv(budget.BUDGET_SECONDS_ENV_VAR, raising=False)
    trainer = make_trainer(SevenSteps, nnunet_paths["env"]["nnUNet_preprocessed"], nnunet_paths["dataset"])
    clock = [0.0]

    def slow_clock():  # every reading an hour later: a time budget would have stopped at once
        clock[0] += 3600.0
        return clock[0]

    monkeypatch.setattr(budget.time, "monotonic", slow_clock)
    steps, train_step = [], trainer.train_step
    trainer.train_step = lambda batch: steps.append(len(steps)) or train_step(batch)
    trainer.run_training()
    assert len(steps) == 7
    assert trainer.current_epoch == trainer.num_epochs == 3  # 3 + 3 + 1 iterations
    assert trainer.lr_scheduler.max_steps == 3  # nnU-Net's poly schedule ends with the budget
    assert os.path.isfile(os.path.join(trainer.output_folder, "checkpoint_final.pth"))
    progress = [p for p in map(budget.parse_progress, open(trainer.log_file).read().splitlines()) if p]
    assert [(p.done, p.total, p.unit) for p in progress] == [(3, 7, "iterations"), (6, 7, "iterations"),
                                                             (7, 7, "iterations")]  # what the demo shows
    assert progress[-1].seconds_left == 0 and progress[0].seconds_left == pytest.approx(progress[0].seconds * 4 / 3)


def test_budget_seconds_switches_to_the_wall_clock_and_demo_twins_are_seeded(nnunet_paths, monkeypatch):
    from nnunet_dino.training.budget import BUDGET_SECONDS_ENV_VAR
    from nnunet_dino.training.trainers import nnUNetTrainer_demo
    monkeypatch.setenv(BUDGET_SECONDS_ENV_VAR, "42")
    timed = make_trainer(nnUNetTrainer_demo, nnunet_paths["env"]["nnUNet_preprocessed"], nnunet_paths["dataset"])
    assert timed.time_budget_s == 42.0 and timed.num_epochs == 10_000  # refitted once epochs are timed
    monkeypatch.delenv(BUDGET_SECONDS_ENV_VAR)

    class Unseeded(nnUNetTrainer_demo):
        seed = None

    monkeypatch.delenv("MKL_DYNAMIC", raising=False)
    unseeded = make_trainer(Unseeded, nnunet_paths["env"]["nnUNet_preprocessed"], nnunet_paths["dataset"])
    assert "MKL_DYNAMIC" not in os.environ  # only a seeded run pins MKL's threads
    assert _blur_benchmarks(unseeded) == [True]  # nnU-Net's own choice, left alone
    weights = []
    for _ in range(2):  # nnU-Net's own trainer too: the same seed, the same initial network
        trainer = make_trainer(nnUNetTrainer_demo, nnunet_paths["env"]["nnUNet_preprocessed"], nnunet_paths["dataset"])
        assert trainer.time_budget_s is None
        assert trainer.num_epochs * trainer.num_iterations_per_epoch >= trainer.budget_iterations
        trainer.initialize()
        weights.append(trainer.network.state_dict())
    assert all(torch.equal(v, weights[1][k]) for k, v in weights[0].items())
    # a busy machine would otherwise make MKL use fewer threads, and the blur's timing benchmark pick its
    # other implementation: other sums, another training run
    assert os.environ["MKL_DYNAMIC"] == "FALSE"
    assert _blur_benchmarks(trainer) == [False]


def _blur_benchmarks(trainer) -> list:
    from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
    from nnunet_dino.training.seeding import walk_transforms
    transforms = trainer.get_training_transforms((64, 80), (0.0, 0.0), None, (0, 1), False)
    return [t.benchmark for t in walk_transforms(transforms) if isinstance(t, GaussianBlurTransform)]


def test_demo_twins_keep_their_parents_model_and_shorten_only_budget_seed_and_warm_ups():
    from nnunet_dino.training import trainers
    from nnunet_dino.training.budget import BudgetMixin
    assert trainers.DEMO_WARMUP_EPOCHS < trainers.nnUNetTrainerUDFA_S_FT.adaptation.warmup_epochs
    for name in trainers.DEMO_TWINS:
        parent, twin = getattr(trainers, name), getattr(trainers, f"{name}_demo")
        assert twin.__mro__[1:3] == (BudgetMixin, parent) and twin.seed == 0
        assert twin.budget_iterations == BudgetMixin.budget_iterations
        assert twin.warmup_epochs == min(parent.warmup_epochs, trainers.DEMO_WARMUP_EPOCHS)
        assert twin.adaptation.mode == parent.adaptation.mode and twin.backbone == parent.backbone
        assert twin.network_kwargs == parent.network_kwargs
        expected = dataclasses.replace(parent.adaptation, warmup_epochs=min(
            parent.adaptation.warmup_epochs, trainers.DEMO_WARMUP_EPOCHS))
        assert twin.adaptation == expected
    ft = trainers.nnUNetTrainerUDFA_S_FT_demo.adaptation
    assert ft.mode == "full" and ft.warmup_epochs == trainers.DEMO_WARMUP_EPOCHS and ft.layer_decay == 0.9
    assert trainers.nnUNetTrainerUDFA_S_demo.network_kwargs == {"spa": "nnunet"}
    assert trainers.nnUNetTrainerUDFA_S_SPA3_demo.network_kwargs == {"spa": "paper"}
