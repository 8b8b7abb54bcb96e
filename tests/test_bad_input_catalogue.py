"""The bad-input catalogue (documentation/troubleshooting.md) is checked against the code: every row names
a case below, whose input is really refused with a message containing the row's excerpt, and leaves
nothing written; every case below has its row. The table cannot drift from what users see."""
import os
import re

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from nnunet_dino.cli import main
from test_dicom_onboarding import two_cases, write_rtstruct, write_seg, write_series
from test_onboarding import make_3d, make_grey_2d, _write_volume

CATALOGUE_PAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "documentation",
                              "troubleshooting.md")
TABLE = re.compile(r"<!-- bad-input-catalogue -->\n(.*?)<!-- /bad-input-catalogue -->", re.S)


def catalogue_rows():
    """id -> message excerpt, from the catalogue's table (| `id` | input | `excerpt` | written |)."""
    rows = {}
    with open(CATALOGUE_PAGE, encoding="utf-8") as f:
        table = TABLE.search(f.read())
    assert table, f"no bad-input catalogue between its markers in {CATALOGUE_PAGE}"
    for line in table.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[2].strip("`")
    return rows


def _cli(capsys, *argv):
    """(exit code, stderr) of `nnunet-dino ARGV` run in-process."""
    code = main(list(argv))
    return code, capsys.readouterr().err


def _onboard(capsys, raw, *argv):
    code, err = _cli(capsys, "onboard", *argv, "-d", "61", "-n", "Bad", "--raw", raw, "-np", "1", "--no-progress")
    assert os.listdir(raw) == [], "onboarding wrote something"
    return code, err


def unpaired_files(tmp_path, raw, capsys):
    images, masks = make_grey_2d(tmp_path)
    os.remove(os.path.join(masks, "c0.png"))
    return _onboard(capsys, raw, images, masks)


def size_mismatch(tmp_path, raw, capsys):
    images, masks = make_grey_2d(tmp_path)
    Image.fromarray(np.zeros((40, 64), np.uint8)).save(os.path.join(masks, "c1.png"))
    return _onboard(capsys, raw, images, masks)


def origin_mismatch(tmp_path, raw, capsys):
    folder = make_3d(tmp_path)
    seg = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(folder, "case1_seg.nii.gz")))
    _write_volume(seg, os.path.join(folder, "case1_seg.nii.gz"), origin=(10.0, 5.0, 2.5))
    return _onboard(capsys, raw, folder, "--image-pattern", "{case}_{channel}.nii.gz", "--mask-pattern",
                    "{case}_seg.nii.gz", "--channels", "ct", "mr")


def truncated_file(tmp_path, raw, capsys):
    folder = make_3d(tmp_path)
    path = os.path.join(folder, "case2_mr.nii.gz")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    return _onboard(capsys, raw, folder, "--image-pattern", "{case}_{channel}.nii.gz", "--mask-pattern",
                    "{case}_seg.nii.gz", "--channels", "ct", "mr")


def non_integer_mask(tmp_path, raw, capsys):
    folder = make_3d(tmp_path)
    seg = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(folder, "case0_seg.nii.gz"))).astype(np.float32)
    _write_volume(seg * 0.5, os.path.join(folder, "case0_seg.nii.gz"))
    return _onboard(capsys, raw, folder, "--image-pattern", "{case}_{channel}.nii.gz", "--mask-pattern",
                    "{case}_seg.nii.gz", "--channels", "ct", "mr")


def missing_dataset(tmp_path, raw, capsys):
    return _cli(capsys, "crossval", "-d", "321", "-tr", "nnUNetTrainer")


def not_a_model_folder(tmp_path, raw, capsys):
    return _cli(capsys, "bundle", str(tmp_path))


def evaluate_unpaired(tmp_path, raw, capsys):
    for name in ("gt", "pred"):
        os.makedirs(tmp_path / name)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "pred" / "lonely.png")
    (tmp_path / "dataset.json").write_text('{"labels": {"background": 0, "a": 1}, "file_ending": ".png", '
                                           '"channel_names": {"0": "x"}, "numTraining": 1}')
    code, err = _cli(capsys, "evaluate", str(tmp_path / "gt"), str(tmp_path / "pred"), "-d", str(tmp_path))
    assert not os.path.exists(tmp_path / "pred" / "metrics_summary.json")
    return code, err


def garbage_weights(tmp_path, raw, capsys, monkeypatch):
    from nnunet_dino.backbones import WeightsError, get_backbone_spec, locate_weights
    from nnunet_dino.backbones.weights import read_source
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    path.write_bytes(os.urandom(1000))
    with pytest.raises(WeightsError) as error:
        read_source(locate_weights(get_backbone_spec("dinov2_vits14"), str(path)))
    return 2, str(error.value)


def unset_weights(tmp_path, raw, capsys, monkeypatch):
    from nnunet_dino.backbones import WeightsError, get_backbone_spec, locate_weights
    monkeypatch.delenv("nnUNet_dino_weights", raising=False)
    with pytest.raises(WeightsError) as error:
        locate_weights(get_backbone_spec("dinov3_vits16"))
    return 2, str(error.value)


def three_d_configuration(tmp_path, raw, capsys, monkeypatch):
    from nnunet_dino.training.trainers import nnUNetTrainerUDFA
    plans = {"configurations": {"3d_fullres": {"patch_size": [32, 64, 64], "data_identifier": "x",
                                               "preprocessor_name": "DefaultPreprocessor",
                                               "architecture": {"network_class_name": "x", "arch_kwargs": {},
                                                                "_kw_requires_import": []}}}}
    with pytest.raises(ValueError) as error:
        nnUNetTrainerUDFA._check_configuration(plans, "3d_fullres")
    return 2, str(error.value)


def _dicom_onboard(capsys, raw, images, masks):
    return _onboard(capsys, raw, str(images), str(masks))


def dicom_two_series(tmp_path, raw, capsys):
    images, masks = two_cases(tmp_path)
    write_series(tmp_path / "scout", 0, uid="1.2.826.0.1.3680043.8.498.299", description="scout")
    for name in os.listdir(tmp_path / "scout"):
        os.rename(tmp_path / "scout" / name, images / "c0" / f"scout_{name}")
    return _dicom_onboard(capsys, raw, images, masks)


def dicom_missing_slice(tmp_path, raw, capsys):
    images, masks = two_cases(tmp_path)
    os.remove(sorted(str(p) for p in (images / "c1").iterdir())[1])
    return _dicom_onboard(capsys, raw, images, masks)


def seg_of_another_series(tmp_path, raw, capsys):
    images, masks = two_cases(tmp_path)
    write_seg(masks / "c0.dcm", images / "c1", np.zeros((4, 16, 20), np.uint8) + 1)
    return _dicom_onboard(capsys, raw, images, masks)


def rtstruct_mask(tmp_path, raw, capsys):
    images, masks = two_cases(tmp_path)
    write_rtstruct(masks / "c0.dcm")
    return _dicom_onboard(capsys, raw, images, masks)


def letter_case_names(tmp_path, raw, capsys):
    images, masks = make_grey_2d(tmp_path)
    for folder in (images, masks):
        os.rename(os.path.join(folder, "c2.png"), os.path.join(folder, "C1.png"))
    return _onboard(capsys, raw, images, masks)


def nan_image(tmp_path, raw, capsys):
    folder = make_3d(tmp_path)
    mr = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(folder, "case1_mr.nii.gz")))
    mr[0, 0, 0] = np.nan
    os.remove(os.path.join(folder, "case1_mr.nii.gz"))
    _write_volume(mr, os.path.join(folder, "case1_mr.mha"))  # NIfTI (through SimpleITK) cannot hold NaN
    return _onboard(capsys, raw, folder, "--image-pattern", "{case}_{channel}", "--mask-pattern", "{case}_seg")


def four_d_image(tmp_path, raw, capsys):
    folder = make_3d(tmp_path)
    path = os.path.join(folder, "case1_ct.nii.gz")
    sitk.WriteImage(sitk.JoinSeries([sitk.ReadImage(path)] * 3), path)
    return _onboard(capsys, raw, folder, "--image-pattern", "{case}_{channel}.nii.gz", "--mask-pattern",
                    "{case}_seg.nii.gz", "--channels", "ct", "mr")


def stacked_channels(tmp_path, raw, capsys):
    images, masks = make_grey_2d(tmp_path)
    grey = np.asarray(Image.open(os.path.join(images, "c1.png")))
    os.remove(os.path.join(images, "c1.png"))
    _write_volume(np.stack([grey, grey]), os.path.join(images, "c1.nii.gz"))
    return _onboard(capsys, raw, images, masks)


def strict_constant_image(tmp_path, raw, capsys):
    images, masks = make_grey_2d(tmp_path)
    Image.fromarray(np.ones((48, 64), np.uint8)).save(os.path.join(images, "c1.png"))
    return _onboard(capsys, raw, images, masks, "--strict")


def strict_empty_mask(tmp_path, raw, capsys):
    images, masks = make_grey_2d(tmp_path)
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(os.path.join(masks, "c1.png"))
    return _onboard(capsys, raw, images, masks, "--strict")


def missing_weights_folder(tmp_path, raw, capsys, monkeypatch):
    from nnunet_dino.backbones import WeightsError, get_backbone_spec, locate_weights
    monkeypatch.setenv("nnUNet_dino_weights", str(tmp_path / "dino_wieghts"))
    with pytest.raises(WeightsError) as error:
        locate_weights(get_backbone_spec("dinov2_vits14"))
    return 2, str(error.value)


CASES = {f.__name__: f for f in (unpaired_files, size_mismatch, origin_mismatch, truncated_file, non_integer_mask,
                                 missing_dataset, not_a_model_folder, evaluate_unpaired, garbage_weights,
                                 unset_weights, three_d_configuration, dicom_two_series, dicom_missing_slice,
                                 seg_of_another_series, rtstruct_mask, letter_case_names, nan_image, four_d_image,
                                 stacked_channels, strict_constant_image, strict_empty_mask, missing_weights_folder)}


def test_every_case_has_a_row_and_every_row_a_case():
    assert set(catalogue_rows()) == set(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_row_says_what_the_user_sees(case, tmp_path, monkeypatch, capsys):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.makedirs(tmp_path / var)
        monkeypatch.setenv(var, str(tmp_path / var))
    function = CASES[case]
    arguments = (tmp_path, str(tmp_path / "nnUNet_raw"), capsys)
    if "monkeypatch" in function.__code__.co_varnames[:function.__code__.co_argcount]:
        arguments += (monkeypatch,)
    code, message = function(*arguments)
    assert code == 2 and "Traceback" not in message, message
    assert catalogue_rows()[case] in " ".join(message.split()), message
