"""`nnunet-dino onboard`: good 2D grey, 2D RGB and 3D two-channel inputs become valid nnU-Net raw datasets;
every kind of bad input is refused with every offending file listed and nothing written."""
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from nnunet_dino.cli import main
from nnunet_dino.onboarding import OnboardingError, onboard
from nnunet_dino.onboarding.labels import parse_label_mapping, plan_labels
from nnunet_dino.onboarding.naming import NamePattern

SHAPE = (48, 64)
SPACING_ZYX = (3.0, 0.8, 0.8)
ORIGIN_XYZ = (-10.0, 5.0, 2.5)
DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)  # LPS-flipped in-plane axes


def _label_map(i: int) -> np.ndarray:
    label = np.zeros(SHAPE, np.uint8)
    label[5 + i:20 + i, 8:24] = 1
    label[28:40, 30 + i:50 + i] = 2
    return label


def make_grey_2d(root, n=6, binary_255=True):
    """images/cI.png (uint8 grey) + masks/cI.png; binary 0/255 masks, or 0/1/2 labels."""
    images, masks = root / "images", root / "masks"
    for folder in (images, masks):
        folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        label = _label_map(i)
        pixels = (40 + 80 * label + rng.normal(0, 5, SHAPE)).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(images / f"c{i}.png")
        mask = (label > 0).astype(np.uint8) * 255 if binary_255 else label
        Image.fromarray(mask).save(masks / f"c{i}.png")
    return str(images), str(masks)


def make_rgb_2d(root, n=6, n_test=2):
    """RGB JPEG photos (lossy is fine for images) + PNG masks 0/1/2, plus unlabelled test photos."""
    images, masks, test = root / "rgb", root / "rgb_masks", root / "rgb_test"
    for folder in (images, masks, test):
        folder.mkdir()
    for i in range(n + n_test):
        label = _label_map(i)
        rgb = np.stack([60 + 90 * (label == 1), 60 + 90 * (label == 2), 200 - 60 * (label > 0)], -1).astype(np.uint8)
        if i < n:
            Image.fromarray(rgb).save(images / f"photo{i}.jpg", quality=95)
            Image.fromarray(label).save(masks / f"photo{i}.png")
        else:
            Image.fromarray(rgb).save(test / f"photo{i}.jpg", quality=95)
    return str(images), str(masks), str(test)


def _write_volume(array, path, spacing_zyx=SPACING_ZYX, origin=ORIGIN_XYZ, direction=DIRECTION):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    image.SetOrigin(origin)
    image.SetDirection(direction)
    sitk.WriteImage(image, str(path))


def make_3d(root, n=4, depth=3):
    """One folder: caseI_ct.nii.gz, caseI_mr.nii.gz (float) and caseI_seg.nii.gz holding 0/5 (liver=5)."""
    folder = root / "volumes"
    folder.mkdir()
    for i in range(n):
        label = np.stack([_label_map(i + z) == 1 for z in range(depth)]).astype(np.uint8) * 5
        _write_volume((label.astype(np.int16) * 40 - 1000), folder / f"case{i}_ct.nii.gz")
        _write_volume((label * 3.5 + 0.25).astype(np.float32), folder / f"case{i}_mr.nii.gz")
        _write_volume(label, folder / f"case{i}_seg.nii.gz")
    return str(folder)


@pytest.fixture
def raw(tmp_path, monkeypatch):
    folder = tmp_path / "nnUNet_raw"
    folder.mkdir()
    for var in ("nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(var, raising=False)
    return str(folder)


def _verify(folder):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    verify_dataset_integrity(folder, num_processes=1)  # raises on any problem


def _listing(folder):
    return sorted(os.listdir(folder))


# --- good inputs ----------------------------------------------------------------------------------

def test_grey_2d_binary_masks_via_cli(tmp_path, raw, capsys):
    images, masks = make_grey_2d(tmp_path)
    assert main(["onboard", images, masks, "-d", "42", "-n", "Grey", "--raw", raw, "-np", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    folder = os.path.join(raw, "Dataset042_Grey")
    assert _listing(raw) == ["Dataset042_Grey"]  # no temporary folder left
    assert _listing(os.path.join(folder, "imagesTr")) == [f"c{i}_0000.png" for i in range(6)]
    assert _listing(os.path.join(folder, "labelsTr")) == [f"c{i}.png" for i in range(6)]
    dataset = json.load(open(os.path.join(folder, "dataset.json")))
    assert dataset["channel_names"] == {"0": "gray"}
    assert dataset["labels"] == {"background": 0, "foreground": 1}  # 0/255 inferred -> 0/1
    assert (dataset["numTraining"], dataset["file_ending"]) == (6, ".png")
    label = np.asarray(Image.open(os.path.join(folder, "labelsTr", "c0.png")))
    assert set(np.unique(label)) == {0, 1}
    np.testing.assert_array_equal(label, _label_map(0) > 0)
    image = np.asarray(Image.open(os.path.join(folder, "imagesTr", "c0_0000.png")))
    np.testing.assert_array_equal(image, np.asarray(Image.open(os.path.join(images, "c0.png"))))
    for text in ("ZScoreNormalization", "255 -> 1", "6/6 cases", "48 x 64", "integrity check",
                 "nnUNetv2_plan_and_preprocess -d 42 -c 2d", "nnunet-dino crossval -d 42", "nnunet-dino report -d 42"):
        assert text in out, text
    _verify(folder)


def test_rgb_2d_with_label_json_and_test_images(tmp_path, raw):
    images, masks, test = make_rgb_2d(tmp_path)
    mapping = tmp_path / "labels.json"
    mapping.write_text(json.dumps({"background": 0, "disk": 1, "square": 2}))
    result = onboard(images, masks, 43, "Photos", raw, labels=[str(mapping)], test_images=test, progress=False)
    folder = result.folder
    assert _listing(os.path.join(folder, "imagesTr")) == [f"photo{i}_0000.png" for i in range(6)]  # one file per case
    assert _listing(os.path.join(folder, "imagesTs")) == ["photo6_0000.png", "photo7_0000.png"]
    rgb = np.asarray(Image.open(os.path.join(folder, "imagesTr", "photo0_0000.png")))
    assert rgb.shape == SHAPE + (3,) and rgb.dtype == np.uint8
    dataset = json.load(open(os.path.join(folder, "dataset.json")))
    assert dataset["channel_names"] == {"0": "rgb_to_0_1", "1": "rgb_to_0_1", "2": "rgb_to_0_1"}
    assert dataset["labels"] == {"background": 0, "disk": 1, "square": 2}
    assert [c.scheme for c in result.channels] == ["RGBTo01Normalization"] * 3
    assert result.label_cases == {0: 6, 1: 6, 2: 6}
    _verify(folder)


def test_3d_two_channels_one_folder_with_patterns(tmp_path, raw):
    source = make_3d(tmp_path)
    result = onboard(source, None, 44, "Abdomen", raw, image_pattern="{case}_{channel}.nii.gz",
                     mask_pattern="{case}_seg.nii.gz", labels=["liver=5"], modality=["ct=CT", "mr=MR"],
                     progress=False)
    folder = result.folder
    assert _listing(os.path.join(folder, "imagesTr")) == sorted(f"case{i}_{c:04d}.nii.gz" for i in range(4)
                                                                for c in (0, 1))
    dataset = json.load(open(os.path.join(folder, "dataset.json")))
    assert dataset["channel_names"] == {"0": "CT", "1": "MR"}
    assert [c.scheme for c in result.channels] == ["CTNormalization", "ZScoreNormalization"]
    assert dataset["labels"] == {"background": 0, "liver": 1}
    for name in ("imagesTr/case1_0000.nii.gz", "imagesTr/case1_0001.nii.gz", "labelsTr/case1.nii.gz"):
        image = sitk.ReadImage(os.path.join(folder, name))
        assert np.allclose(image.GetSpacing(), SPACING_ZYX[::-1])
        assert np.allclose(image.GetOrigin(), ORIGIN_XYZ) and np.allclose(image.GetDirection(), DIRECTION)
    label = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(folder, "labelsTr", "case1.nii.gz")))
    source_label = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(source, "case1_seg.nii.gz")))
    np.testing.assert_array_equal(label, source_label // 5)  # 5 -> 1
    mr = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(folder, "imagesTr", "case1_0001.nii.gz")))
    np.testing.assert_array_equal(mr, sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(source, "case1_mr.nii.gz"))))
    assert result.spacings == {SPACING_ZYX: 4} and result.ndim == 3
    _verify(folder)


# --- refusals: every offending file named, nothing written -----------------------------------------

def _refused(raw, before=(), **kwargs):
    with pytest.raises(OnboardingError) as caught:
        onboard(dataset_id=kwargs.pop("dataset_id", 50), name="Bad", raw=raw, progress=False, **kwargs)
    assert _listing(raw) == sorted(before), "a refusal must leave nnUNet_raw untouched (no dataset, no temp folder)"
    return str(caught.value)


def _assert_lists(message, paths):
    for path in paths:
        assert str(path) in message, f"{path} missing from:\n{message}"


def test_refuses_unpaired_images_and_masks(tmp_path, raw):
    images, masks = make_grey_2d(tmp_path)
    for i in (1, 3):
        os.remove(os.path.join(masks, f"c{i}.png"))
    Image.fromarray(np.zeros(SHAPE, np.uint8)).save(os.path.join(masks, "orphan.png"))
    message = _refused(raw, images=images, masks=masks)
    _assert_lists(message, [os.path.join(images, "c1.png"), os.path.join(images, "c3.png"),
                            os.path.join(masks, "orphan.png")])
    assert "images without a mask" in message and "masks without an image" in message


def test_refuses_size_mismatches(tmp_path, raw):
    images, masks = make_grey_2d(tmp_path)
    for i in (2, 4):
        Image.fromarray(np.zeros((40, 64), np.uint8)).save(os.path.join(masks, f"c{i}.png"))
    message = _refused(raw, images=images, masks=masks)
    _assert_lists(message, [os.path.join(masks, "c2.png"), os.path.join(masks, "c4.png")])
    assert "size mismatch" in message and "(40, 64)" in message


def test_refuses_spacing_mismatches_of_masks_and_channels(tmp_path, raw):
    source = make_3d(tmp_path)
    seg = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(source, "case1_seg.nii.gz")))
    _write_volume(seg, os.path.join(source, "case1_seg.nii.gz"), spacing_zyx=(2.0, 0.8, 0.8))
    mr = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(source, "case2_mr.nii.gz")))
    _write_volume(mr, os.path.join(source, "case2_mr.nii.gz"), spacing_zyx=(3.0, 1.0, 1.0))
    message = _refused(raw, images=source, masks=None, image_pattern="{case}_{channel}.nii.gz",
                       mask_pattern="{case}_seg.nii.gz")
    _assert_lists(message, [os.path.join(source, "case1_seg.nii.gz"), os.path.join(source, "case2_mr.nii.gz")])
    assert "spacing mismatch" in message and "(2, 0.8, 0.8)" in message


def test_refuses_origin_and_direction_mismatches_but_not_rounding(tmp_path, raw):
    source = make_3d(tmp_path)
    seg = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(source, "case1_seg.nii.gz")))
    shifted = (ORIGIN_XYZ[0] + 20.0,) + ORIGIN_XYZ[1:]  # the labels would land 20 mm away
    _write_volume(seg, os.path.join(source, "case1_seg.nii.gz"), origin=shifted)
    rotated = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, -1.0)
    _write_volume(seg, os.path.join(source, "case2_seg.nii.gz"), direction=rotated)
    rounded = tuple(v + 1e-4 for v in ORIGIN_XYZ)  # an exporter's rounding: accepted
    _write_volume(seg, os.path.join(source, "case3_seg.nii.gz"), origin=rounded)
    message = _refused(raw, images=source, masks=None, image_pattern="{case}_{channel}.nii.gz",
                       mask_pattern="{case}_seg.nii.gz")
    _assert_lists(message, [os.path.join(source, f"case1_{role}.nii.gz") for role in ("ct", "mr", "seg")])
    _assert_lists(message, [os.path.join(source, "case2_seg.nii.gz")])
    assert "origin mismatch" in message and "differ by up to 20 mm" in message and "(10, 5, 2.5)" in message
    assert "direction mismatch" in message
    assert "case3" not in message and "case0" not in message


@pytest.mark.parametrize("ending", [".nii.gz", ".nrrd", ".mha"])
def test_refuses_truncated_compressed_files(tmp_path, raw, ending):
    """SimpleITK pads a truncated stream with zeros; the whole stream is read and its end checked."""
    folder = tmp_path / "volumes"
    folder.mkdir()
    for i in range(4):
        label = np.stack([_label_map(i + z) == 1 for z in range(3)]).astype(np.uint8)
        noise = np.random.default_rng(i).normal(0, 50, label.shape)  # incompressible enough to cut mid-stream
        for name, array in ((f"case{i}_ct", (label.astype(np.int16) * 400 + noise).astype(np.int16)), (f"case{i}_seg", label)):
            image = sitk.GetImageFromArray(array)
            image.SetSpacing(SPACING_ZYX[::-1])
            sitk.WriteImage(image, str(folder / (name + ending)), useCompression=True)
    cut = [folder / f"case1_ct{ending}", folder / f"case2_seg{ending}"]
    for path in cut:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - max(8, (len(data) - 600) // 3)])  # keep the header, lose the end
    message = _refused(raw, images=str(folder), masks=None, image_pattern="{case}_ct", mask_pattern="{case}_seg")
    _assert_lists(message, cut)
    assert "files that cannot be read or used" in message and "truncated or corrupt" in message
    assert "case0" not in message and "case3" not in message


def test_refuses_non_integer_labels(tmp_path, raw):
    source = make_3d(tmp_path)
    for i in (0, 3):
        path = os.path.join(source, f"case{i}_seg.nii.gz")
        _write_volume(sitk.GetArrayFromImage(sitk.ReadImage(path)).astype(np.float32) * 0.1, path)  # 0.5
    message = _refused(raw, images=source, masks=None, image_pattern="{case}_{channel}",
                       mask_pattern="{case}_seg")
    _assert_lists(message, [os.path.join(source, "case0_seg.nii.gz"), os.path.join(source, "case3_seg.nii.gz")])
    assert "non-integer" in message and "0.5" in message


def test_refuses_label_values_missing_from_the_mapping(tmp_path, raw):
    images, masks = make_grey_2d(tmp_path, binary_255=False)  # masks hold 0, 1, 2
    message = _refused(raw, images=images, masks=masks, labels=["background=0", "disk=1"])
    _assert_lists(message, [os.path.join(masks, f"c{i}.png") for i in range(6)])
    assert "unexpected label values" in message and "[2]" in message


@pytest.mark.parametrize("kind", ["missing channel file", "rgb among grey"])
def test_refuses_inconsistent_channel_counts(tmp_path, raw, kind):
    if kind == "missing channel file":
        source = make_3d(tmp_path)
        os.remove(os.path.join(source, "case2_mr.nii.gz"))
        message = _refused(raw, images=source, masks=None, image_pattern="{case}_{channel}.nii.gz",
                           mask_pattern="{case}_seg.nii.gz")
        offending = [os.path.join(source, "case2_ct.nii.gz")]
        which = "(channel files per case)"
    else:
        images, masks = make_grey_2d(tmp_path)
        for i in (1, 3):
            grey = np.asarray(Image.open(os.path.join(images, f"c{i}.png")))
            Image.fromarray(np.stack([grey] * 3, -1)).save(os.path.join(images, f"c{i}.png"))
        message = _refused(raw, images=images, masks=masks)
        offending = [os.path.join(images, "c1.png"), os.path.join(images, "c3.png")]
        which = "(colour/vector components per image file)"
    _assert_lists(message, offending)
    assert "inconsistent channel counts" in message
    assert f"inconsistent channel counts {which}" in message  # the check meant for this case fired


def test_refuses_an_existing_dataset_id_unless_overwrite(tmp_path, raw):
    images, masks = make_grey_2d(tmp_path)
    old = os.path.join(raw, "Dataset050_Old")
    os.makedirs(os.path.join(old, "imagesTr"))
    message = _refused(raw, before=["Dataset050_Old"], images=images, masks=masks)
    _assert_lists(message, [old])
    assert "--overwrite" in message
    result = onboard(images, masks, 50, "New", raw, overwrite=True, progress=False)
    assert _listing(raw) == ["Dataset050_New"] and result.replaced == [old]


def test_refuses_an_id_that_has_another_name_in_preprocessed(tmp_path, raw, monkeypatch):
    images, masks = make_grey_2d(tmp_path)
    preprocessed = tmp_path / "nnUNet_preprocessed"
    (preprocessed / "Dataset050_Other").mkdir(parents=True)
    monkeypatch.setenv("nnUNet_preprocessed", str(preprocessed))
    message = _refused(raw, images=images, masks=masks)
    _assert_lists(message, [preprocessed / "Dataset050_Other"])
    assert "has another name in nnUNet_preprocessed" in message


def test_a_failed_integrity_check_keeps_nothing(tmp_path, raw, monkeypatch):
    """nnU-Net's own check runs on the converted folder before it is moved into place."""
    from nnunet_dino.onboarding import build as integrity
    checked = []

    def failing_check(folder, num_processes):
        checked.append(sorted(os.listdir(folder)))
        raise AssertionError("simulated integrity failure")

    monkeypatch.setattr(integrity, "_integrity_check", failing_check)
    images, masks = make_grey_2d(tmp_path)
    with pytest.raises(ValueError, match="integrity check failed.*simulated integrity failure"):
        onboard(images, masks, 42, "Grey", raw, progress=False)
    assert checked and {"dataset.json", "imagesTr", "labelsTr"} <= set(checked[0])
    assert _listing(raw) == []


def test_overwrite_keeps_the_old_dataset_when_the_new_one_fails(tmp_path, raw, monkeypatch):
    from nnunet_dino.onboarding import build as integrity
    images, masks = make_grey_2d(tmp_path)
    onboard(images, masks, 50, "Grey", raw, progress=False)
    monkeypatch.setattr(integrity, "_integrity_check",
                        lambda folder, num_processes: (_ for _ in ()).throw(AssertionError("simulated")))
    with pytest.raises(ValueError, match="integrity check failed"):
        onboard(images, masks, 50, "Grey", raw, overwrite=True, progress=False)
    assert _listing(raw) == ["Dataset050_Grey"]
    monkeypatch.undo()  # the real check again: the old dataset is intact
    _verify(os.path.join(raw, "Dataset050_Grey"))


def test_all_problems_are_reported_together_and_cli_exit_code(tmp_path, raw, capsys):
    images, masks = make_grey_2d(tmp_path)
    os.remove(os.path.join(masks, "c0.png"))
    Image.fromarray(np.zeros((40, 64), np.uint8)).save(os.path.join(masks, "c5.png"))
    assert main(["onboard", images, masks, "-d", "52", "-n", "Bad", "--raw", raw, "-np", "1", "--no-progress"]) == 2
    error = capsys.readouterr().err
    _assert_lists(error, [os.path.join(images, "c0.png"), os.path.join(masks, "c5.png")])
    assert "nothing was written" in error and _listing(raw) == []


# --- findings (legal, suspicious) and files that hold more than one image ----------------------------

def test_findings_get_one_line_each_and_a_count_and_strict_refuses_them(tmp_path, raw, capsys):
    images, masks = make_grey_2d(tmp_path)
    Image.fromarray(np.ones(SHAPE, np.uint8)).save(os.path.join(images, "c1.png"))  # a wrong export
    Image.fromarray(np.zeros(SHAPE, np.uint8)).save(os.path.join(masks, "c2.png"))  # a negative case
    argv = ["onboard", images, masks, "-d", "53", "-n", "Odd", "--raw", raw, "-np", "1", "--no-progress"]
    assert main(argv + ["--strict"]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "constant or near-constant images (refused by --strict)" in error and _listing(raw) == []
    assert "empty masks (background only) (refused by --strict)" in error
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "findings (2, not errors; --strict refuses them):" in out
    assert f"constant or near-constant images: {os.path.join(images, 'c1.png')} (1 in 100.00 % of the voxels)" in out
    assert f"empty masks (background only): {os.path.join(masks, 'c2.png')}" in out
    record = json.load(open(os.path.join(raw, "Dataset053_Odd", "onboarding_record.json")))
    assert [f["kind"] for f in record["findings"]] == ["constant or near-constant images", "empty masks (background only)"]


def test_names_equal_up_to_letter_case_are_refused(tmp_path, raw):
    images, masks = make_grey_2d(tmp_path)
    for folder in (images, masks):
        os.rename(os.path.join(folder, "c3.png"), os.path.join(folder, "C1.png"))
    message = _refused(raw, images=images, masks=masks)
    _assert_lists(message, [os.path.join(images, "c1.png"), os.path.join(images, "C1.png")])
    assert "case names equal up to letter case" in message and "case-insensitive file system" in message
    assert "c2.png" not in message


def test_nan_and_infinite_voxels_are_counted_per_image(tmp_path, raw):
    """As MetaImage: SimpleITK's NIfTI writer turns NaN and infinities into 0."""
    source = make_3d(tmp_path)
    for case, bad in ((1, np.nan), (2, np.inf)):
        path = os.path.join(source, f"case{case}_mr.nii.gz")
        mr = sitk.GetArrayFromImage(sitk.ReadImage(path))
        mr[0, :2, 0] = bad
        os.remove(path)
        _write_volume(mr, path.replace(".nii.gz", ".mha"))
    message = _refused(raw, images=source, masks=None, image_pattern="{case}_{channel}", mask_pattern="{case}_seg")
    _assert_lists(message, [os.path.join(source, "case1_mr.mha"), os.path.join(source, "case2_mr.mha")])
    assert "images with NaN or infinite values" in message
    assert "2 NaN, 0 infinite voxel(s)" in message and "0 NaN, 2 infinite voxel(s)" in message


def test_4d_and_stacked_channel_files_are_named_with_the_split(tmp_path, raw):
    source = make_3d(tmp_path)
    path = os.path.join(source, "case1_ct.nii.gz")
    volume = sitk.ReadImage(path)
    sitk.WriteImage(sitk.JoinSeries([volume] * 5), path)  # x y z t
    message = " ".join(_refused(raw, images=source, masks=None, image_pattern="{case}_{channel}",
                                mask_pattern="{case}_seg").split())
    _assert_lists(message, [path])
    assert "4D image (64 x 48 x 3 x 5 voxels" in message and "CASE_0000.nii.gz, CASE_0001.nii.gz" in message
    assert "size mismatch" not in message

    (tmp_path / "grey").mkdir()
    images, masks = make_grey_2d(tmp_path / "grey")
    grey = np.asarray(Image.open(os.path.join(images, "c1.png")))
    os.remove(os.path.join(images, "c1.png"))
    _write_volume(np.stack([grey, grey]), os.path.join(images, "c1.nii.gz"))  # two channels in one file
    message = " ".join(_refused(raw, images=images, masks=masks).split())
    _assert_lists(message, [os.path.join(images, "c1.nii.gz")])
    assert "images holding several channels (or time points) in one file" in message and "CASE_0001" in message


# --- building blocks ---------------------------------------------------------------------------------

def test_name_patterns_and_label_plans(tmp_path):
    assert NamePattern("{case}_{channel}.nii.gz", "image").match("sub_01_t1.nii.gz") == ("sub_01", "t1")
    assert NamePattern(r"(?P<case>\d+)-(?P<channel>[a-z]+)\.png", "image").match("007-flair.png") == ("007", "flair")
    assert NamePattern("{case}_seg", "mask").match("a_b.png") is None
    with pytest.raises(ValueError, match="exactly once"):
        NamePattern("{channel}.png", "image")
    assert parse_label_mapping(["bg=0", "tumour=255"]) == {"bg": 0, "tumour": 255}
    with pytest.raises(ValueError, match="not an integer"):
        parse_label_mapping(["tumour=1.5"])
    with pytest.raises(ValueError, match="more than once"):
        parse_label_mapping(["a=1", "b=1"])
    plan = plan_labels({"bg": 0, "ignore": 99, "tumour": 255, "cyst": 128}, [0, 128, 255, 99])
    assert plan.labels == {"background": 0, "cyst": 1, "tumour": 2, "ignore": 3}  # ignore last, as nnU-Net wants
    assert plan.mask_to_label == {0: 0, 128: 1, 255: 2, 99: 3}
    inferred = plan_labels(None, [0, 3, 7])
    assert inferred.labels == {"background": 0, "label_3": 1, "label_7": 2} and inferred.inferred


def test_next_steps_fit_the_data():
    from types import SimpleNamespace
    from nnunet_dino.onboarding.summary import next_commands
    few = "\n".join(next_commands(SimpleNamespace(dataset_id=7, ndim=3, num_training=3)))
    assert "nnUNetv2_train 7 2d all" in few and "crossval" not in few and "nnUNet_dino_weights" in few
    assert "-c 2d " in few and "-c 2d 3d_fullres" not in few  # DINO trainers use 2d; 3d_fullres is nnU-Net's own
    many = "\n".join(next_commands(SimpleNamespace(dataset_id=7, ndim=2, num_training=12)))
    assert "nnunet-dino crossval -d 7" in many and "2d all" not in many
