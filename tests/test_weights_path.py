"""`nnUNet_dino_weights` naming a folder that does not exist (a typo) is named as such by `doctor`, by
training and by prediction, instead of reading like an empty folder."""
import pytest
import torch

from nnunet_dino import doctor
from nnunet_dino.backbones import WeightsError, WeightsSource, get_backbone_spec, load_backbone_weights
from nnunet_dino.networks.segdino import SegDINO

TYPO = "/no/such/dino_wieghts"


def test_doctor_names_a_weights_folder_that_does_not_exist(monkeypatch):
    monkeypatch.setenv("nnUNet_dino_weights", TYPO)
    monkeypatch.setattr(doctor, "resolve_trainers", lambda: [])  # nnU-Net's trainer search is not the point here
    text, _ = doctor.report()
    assert f"{TYPO} DOES NOT EXIST: check the path for a typo" in text
    rows = doctor.backbone_weights()
    assert rows and all(status == f"no weights: {TYPO} does not exist" for _, status, _, _ in rows)
    monkeypatch.setenv("nnUNet_dino_weights", "random")
    assert "DOES NOT EXIST" not in doctor.report()[0]


def _plans_2d() -> dict:
    scheme = {"resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_data_kwargs": {},
              "resampling_fn_seg": "resample_data_or_seg_to_shape", "resampling_fn_seg_kwargs": {},
              "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
              "resampling_fn_probabilities_kwargs": {}}
    configuration = {"data_identifier": "x", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
                     "patch_size": [64, 64], "median_image_size_in_voxels": [64, 64], "spacing": [1, 1],
                     "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
                     "architecture": {"network_class_name": "x", "arch_kwargs": {}, "_kw_requires_import": []},
                     **scheme}
    return {"plans_name": "p", "dataset_name": "Dataset001_X", "original_median_spacing_after_transp": [1, 1],
            "original_median_shape_after_transp": [64, 64], "image_reader_writer": "NaturalImage2DIO",
            "transpose_forward": [0, 1], "transpose_backward": [0, 1], "configurations": {"2d": configuration}}


def test_training_names_a_weights_folder_that_does_not_exist(monkeypatch):
    from nnunet_dino.training.trainers import nnUNetTrainerSegDINO
    monkeypatch.setenv("nnUNet_dino_weights", TYPO)
    dataset = {"channel_names": {"0": "x"}, "labels": {"background": 0, "a": 1}, "file_ending": ".png"}
    with pytest.raises(WeightsError, match=f"{TYPO} does not exist"):
        nnUNetTrainerSegDINO(_plans_2d(), "2d", 0, dataset, torch.device("cpu"))


def test_prediction_names_a_weights_folder_that_does_not_exist(tmp_path, monkeypatch):
    """A slim checkpoint (frozen backbone left out) reloads the backbone from nnUNet_dino_weights."""
    spec = get_backbone_spec("dinov3_vits16").variant("tiny_typo_dinov3", embed_dim=64, depth=4, num_heads=4)
    weights = tmp_path / "tiny_typo_dinov3.pth"
    torch.save(SegDINO(1, 2, backbone=spec).backbone.vit.state_dict(), weights)
    trained = SegDINO(1, 2, backbone=spec)
    load_backbone_weights(trained.backbone, WeightsSource("file", str(weights)))
    with trained.slim_state_dict():
        slim = trained.state_dict()
    monkeypatch.setenv("nnUNet_dino_weights", TYPO)
    with pytest.raises(WeightsError, match=f"{TYPO} does not exist"):
        SegDINO(1, 2, backbone=spec).load_state_dict(slim)
