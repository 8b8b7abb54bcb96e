"""`nnunet-dino predict` / DinoPredictor: the folds of an ensemble share one frozen encoder forward per tile
and mirror, and the result is nnU-Net's own, compared with nnUNetPredictor on the same model folders.

No model is trained: each model folder is the shared synthetic dataset's plans and dataset.json plus three
slim fold checkpoints of a tiny-ViT `_debug` trainer, written from one random backbone and differently
perturbed adapter weights (zero-initialised gates and slab fusions included, so every path is live and the
folds really differ). The networks run in fp32, where nnU-Net's fp16 accumulation makes any difference in
a tile's logits show.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from nnunet_dino.cpu_threads import usable_cores
from nnunet_dino.prediction import DinoPredictor, encoder_sharing

FOLDS = (0, 1, 2)
USER_TRAINERS = '''
from nnunet_dino.backbones.adaptation import Adaptation
from nnunet_dino.backbones.registry import get_backbone_spec, register_backbone
from nnunet_dino.training.trainers import (nnUNetTrainerDinoUNet_debug, nnUNetTrainerSegDINO_debug,
                                           nnUNetTrainerSegDINOv2_debug, nnUNetTrainerUDFA_S_debug)

V3 = register_backbone(get_backbone_spec("dinov3_vits16").variant("tiny_predict_v3", embed_dim=64, depth=4,
                                                                   num_heads=4)).name
V2 = register_backbone(get_backbone_spec("dinov2_vits14").variant("tiny_predict_v2", embed_dim=64, depth=4,
                                                                   num_heads=4)).name
FP32 = {"cpu_precision": "fp32"}


class nnUNetTrainerTinySegDINO_debug(nnUNetTrainerSegDINO_debug):
    backbone, network_kwargs = V3, FP32


class nnUNetTrainerTinySegDINOv2_debug(nnUNetTrainerSegDINOv2_debug):
    backbone, network_kwargs = V3, dict(FP32, decoder_dim=32)


class nnUNetTrainerTinyUDFA_debug(nnUNetTrainerUDFA_S_debug):
    backbone, network_kwargs = V2, dict(FP32, spa_channels=[8, 16, 16, 32, 32], bottleneck_channels=32)


class nnUNetTrainerTinyDinoUNet_debug(nnUNetTrainerDinoUNet_debug):
    backbone, network_kwargs = V3, dict(FP32, decoder_channels=[8, 16, 32, 32], fapm_rank=16)


class nnUNetTrainerTinySegDINO_LoRA_debug(nnUNetTrainerTinySegDINO_debug):
    adaptation = Adaptation("lora", rank=4, alpha=4.0)
'''
FAMILIES = ("SegDINO", "SegDINOv2", "UDFA", "DinoUNet")


@pytest.fixture(scope="module")
def trainers_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predict_trainers")
    (folder / "tiny_predict_trainers.py").write_text(USER_TRAINERS)
    return str(folder)


@pytest.fixture(autouse=True)
def plugin_environment(monkeypatch, trainers_folder, one_thread):
    monkeypatch.setenv("nnUNet_extTrainer", trainers_folder)
    monkeypatch.delenv("nnUNet_dino_weights", raising=False)  # the checkpoints' records say: random, seeded


def _perturbed_(network, seed: int) -> None:
    """Every parameter outside the frozen encoder moved by seeded noise (zero-initialised ones come alive)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in network.named_parameters():
            if not name.startswith("backbone."):
                param.add_(0.1 * torch.randn(param.shape, generator=gen))


def write_model_folder(root: str, preprocessed: str, trainer: str, configuration: str, folds=FOLDS) -> str:
    """A model folder as nnUNetv2_train leaves it, with one slim checkpoint per fold (no training)."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnunet_dino.backbones import WeightsSource, load_backbone_weights
    from nnunet_dino.plans import rounded_patch_size
    from nnunet_dino.training.slab import SLAB_INFERENCE_MIRROR_AXES
    plans = json.load(open(os.path.join(preprocessed, "nnUNetPlans.json")))
    dataset_json = json.load(open(os.path.join(preprocessed, "dataset.json")))
    folder = os.path.join(root, f"{trainer}__nnUNetPlans__{configuration}")
    os.makedirs(folder)
    trainer_class = recursive_find_trainer_class_by_name(trainer)
    patch = plans["configurations"][configuration]["patch_size"]  # rounded as the trainer writes it to its plans
    smallest = trainer_class.network_class.min_input_size
    plans["configurations"][configuration]["patch_size"] = patch[:-2] + [
        max(s, smallest) for s in rounded_patch_size(patch[-2:], trainer_class.patch_multiple())]
    for name, content in (("plans.json", plans), ("dataset.json", dataset_json)):
        json.dump(content, open(os.path.join(folder, name), "w"))
    manager = PlansManager(plans)
    config = manager.get_configuration(configuration)
    axes = SLAB_INFERENCE_MIRROR_AXES if configuration == "2.5d" else (0, 1)
    for fold in folds:
        torch.manual_seed(100 + fold)  # differently seeded initial weights, then differently perturbed
        network = trainer_class.build_network_architecture(
            manager, config, determine_num_input_channels(manager, config, dataset_json),
            manager.get_label_manager(dataset_json).num_segmentation_heads, False)
        load_backbone_weights(network.backbone, WeightsSource("random"))
        _perturbed_(network, seed=fold)
        with network.slim_state_dict():
            weights = network.state_dict()
        os.makedirs(os.path.join(folder, f"fold_{fold}"))
        torch.save({"network_weights": weights, "trainer_name": trainer, "current_epoch": 2,
                    "init_args": {"configuration": configuration, "fold": fold},
                    "inference_allowed_mirroring_axes": axes},
                   os.path.join(folder, f"fold_{fold}", "checkpoint_final.pth"))
    return folder


@pytest.fixture(scope="module")
def datasets(synthetic_2d, synthetic_slabs):
    """configuration -> (preprocessed dataset folder, raw test images)."""
    slabs_pre = os.path.join(synthetic_slabs["env"]["nnUNet_preprocessed"], synthetic_slabs["name"])
    pre_2d = os.path.join(synthetic_2d["env"]["nnUNet_preprocessed"], synthetic_2d["dataset"])
    return {"2d": (pre_2d, os.path.join(synthetic_2d["raw_folder"], "imagesTs")),
            "2.5d": (slabs_pre, os.path.join(synthetic_slabs["raw"], "imagesTs"))}


def predictors(model: str, mirroring: bool, folds=FOLDS, **options):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    out = []
    for cls, kwargs in ((nnUNetPredictor, {}), (DinoPredictor, options)):
        predictor = cls(use_mirroring=mirroring, device=torch.device("cpu"), allow_tqdm=False, **kwargs)
        predictor.initialize_from_trained_model_folder(model, folds, "checkpoint_final.pth")
        out.append(predictor)
    return out


def preprocessed_case(predictor, images_folder: str):
    from nnunetv2.utilities.utils import create_lists_from_splitted_dataset_folder
    files = create_lists_from_splitted_dataset_folder(images_folder, predictor.dataset_json["file_ending"])[0]
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    data, _, _ = preprocessor.run_case(files, None, predictor.plans_manager, predictor.configuration_manager,
                                       predictor.dataset_json)
    return torch.from_numpy(data)


def assert_same_prediction_folders(ours: str, theirs: str, ending: str) -> None:
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_file_ending
    cases = sorted(f[:-len(ending)] for f in os.listdir(theirs) if f.endswith(ending))
    assert cases and cases == sorted(f[:-len(ending)] for f in os.listdir(ours) if f.endswith(ending))
    io = determine_reader_writer_from_file_ending(ending)()
    for case in cases:
        ours_seg, theirs_seg = (io.read_seg(os.path.join(d, case + ending))[0] for d in (ours, theirs))
        assert np.array_equal(ours_seg, theirs_seg), case
        ours_p, theirs_p = (np.load(os.path.join(d, case + ".npz"))["probabilities"] for d in (ours, theirs))
        assert ours_p.shape == theirs_p.shape and np.abs(ours_p - theirs_p).max() <= 1e-5, case


@pytest.mark.parametrize("configuration", ["2d", "2.5d"])
@pytest.mark.parametrize("family", FAMILIES)
def test_folds_sharing_one_encoder_predict_exactly_what_nnunet_predicts(family, configuration, datasets, tmp_path):
    """Logits to 1e-5 and identical label maps and probability files against nnUNetPredictor on the same three
    folds, with and without mirroring; the encoder runs once per tile and mirror, and every other fold reuses it."""
    preprocessed, images = datasets[configuration]
    model = write_model_folder(str(tmp_path), preprocessed, f"nnUNetTrainerTiny{family}_debug", configuration)
    theirs, ours = predictors(model, True)
    assert ours.sharing.shared, ours.sharing.reason
    for mirroring in (True, False):
        theirs.use_mirroring = ours.use_mirroring = mirroring
        data = preprocessed_case(ours, images)
        expected = theirs.predict_logits_from_preprocessed_data(data).float()
        encoder = ours.fold_networks[0].backbone
        encoder.forwards = encoder.reuses = 0
        got = ours.predict_logits_from_preprocessed_data(data).float()
        assert (got - expected).abs().max() <= 1e-5 and torch.equal(got.argmax(0), expected.argmax(0))
        shape, patch = list(data.shape[1:]), ours.configuration_manager.patch_size  # nnU-Net pads to the patch
        shape[-len(patch):] = [max(s, p) for s, p in zip(shape[-len(patch):], patch)]
        tiles = len(ours._internal_get_sliding_window_slicers(tuple(shape)))
        mirrors = 2 ** len(ours.allowed_mirroring_axes) if mirroring else 1
        calls_per_input = 2 if family == "UDFA" else 1  # U-DFA shares its embedding and the blocks before an injection
        assert encoder.forwards == tiles * mirrors * calls_per_input
        assert encoder.reuses == encoder.forwards * (len(FOLDS) - 1)
    out = {name: str(tmp_path / name) for name in ("ours", "theirs")}
    for predictor, name in ((theirs, "theirs"), (ours, "ours")):
        os.makedirs(out[name])
        predictor.predict_from_files_sequential(images, out[name], save_probabilities=True, overwrite=True)
    assert_same_prediction_folders(out["ours"], out["theirs"], ours.dataset_json["file_ending"])


def test_tiles_in_batches_give_the_same_logits(datasets, tmp_path):
    """A case of many tiles: one tile per call is nnU-Net's result exactly; five per call is the same up to
    fp16 rounding (a batched GEMM may round a tile's logits differently in the last fp32 bit, which nnU-Net's
    fp16 accumulator can turn into one fp16 step), with the same labels wherever two classes are not tied."""
    model = write_model_folder(str(tmp_path), datasets["2d"][0], "nnUNetTrainerTinyUDFA_debug", "2d")
    theirs, ours = predictors(model, True, tile_batch=1)
    data = torch.randn(1, 1, 150, 170, generator=torch.Generator().manual_seed(0))
    assert len(ours._internal_get_sliding_window_slicers(data.shape[1:])) > 5
    expected = theirs.predict_logits_from_preprocessed_data(data).float()
    one = ours.predict_logits_from_preprocessed_data(data).float()
    assert (one - expected).abs().max() <= 1e-5 and torch.equal(one.argmax(0), expected.argmax(0))
    ours.tile_batch = 5
    five = ours.predict_logits_from_preprocessed_data(data).float()
    assert torch.all((five - expected).abs() <= 2 ** -10 * expected.abs().clamp(min=1.0))
    top2 = expected.topk(2, dim=0).values
    clear = (top2[0] - top2[1]) > 1e-2
    assert torch.equal(five.argmax(0)[clear], expected.argmax(0)[clear])


def test_folds_that_cannot_share_run_the_encoder_once_each_and_say_so(datasets, tmp_path, capsys):
    """LoRA folds each adapt the encoder their own way: one forward per fold, named in one line, results still
    nnU-Net's. Different backbone weights or different learned channel mixes refuse sharing too."""
    model = write_model_folder(str(tmp_path), datasets["2d"][0], "nnUNetTrainerTinySegDINO_LoRA_debug", "2d")
    theirs, ours = predictors(model, True)
    assert not ours.sharing.shared and ours.fold_networks is None
    assert "one encoder forward per fold (the encoder is adapted (LoRA r4)" in capsys.readouterr().out
    data = preprocessed_case(ours, datasets["2d"][1])
    expected = theirs.predict_logits_from_preprocessed_data(data).float()
    assert (ours.predict_logits_from_preprocessed_data(data).float() - expected).abs().max() <= 1e-5

    from network_table import build_tiny
    from nnunet_dino.backbones import WeightsSource, load_backbone_weights
    from nnunet_dino.networks.base import BACKBONE_RECORD_KEY
    network = build_tiny("U-DFA", input_channels=2)  # two channels: a learnable 1x1 mix in front of the encoder
    load_backbone_weights(network.backbone, WeightsSource("random"))
    with network.slim_state_dict():
        states = [network.state_dict() for _ in FOLDS]
    assert encoder_sharing(network, states).shared
    other_weights = [dict(s) for s in states]
    other_weights[1][BACKBONE_RECORD_KEY] = dict(states[1][BACKBONE_RECORD_KEY], sha256="0" * 64)
    assert "different backbone weights" in encoder_sharing(network, other_weights).reason
    other_mix = [dict(s) for s in states]
    other_mix[2]["input_adapter.mix.weight"] = states[2]["input_adapter.mix.weight"] + 0.1
    assert "map the input channels" in encoder_sharing(network, other_mix).reason
    assert not encoder_sharing(network, states[:1]).shared  # a single fold has nothing to share


def test_the_command_writes_nnunets_prediction_folder_in_a_fresh_process(datasets, tmp_path):
    """`nnunet-dino predict -m ... --save_probabilities`: nnU-Net's files (segmentations, .npz/.pkl, plans.json,
    dataset.json) equal to nnUNetPredictor's, no staging folder left; --continue_prediction keeps them."""
    preprocessed, images = datasets["2d"]
    model = write_model_folder(str(tmp_path), preprocessed, "nnUNetTrainerTinySegDINO_debug", "2d")
    theirs, _ = predictors(model, True)
    os.makedirs(tmp_path / "theirs")
    torch.set_num_threads(usable_cores())  # the command's threads (cpu_threads.py): the same GEMM sums
    try:
        theirs.predict_from_files_sequential(images, str(tmp_path / "theirs"), save_probabilities=True, overwrite=True)
    finally:
        torch.set_num_threads(1)
    out = tmp_path / "ours"
    cli = os.path.join(os.path.dirname(sys.executable), "nnunet-dino")
    command = [cli, "predict", "-m", model, "-i", images, "-o", str(out), "-f", "0", "1", "2", "-device", "cpu",
               "--save_probabilities", "-npp", "1", "-nps", "1", "--disable_progress_bar"]
    env = dict(os.environ)
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "3 fold(s) share one frozen encoder forward per tile and mirror" in run.stdout
    assert_same_prediction_folders(str(out), str(tmp_path / "theirs"), theirs.dataset_json["file_ending"])
    assert {"plans.json", "dataset.json"} <= set(os.listdir(out))
    assert not [f for f in os.listdir(out) if f.startswith(".")] and any(f.endswith(".pkl") for f in os.listdir(out))
    again = subprocess.run(command + ["--continue_prediction"], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "0 case(s) written" in again.stdout, again.stderr[-3000:]
    shutil.rmtree(out)


def test_ctrl_c_while_predicting_leaves_no_case_and_no_staging_folder(datasets, tmp_path, monkeypatch, capsys):
    """In-process: Ctrl-C after the first case is half-written is one line, exit 130, and the output folder
    holds nothing of the run (its cases are written in a hidden staging folder, moved into place at the end)."""
    from nnunet_dino.cli import main
    preprocessed, images = datasets["2d"]
    model = write_model_folder(str(tmp_path), preprocessed, "nnUNetTrainerTinySegDINO_debug", "2d", folds=(0,))

    def cut_short(self, cases, staged, *args, **kwargs):
        with open(staged[0] + self.dataset_json["file_ending"], "wb") as f:
            f.write(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(DinoPredictor, "predict_from_files_sequential", cut_short)
    out = tmp_path / "predictions"
    argv = ["predict", "-m", model, "-i", images, "-o", str(out), "-f", "0", "-device", "cpu", "-npp", "0", "-nps", "0",
            "--disable_progress_bar"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and len(err.strip().splitlines()) == 1, err
    assert os.listdir(out) == [], os.listdir(out)
