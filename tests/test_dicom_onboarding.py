"""`onboard` takes DICOM as it arrives: a case as a folder of slices (one series) and its mask as a DICOM-SEG
drawn on that series (or as today's files); a folder of two series, a missing slice, a SEG of another series
and RTSTRUCT contours are refused with the fix. The series are written here, a few 16 x 20 slices each."""
import json
import locale
import os

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from nnunet_dino.onboarding import OnboardingError, onboard

ROWS, COLUMNS = 16, 20
PIXEL_SPACING = (0.7, 0.8)          # rows (y), columns (x), mm
SLICE_SPACING = 2.0
ORIGIN = (-5.0, 3.0, 10.0)
STUDY = "1.2.826.0.1.3680043.8.498.100"
FRAME_OF_REFERENCE = "1.2.826.0.1.3680043.8.498.101"


def series_uid(case: int) -> str:
    return f"1.2.826.0.1.3680043.8.498.{200 + case}"


def _labels(case: int, slices: int) -> np.ndarray:
    labels = np.zeros((slices, ROWS, COLUMNS), np.uint8)
    labels[1:3, 4 + case:10 + case, 5:12] = 1
    return labels


def write_series(folder, case: int, slices: int = 4, skip=None, uid=None, description="axial"):
    """A CT series of `slices` slices (slice `skip` left out), files named against their order."""
    os.makedirs(folder, exist_ok=True)
    uid = uid or series_uid(case)
    labels = _labels(case, slices)
    rng = np.random.default_rng(case)
    for i in range(slices):
        if i == skip:
            continue
        pixels = (labels[i:i + 1].astype(np.int16) * 300 + rng.integers(0, 40, (1, ROWS, COLUMNS))).astype(np.int16)
        image = sitk.GetImageFromArray(pixels)
        z = ORIGIN[2] + i * SLICE_SPACING
        tags = {"0008|0016": "1.2.840.10008.5.1.4.1.1.2", "0008|0018": f"{uid}.{i + 1}", "0008|0060": "CT",
                "0008|103e": description, "0010|0020": "P1", "0020|000d": STUDY, "0020|000e": uid,
                "0020|0052": FRAME_OF_REFERENCE, "0020|0013": str(i + 1),
                "0020|0032": f"{ORIGIN[0]}\\{ORIGIN[1]}\\{z}", "0020|0037": "1\\0\\0\\0\\1\\0",
                "0028|0030": f"{PIXEL_SPACING[0]}\\{PIXEL_SPACING[1]}", "0018|0050": str(SLICE_SPACING)}
        for key, value in tags.items():
            image.SetMetaData(key, value)
        image.SetSpacing((PIXEL_SPACING[1], PIXEL_SPACING[0], SLICE_SPACING))
        image.SetOrigin((ORIGIN[0], ORIGIN[1], z))
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(os.path.join(folder, f"IM{(7 * i) % 11:04d}.dcm"))  # names out of slice order
        process_locale = locale.setlocale(locale.LC_ALL)
        try:
            writer.Execute(image)
        finally:  # GDCM's writer leaves the process in the C locale: later text I/O would be ASCII
            locale.setlocale(locale.LC_ALL, process_locale)
    return str(folder)


def write_seg(path, series_folder, labels: np.ndarray):
    """A DICOM-SEG (highdicom) of binary `labels` on the slices of the series in `series_folder`."""
    import highdicom as hd
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series_folder))
    sources = [pydicom.dcmread(f) for f in files]
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label="lesion",
        segmented_property_category=hd.sr.CodedConcept("49755003", "SCT", "Morphologically abnormal structure"),
        segmented_property_type=hd.sr.CodedConcept("108369006", "SCT", "Neoplasm"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(source_images=sources, pixel_array=labels.astype(bool),
                              segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[segment],
                              series_instance_uid=hd.UID(), series_number=2, sop_instance_uid=hd.UID(),
                              instance_number=1, manufacturer="test", manufacturer_model_name="test",
                              software_versions="0", device_serial_number="0")
    seg.save_as(str(path))
    return str(path)


def write_rtstruct(path):
    """The header of an RT Structure Set: enough to be recognised (and refused)."""
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.300"
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = pydicom.dataset.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = "RTSTRUCT", STUDY, "1.2.826.0.1.3680043.8.498.301"
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    return str(path)


def nifti_mask_on(series_folder, labels: np.ndarray, path):
    """A NIfTI mask with the geometry SimpleITK reads for the series (today's mask format)."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series_folder)))
    mask = sitk.GetImageFromArray(labels)
    mask.CopyInformation(reader.Execute())
    sitk.WriteImage(mask, str(path))
    return str(path)


@pytest.fixture
def raw(tmp_path, monkeypatch):
    for var in ("nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(var, raising=False)
    folder = tmp_path / "raw"
    folder.mkdir()
    return str(folder)


def two_cases(tmp_path):
    """images/c0/ and images/c1/ (series); masks/c0.dcm (SEG) and masks/c1.nii.gz."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    masks.mkdir()
    for case in (0, 1):
        write_series(images / f"c{case}", case)
    write_seg(masks / "c0.dcm", images / "c0", _labels(0, 4))
    nifti_mask_on(images / "c1", _labels(1, 4), masks / "c1.nii.gz")
    return images, masks


def _refusal(raw, images, masks):
    with pytest.raises(OnboardingError) as caught:
        onboard(str(images), str(masks), 70, "Bad", raw, progress=False)
    assert os.listdir(raw) == []
    return " ".join(str(caught.value).split())


def test_series_folders_and_a_seg_become_nifti_cases_on_the_series_grid(tmp_path, raw):
    images, masks = two_cases(tmp_path)
    (images / "thumbnails").mkdir()  # a sub-folder without DICOM files is not a case
    (images / "thumbnails" / "c0.png").write_bytes(b"not DICOM")
    result = onboard(str(images), str(masks), 70, "Dicom", raw, progress=False)
    folder = result.folder
    assert sorted(os.listdir(os.path.join(folder, "imagesTr"))) == ["c0_0000.nii.gz", "c1_0000.nii.gz"]
    assert result.file_ending == ".nii.gz" and result.ndim == 3
    for case in (0, 1):
        image = sitk.ReadImage(os.path.join(folder, "imagesTr", f"c{case}_0000.nii.gz"))
        assert image.GetSize() == (COLUMNS, ROWS, 4)
        assert np.allclose(image.GetSpacing(), (PIXEL_SPACING[1], PIXEL_SPACING[0], SLICE_SPACING))
        assert np.allclose(image.GetOrigin(), ORIGIN)
        pixels = sitk.GetArrayFromImage(image)
        assert (pixels[1:3][_labels(case, 4)[1:3] == 1] >= 300).all() and (pixels[0] < 40).all()  # slices in order
        label = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(folder, "labelsTr", f"c{case}.nii.gz")))
        np.testing.assert_array_equal(label, _labels(case, 4))  # the SEG lands on its slices
    record = json.load(open(os.path.join(folder, "onboarding_record.json")))
    assert record["cases"]["c0"]["source_series_uids"] == [series_uid(0)]
    assert record["cases"]["c1"]["source_series_uids"] == [series_uid(1)]


def test_a_missing_slice_is_refused(tmp_path, raw):
    images, masks = two_cases(tmp_path)
    for name in os.listdir(images / "c1"):
        os.remove(images / "c1" / name)
    write_series(images / "c1", 1, slices=5, skip=2)
    message = _refusal(raw, images, masks)
    assert os.path.join(str(images), "c1/") in message and "uneven slice spacing" in message
    assert "4 mm after slice 2" in message and "c0/" not in message


def test_two_series_in_one_folder_are_named_and_refused(tmp_path, raw):
    images, masks = two_cases(tmp_path)
    write_series(tmp_path / "other", 0, uid="1.2.826.0.1.3680043.8.498.299", description="scout")
    for name in os.listdir(tmp_path / "other"):
        os.rename(tmp_path / "other" / name, images / "c0" / f"scout_{name}")
    message = _refusal(raw, images, masks)
    assert "2 DICOM series in one folder" in message and "Move each series into a folder of its own" in message
    assert series_uid(0) in message and "1.2.826.0.1.3680043.8.498.299" in message and "scout" in message


def test_a_seg_of_another_series_is_refused(tmp_path, raw):
    images, masks = two_cases(tmp_path)
    write_seg(masks / "c0.dcm", images / "c1", _labels(1, 4))  # drawn on c1's series
    message = _refusal(raw, images, masks)
    assert os.path.join(str(masks), "c0.dcm") in message
    assert f"drawn on series {series_uid(1)}" in message and f"is series {series_uid(0)}" in message


def test_rtstruct_masks_are_refused_with_how_to_convert_them(tmp_path, raw):
    images, masks = two_cases(tmp_path)
    write_rtstruct(masks / "c0.dcm")
    message = _refusal(raw, images, masks)
    assert "RTSTRUCT (contours) is not supported" in message and "plastimatch convert" in message
