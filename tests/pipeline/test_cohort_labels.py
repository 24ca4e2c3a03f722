"""A site's labelling package read for training: every bad labels file is refused with a reason
that names the rows; the split keeps a patient's studies together, both classes in each part."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.training.cohort import read_cohort, split_by_patient
from pipeline.training.cohort_train import plan_cohort_training
from pipeline.training.data import DataError
from tests.cohort_package import PackagedStudy, rewrite_labels, write_cohort_package


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[PackagedStudy]]:
    out = tmp_path_factory.mktemp("cohort") / "package"
    return out, write_cohort_package(out, per_class=4, matrix=48, slices=20)


def _refused(folder: Path, labels: Path) -> DataError:
    with pytest.raises(DataError) as err:
        read_cohort(folder, labels)
    return err.value


def test_the_exported_package_reads_as_labelled_slices(
    package: tuple[Path, list[PackagedStudy]],
) -> None:
    folder, studies = package
    cohort = read_cohort(folder, Path("labels.csv"))  # a name inside the package
    assert read_cohort(folder).labels_file == folder / "labels.csv"  # the default
    assert [c.study_uid for c in cohort.cases] == [s.study_uid for s in studies]
    assert [c.case.label for c in cohort.cases] == [s.label for s in studies]
    assert cohort.readers == ["alice", "bob"]
    assert cohort.counts == {
        "studies": 8,
        "studies_cirrhosis": 4,
        "studies_no_cirrhosis": 4,
        "patients": 7,  # P0 has two studies
        "patients_cirrhosis": 4,
        "patients_no_cirrhosis": 3,
    }
    first = cohort.cases[0]
    with np.load(folder / "studies" / first.study_uid / "slice.npz") as data:
        assert np.array_equal(first.case.image, data["image"])
        assert np.array_equal(first.case.mask, data["mask"] != 0)
        spacing = tuple(float(v) for v in data["pixel_spacing"])
    # spacing and matrix go into the bundle's training distribution (input drift)
    assert first.case.acquisition is not None
    assert first.case.acquisition.pixel_spacing_mm == spacing
    assert (first.case.acquisition.rows, first.case.acquisition.columns) == first.case.image.shape
    assert first.case.acquisition.manufacturer is None  # the package keeps no header values
    # bob did not read study 4: no read rather than a wrong one
    assert "bob" not in cohort.cases[4].readers
    assert cohort.cases[4].readers["alice"] == studies[4].label


@pytest.mark.parametrize(
    ("edit", "drop", "code", "words"),
    [
        ({2: {"label": "2"}}, "", "labels_value", ["row 4", "label '2' is not 0 or 1"]),
        ({0: {"label": "cirrhosis"}}, "", "labels_value", ["row 2", "'cirrhosis'"]),
        ({1: {"label": ""}}, "", "labels_value", ["row 3", "label is empty", "delete the rows"]),
        ({3: {"reader_bob": "maybe"}}, "", "labels_value", ["row 5", "reader_bob 'maybe'"]),
        ({3: {"patient_key": ""}}, "", "labels_value", ["row 5", "patient_key is empty"]),
        ({}, "patient_key", "labels_columns", ["missing column(s) patient_key"]),
        ({}, "label", "labels_columns", ["missing column(s) label"]),
        (
            {5: {"study_uid": "1.2.3.999"}},
            "",
            "labels_unknown",
            ["1 study UID(s) not in the package", "row 7: 1.2.3.999"],
        ),
        (
            {1: {"accession": "OTHER42"}},
            "",
            "labels_unknown",
            ["accession(s) that do not match", "'OTHER42'"],
        ),
    ],
)
def test_a_bad_labels_file_is_refused_naming_the_rows(
    package: tuple[Path, list[PackagedStudy]],
    tmp_path: Path,
    edit: dict[int, dict[str, str]],
    drop: str,
    code: str,
    words: list[str],
) -> None:
    folder, _ = package
    labels = rewrite_labels(folder / "labels.csv", tmp_path / "filled.csv", edit, drop)
    err = _refused(folder, labels)
    assert err.code == code
    for word in words:
        assert word in err.message


def test_a_study_listed_twice_is_refused(
    package: tuple[Path, list[PackagedStudy]], tmp_path: Path
) -> None:
    folder, studies = package
    labels = rewrite_labels(
        folder / "labels.csv",
        tmp_path / "twice.csv",
        {2: {"study_uid": studies[1].study_uid, "accession": studies[1].accession}},
    )
    err = _refused(folder, labels)
    assert err.code == "labels_duplicate"
    assert "row 4" in err.message
    assert "also on row 3" in err.message


def test_missing_files_and_folders_are_named(
    package: tuple[Path, list[PackagedStudy]], tmp_path: Path
) -> None:
    folder, _ = package
    assert _refused(folder, tmp_path / "none.csv").code == "labels_missing"
    assert _refused(tmp_path, folder / "labels.csv").code == "cohort_missing"
    # a slice file deleted from a copy of the package: its study is unknown there
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    studies = sorted((copy / "studies").iterdir())
    (studies[0] / "slice.npz").unlink()
    err = _refused(copy, copy / "labels.csv")
    assert err.code == "labels_unknown"
    assert studies[0].name in err.message


def test_too_few_patients_of_a_class_cannot_be_trained(
    package: tuple[Path, list[PackagedStudy]], tmp_path: Path
) -> None:
    folder, _ = package
    # every study labelled 0 but two (one of them P0's): 2 patients of class 1
    edit = {n: {"label": "0"} for n in range(8)}
    edit[1] = {"label": "1"}
    edit[3] = {"label": "1"}
    labels = rewrite_labels(folder / "labels.csv", tmp_path / "few.csv", edit)
    cohort = read_cohort(folder, labels)
    with pytest.raises(DataError) as err:
        plan_cohort_training(cohort, seed=0)
    assert err.value.code == "labels_too_few"
    assert "2 patient(s) labelled 1" in err.value.message
    assert "at least 3 patients of each class" in err.value.message


def test_the_split_is_by_patient_stratified_and_seeded(
    package: tuple[Path, list[PackagedStudy]],
) -> None:
    folder, studies = package
    cohort = read_cohort(folder, folder / "labels.csv")
    split = split_by_patient(cohort, seed=3)
    assert split == split_by_patient(cohort, seed=3)
    parts = [split.train, split.val, split.test]
    assert sorted(uid for part in parts for uid in part) == sorted(s.study_uid for s in studies)
    patient = {s.study_uid: s.patient_key for s in studies}
    label = {s.study_uid: s.label for s in studies}
    for part in parts:
        others = [p for p in parts if p is not part]
        mine = {patient[u] for u in part}
        assert not mine & {patient[u] for p in others for u in p}  # a patient in one part only
    for part in (split.val, split.test):
        assert {label[u] for u in part} == {0, 1} or len({patient[u] for u in part}) == 1
    # P0's two studies travel together
    p0 = [s.study_uid for s in studies if s.patient_key == "P0"]
    assert any(set(p0) <= set(part) for part in parts)
    plan = plan_cohort_training(cohort, seed=3)
    assert plan.parts["train"]["studies"] + plan.parts["val"]["studies"] + plan.parts["test"][
        "studies"
    ] == len(studies)
    assert all(plan.parts[p]["cirrhosis"] >= 1 for p in ("train", "val", "test"))
    assert all(plan.parts[p]["no_cirrhosis"] >= 1 for p in ("train", "val", "test"))
