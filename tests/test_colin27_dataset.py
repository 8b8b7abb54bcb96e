"""The Colin27 + AAL converter (`nnunet-dino make-dataset colin27`): the grouping is a documented
partition of AAL, the slabs are valid nnU-Net cases split without overlap, nnU-Net accepts and plans
the dataset axially, and it refuses to overwrite, leaves nothing half-written and says how to get the data.

These tests need Debian's `mricron-data`. They fail, never skip, without it: CI installs it.
"""
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_dino.cli import main as cli_main
from nnunet_dino.datasets import colin27
from nnunet_dino.datasets.colin27 import (
    ATLAS_NAMES_FILE, CONVERSION_JSON, EXCLUDED_AAL_REGIONS, GROUPINGS, IMAGE_FILE, MRICRON_DIR_ENV_VAR, STRUCTURES,
    AalRegion, MricronDataMissingError, StructureRule, find_mricron_templates, group_regions,
    make_colin27_dataset, plan_slabs, read_aal_regions, require_mricron_templates)

SLAB, TEST_SLABS, DOWNSAMPLE = 6, 4, 2  # 20 + 4 cases of 3 x 98 x 81 at 2 mm: about a second to write


@pytest.fixture(scope="module")
def templates():
    try:
        return require_mricron_templates()
    except MricronDataMissingError as error:
        pytest.fail(f"{error} (these tests must run: CI installs mricron-data)", pytrace=False)


@pytest.fixture(scope="module")
def dataset(templates, tmp_path_factory):
    raw = str(tmp_path_factory.mktemp("raw"))
    result = make_colin27_dataset(raw, 901, slab=SLAB, test_slabs=TEST_SLABS, downsample=DOWNSAMPLE)
    return result


def _cases(folder, split):
    return sorted(f[:-len(".nii.gz")] for f in os.listdir(os.path.join(folder, f"labels{split}")))


# --- the grouping ---------------------------------------------------------------------------------
def test_grouping_partitions_all_116_aal_regions(templates):
    regions = read_aal_regions(os.path.join(templates, ATLAS_NAMES_FILE))
    assert [r.index for r in regions] == list(range(1, 117))
    mapping = group_regions(regions)
    assert EXCLUDED_AAL_REGIONS == ()  # documented: nothing is left out
    assert sorted(mapping) == list(range(1, 117))  # every region, exactly once (group_regions checks "once")
    assert sorted(set(mapping.values())) == list(range(1, len(STRUCTURES) + 1))  # no empty structure
    assert 8 <= len(STRUCTURES) <= 14
    by_name = {r.name: STRUCTURES[mapping[r.index] - 1].name for r in regions}
    expected = {"Precentral_L": "frontal_L", "Rectus_R": "frontal_R", "Postcentral_L": "parietal_L",
                "Precuneus_R": "parietal_R", "Heschl_L": "temporal_L", "Temporal_Pole_Mid_R": "temporal_R",
                "Fusiform_L": "occipital_L", "Calcarine_R": "occipital_R", "Insula_L": "limbic_insula_L",
                "Amygdala_R": "limbic_insula_R", "Thalamus_L": "deep_grey_L", "Pallidum_R": "deep_grey_R",
                "Cerebelum_Crus1_L": "cerebellum", "Cerebelum_10_R": "cerebellum", "Vermis_4_5": "cerebellum"}
    assert {k: by_name[k] for k in expected} == expected
    for region in regions:  # hemispheres never cross; only the cerebellum (vermis included) spans both
        structure = by_name[region.name]
        assert structure == "cerebellum" if region.lobe == 9 else structure.endswith(f"_{region.side}")


def test_grouping_rejects_gaps_and_overlaps():
    regions = [AalRegion(1, "Precentral_L", 2001), AalRegion(2, "Insula_L", 3001)]
    with pytest.raises(ValueError, match="Insula_L .* matches 0"):
        group_regions(regions, [StructureRule("frontal_L", (2,), "L", "")])
    with pytest.raises(ValueError, match="Precentral_L .* matches 2"):
        group_regions(regions, [StructureRule("a", (2, 3), "L", ""), StructureRule("b", (2,), None, "")])


def test_the_demo_grouping_is_bilateral_cerebral_grey_matter_and_cerebellum(templates, tmp_path):
    """nnU-Net's 2d augmentation mirrors left and right, so the demo's structures span both sides."""
    regions = read_aal_regions(os.path.join(templates, ATLAS_NAMES_FILE))
    mapping = group_regions(regions, GROUPINGS["grey"])
    names = {r.name: GROUPINGS["grey"][mapping[r.index] - 1].name for r in regions}
    assert sorted(mapping) == list(range(1, 117)) and all(rule.side is None for rule in GROUPINGS["grey"])
    cerebral = ("Precentral_L", "Insula_R", "Hippocampus_L", "Temporal_Pole_Mid_R", "Caudate_L", "Thalamus_R")
    assert {names[k] for k in cerebral} == {"cerebral_grey_matter"}
    assert {names[k] for k in ("Cerebelum_Crus1_L", "Cerebelum_10_R", "Vermis_4_5")} == {"cerebellum"}
    built = make_colin27_dataset(str(tmp_path), 907, downsample=3, test_slabs=3, grouping="grey")
    assert built.labels == {"background": 0, "cerebral_grey_matter": 1, "cerebellum": 2}
    assert json.load(open(os.path.join(built.folder, CONVERSION_JSON)))["grouping"]["name"] == "grey"
    assert not built.missing_classes("train") and not built.missing_classes("test")
    with pytest.raises(ValueError, match="unknown grouping 'lobe'.*lobes, grey"):
        make_colin27_dataset(str(tmp_path), 908, grouping="lobe")


# --- slabs and split ------------------------------------------------------------------------------
def test_plan_slabs_is_contiguous_disjoint_and_spreads_the_test_slabs():
    slabs = plan_slabs(10, 155, 6, 4)
    assert len(slabs) == 24 and [s.split for s in slabs].count("test") == 4
    assert all(b.z_start == a.z_stop for a, b in zip(slabs, slabs[1:]))
    assert slabs[0].z_start - 10 == 155 - (slabs[-1].z_stop - 1)  # leftover slices split at both ends
    assert [s.index for s in slabs if s.split == "test"] == [3, 9, 15, 21]
    with pytest.raises(ValueError, match="test"):
        plan_slabs(10, 155, 50, 4)
    assert [s.split for s in plan_slabs(10, 155, 6, 0)] == ["train"] * 24  # every slab trains
    with pytest.raises(ValueError, match="--test-slabs must be 0 or more"):
        plan_slabs(10, 155, 6, -1)


def test_cases_are_paired_3d_slabs_with_one_geometry(dataset):
    folder = dataset.folder
    for split in ("Tr", "Ts"):
        cases = _cases(folder, split)
        assert sorted(f[:-len("_0000.nii.gz")] for f in os.listdir(os.path.join(folder, f"images{split}"))) == cases
        for case in cases:
            image = sitk.ReadImage(os.path.join(folder, f"images{split}", f"{case}_0000.nii.gz"))
            label = sitk.ReadImage(os.path.join(folder, f"labels{split}", f"{case}.nii.gz"))
            assert image.GetSize() == label.GetSize() == (81, 98, SLAB // DOWNSAMPLE)  # (x, y, z)
            assert image.GetSpacing() == label.GetSpacing() == (2.0, 2.0, 2.0)
            assert image.GetOrigin() == label.GetOrigin() and image.GetDirection() == label.GetDirection()
            assert label.GetPixelID() == sitk.sitkUInt8
    assert (len(_cases(folder, "Tr")), len(_cases(folder, "Ts"))) == (20, TEST_SLABS)
    # nnU-Net's 2d configuration slices along the axis of largest spacing (first one on ties): z here
    assert int(np.argmax(dataset.spacing_zyx)) == 0


def test_slabs_sit_where_the_source_says(dataset, templates):
    """Resampling ch2 (trilinear) onto a written case's grid gives back the case: origin, spacing and
    the 2 mm block means agree, so the metadata is right."""
    source = sitk.ReadImage(os.path.join(templates, IMAGE_FILE), sitk.sitkFloat32)
    for split, case in (("Tr", "colin27_slab00"), ("Ts", "colin27_slab09")):
        image = sitk.ReadImage(os.path.join(dataset.folder, f"images{split}", f"{case}_0000.nii.gz"))
        resampled = sitk.Resample(source, image, sitk.Transform(), sitk.sitkLinear)
        np.testing.assert_allclose(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(resampled), atol=1e-3)


def test_every_class_is_trained_and_tested_and_test_slabs_are_disjoint(dataset):
    folder, n = dataset.folder, len(STRUCTURES) + 1
    for split in ("Tr", "Ts"):
        present = np.zeros(n, bool)
        for case in _cases(folder, split):
            label = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(folder, f"labels{split}", f"{case}.nii.gz")))
            present[np.unique(label)] = True
        assert present.all(), (split, np.flatnonzero(~present))
    conversion = json.load(open(os.path.join(folder, CONVERSION_JSON)))
    train = [s for s in conversion["slabs"] if s["split"] == "train"]
    test = [s for s in conversion["slabs"] if s["split"] == "test"]
    assert {s["case"] for s in train} == set(_cases(folder, "Tr"))
    assert {s["case"] for s in test} == set(_cases(folder, "Ts"))
    train_z = {z for s in train for z in range(*s["source_z"])}
    assert all(not train_z & set(range(*s["source_z"])) for s in test)
    z_extent = {}  # the same in physical space, from the files themselves
    for split in ("Tr", "Ts"):
        for case in _cases(folder, split):
            image = sitk.ReadImage(os.path.join(folder, f"labels{split}", f"{case}.nii.gz"))
            z0 = image.GetOrigin()[2]
            z_extent[split, case] = (z0, z0 + image.GetSpacing()[2] * (image.GetSize()[2] - 1))
    for (split, _), (lo, hi) in z_extent.items():
        if split == "Ts":
            assert all(h < lo or l > hi for (s, _), (l, h) in z_extent.items() if s == "Tr")
    assert conversion["voxels_per_class"] == dataset.voxels_per_class
    assert len(conversion["grouping"]["structures"]) == len(STRUCTURES)
    assert sum(len(s["aal_regions"]) for s in conversion["grouping"]["structures"]) == 116


# --- nnU-Net accepts it ---------------------------------------------------------------------------
def test_dataset_json_passes_nnunet_integrity_check_and_plans_axially(dataset, monkeypatch, tmp_path):
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    meta = json.load(open(os.path.join(dataset.folder, "dataset.json")))
    assert meta["channel_names"] == {"0": "T1"} and meta["numTraining"] == 20
    assert list(meta["labels"].values()) == list(range(len(STRUCTURES) + 1))
    assert "Holmes" in meta["reference"] and "Tzourio-Mazoyer" in meta["reference"] and meta["licence"]
    verify_dataset_integrity(dataset.folder, num_processes=1)

    monkeypatch.setenv("nnUNet_raw", os.path.dirname(dataset.folder))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    monkeypatch.delenv("nnUNet_n_proc_DA", raising=False)  # 0 crashes the planner
    extract_fingerprint_dataset(901, num_processes=1, verbose=False, show_progress_bar=False)
    plans = ExperimentPlanner(901).plan_experiment()
    assert plans["transpose_forward"] == [0, 1, 2]  # 2d slices are axial
    config = plans["configurations"]["2d"]
    assert config["normalization_schemes"] == ["ZScoreNormalization"]
    assert config["spacing"] == [2.0, 2.0] and config["median_image_size_in_voxels"] == [98.0, 81.0]


# --- refusals, atomicity, missing data, CLI --------------------------------------------------------
def test_refuses_to_overwrite_and_replaces_only_when_asked(templates, tmp_path):
    raw = str(tmp_path)
    first = make_colin27_dataset(raw, 902, downsample=3, test_slabs=3)
    marker = os.path.join(first.folder, "marker.txt")
    open(marker, "w").close()
    with pytest.raises(FileExistsError, match="overwrite"):
        make_colin27_dataset(raw, 902, downsample=3, test_slabs=3)
    with pytest.raises(FileExistsError, match="already used"):  # same id, other name: never touched
        make_colin27_dataset(raw, 902, name="Other", downsample=3, overwrite=True)
    assert os.path.exists(marker)
    make_colin27_dataset(raw, 902, downsample=3, test_slabs=3, overwrite=True)
    assert not os.path.exists(marker)
    assert os.listdir(raw) == [os.path.basename(first.folder)]  # no temporary or replaced folders left


def test_a_failure_leaves_no_half_written_folder(templates, tmp_path, monkeypatch):
    raw = str(tmp_path)
    kept = make_colin27_dataset(raw, 903, downsample=3, test_slabs=3)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr(colin27, "_write_metadata", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        make_colin27_dataset(raw, 904, downsample=3, test_slabs=3)
    with pytest.raises(RuntimeError, match="disk full"):
        make_colin27_dataset(raw, 903, downsample=3, test_slabs=3, overwrite=True)
    assert os.listdir(raw) == [os.path.basename(kept.folder)]
    assert os.path.isfile(os.path.join(kept.folder, "dataset.json"))


def test_missing_data_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(MRICRON_DIR_ENV_VAR, str(empty))
    assert find_mricron_templates() is None
    with pytest.raises(MricronDataMissingError) as error:
        make_colin27_dataset(str(tmp_path / "raw"), 905)
    assert "sudo apt-get install mricron-data" in str(error.value) and "synthetic" in str(error.value)
    assert str(empty) in str(error.value)
    assert not (tmp_path / "raw").exists()
    assert cli_main(["make-dataset", "colin27", "--raw", str(tmp_path / "raw")]) == 2
    assert "apt-get install mricron-data" in capsys.readouterr().err


def test_env_var_points_at_another_copy(templates, tmp_path, monkeypatch):
    for name in colin27.REQUIRED_FILES:
        os.symlink(os.path.join(templates, name), tmp_path / name)
    monkeypatch.setenv(MRICRON_DIR_ENV_VAR, str(tmp_path))
    assert find_mricron_templates() == str(tmp_path)


def test_cli_prints_the_summary_and_next_commands(templates, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_raw", str(tmp_path))
    assert cli_main(["make-dataset", "colin27", "--id", "906", "--downsample", "3", "--test-slabs", "3"]) == 0
    out = capsys.readouterr().out
    assert os.path.isdir(tmp_path / "Dataset906_Colin27AAL3mm")
    assert "21 training + 3 test slabs" in out and "3 x 3 x 3 mm" in out and "cerebellum" in out
    assert "nnUNetv2_plan_and_preprocess -d 906 -c 2d" in out and "nnUNetv2_train 906 2d" in out
