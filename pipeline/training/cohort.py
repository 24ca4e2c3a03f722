"""A site's labelling package (``liver-agent cohort export``) read as labelled classifier cases.

The package: ``OUT/labels.csv`` (``accession,patient_key,study_uid,series_uid,sop_uid,
slice_index,predicted_probability,label`` and optional ``reader_<name>`` columns) and, per
study, ``OUT/studies/<study_uid>/slice.npz`` with ``image`` (float32 caudate-level slice),
``mask`` (uint8 liver mask), ``above``, ``below`` and ``pixel_spacing``. The readers fill
``label`` (1 = cirrhosis, 0 = no cirrhosis) in that file or a copy of it; this module checks
what they wrote and gives one :class:`~pipeline.training.data.ClsCase` per study, its case id
being the Study Instance UID. Patient keys stay in memory: they never go into a bundle.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.bundle import Split
from pipeline.input_distribution import AcquisitionValues
from pipeline.training.data import ClsCase, DataError, natural_key
from pipeline.training.split import split_cases

logger = logging.getLogger(__name__)

LABELS_FILE = "labels.csv"
STUDIES_DIR = "studies"
SLICE_FILE = "slice.npz"
REQUIRED_COLUMNS = ("accession", "patient_key", "study_uid", "label")
READER_PREFIX = "reader_"
MIN_PATIENTS_PER_CLASS = 3  # one each for training, validation and test
_READER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


@dataclass(frozen=True)
class CohortCase:
    """One labelled study of the package: its slice case and what the CSV says about it."""

    case: ClsCase
    accession: str
    patient_key: str
    readers: dict[str, int] = field(default_factory=dict)  # reader name -> 0/1, where read

    @property
    def study_uid(self) -> str:
        return self.case.case_id


@dataclass(frozen=True)
class LabelledCohort:
    """The labelled studies of a package, in the order of the labels file."""

    folder: Path
    labels_file: Path
    cases: list[CohortCase]
    readers: list[str]

    @property
    def counts(self) -> dict[str, int]:
        """Studies and patients of each class (a patient counts as cirrhotic when any of their
        studies is labelled 1)."""
        positive = [c for c in self.cases if c.case.label == 1]
        patients = patient_labels(self.cases)
        return {
            "studies": len(self.cases),
            "studies_cirrhosis": len(positive),
            "studies_no_cirrhosis": len(self.cases) - len(positive),
            "patients": len(patients),
            "patients_cirrhosis": sum(patients.values()),
            "patients_no_cirrhosis": len(patients) - sum(patients.values()),
        }

    def by_study(self) -> dict[str, CohortCase]:
        return {c.study_uid: c for c in self.cases}


def patient_labels(cases: list[CohortCase]) -> dict[str, int]:
    """Each patient's class: 1 when any of their studies is labelled cirrhosis."""
    out: dict[str, int] = {}
    for c in cases:
        out[c.patient_key] = max(out.get(c.patient_key, 0), c.case.label)
    return out


def resolve_labels_file(folder: Path, labels: Path | None) -> Path:
    """The labels file: the package's own ``labels.csv`` when None; else ``labels`` as given,
    else (a relative path that does not exist) the same path inside the package."""
    if labels is None:
        labels = folder / LABELS_FILE
    if labels.is_file():
        return labels
    inside = folder / labels
    if not labels.is_absolute() and inside.is_file():
        return inside
    raise DataError("labels_missing", f"labels file {labels} does not exist")


def read_cohort(folder: Path, labels: Path | None = None) -> LabelledCohort:
    """Read and check a labelling package and its filled-in labels file.

    Parameters
    ----------
    folder
        The package (``liver-agent cohort export`` output).
    labels
        The labels CSV the readers filled in (a path, or a name inside the package); None:
        the package's own ``labels.csv``.

    Raises
    ------
    DataError
        With a code and a sentence naming the rows: ``cohort_missing`` (no package),
        ``labels_missing``, ``labels_columns`` (missing columns), ``labels_value`` (a label or
        reader read other than 0/1, an empty patient key), ``labels_duplicate`` (a study twice),
        ``labels_unknown`` (accessions or study UIDs that are not in the package).
    """
    if not (folder / STUDIES_DIR).is_dir():
        raise DataError(
            "cohort_missing",
            f"{folder} is not a labelling package (no {STUDIES_DIR}/ folder); make one with "
            "'liver-agent cohort export COHORT OUT'",
        )
    labels_file = resolve_labels_file(folder, labels)
    rows, columns = _read_rows(labels_file)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DataError(
            "labels_columns",
            f"{labels_file}: missing column(s) {', '.join(missing)} (the header needs "
            f"{','.join(REQUIRED_COLUMNS)}; keep the header of the exported template)",
        )
    readers = [c[len(READER_PREFIX) :] for c in columns if c.startswith(READER_PREFIX)]
    bad_names = [r for r in readers if not _READER_NAME.match(r)]
    if bad_names:
        raise DataError(
            "labels_columns",
            f"{labels_file}: reader column name(s) {', '.join(bad_names)!r} are not "
            "reader_<letters, digits, _ . ->",
        )
    _check_values(labels_file, rows, readers)
    _check_known(folder, labels_file, rows)
    cases = [_cohort_case(folder, row, readers) for row in rows]
    logger.info("cohort %s: %d labelled studies, readers %s", folder, len(cases), readers)
    return LabelledCohort(folder=folder, labels_file=labels_file, cases=cases, readers=readers)


def _read_rows(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = [{k: (v or "").strip() for k, v in r.items() if k is not None} for r in reader]
            columns = [c.strip() for c in reader.fieldnames or []]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError("labels_missing", f"{path}: cannot read the labels CSV ({err})") from err
    rows = [r for r in rows if any(r.values())]  # blank lines
    if not rows:
        raise DataError("labels_value", f"{path}: no rows below the header")
    return [{k.strip(): v for k, v in r.items()} for r in rows], columns


def _row_name(number: int, row: dict[str, str]) -> str:
    return f"row {number} (study {row.get('study_uid') or '?'})"


def _check_values(path: Path, rows: list[dict[str, str]], readers: list[str]) -> None:
    problems: list[str] = []
    seen: dict[str, int] = {}
    for number, row in enumerate(rows, start=2):  # row 1 is the header
        where = _row_name(number, row)
        if not row["label"]:
            problems.append(f"{where}: label is empty (not labelled yet?)")
        elif row["label"] not in ("0", "1"):
            problems.append(f"{where}: label {row['label']!r} is not 0 or 1")
        for reader in readers:
            value = row.get(READER_PREFIX + reader, "")
            if value not in ("", "0", "1"):
                problems.append(f"{where}: {READER_PREFIX}{reader} {value!r} is not 0, 1 or empty")
        if not row["patient_key"]:
            problems.append(f"{where}: patient_key is empty (the split is by patient)")
        uid = row["study_uid"]
        if not _UID.match(uid):
            problems.append(f"{where}: study_uid {uid!r} is not a DICOM UID")
        elif uid in seen:
            problems.append(f"{where}: study_uid also on row {seen[uid]}")
        else:
            seen[uid] = number
    if problems:
        code = "labels_duplicate" if all("also on row" in p for p in problems) else "labels_value"
        raise DataError(
            code,
            f"{path}: {len(problems)} problem(s): "
            + "; ".join(problems[:10])
            + (" ..." if len(problems) > 10 else "")
            + ". Labels are 1 (cirrhosis) or 0 (no cirrhosis); delete the rows of studies "
            "you leave out.",
        )


def _check_known(folder: Path, path: Path, rows: list[dict[str, str]]) -> None:
    """Every study must be in the package; with the package's own template, its accession too."""
    template = folder / LABELS_FILE
    exported: dict[str, str] | None = None
    if template.is_file() and template.resolve() != path.resolve():
        exported_rows, columns = _read_rows(template)
        if "study_uid" in columns and "accession" in columns:
            exported = {r["study_uid"]: r["accession"] for r in exported_rows}
    unknown_studies: list[str] = []
    unknown_accessions: list[str] = []
    for number, row in enumerate(rows, start=2):
        uid = row["study_uid"]
        if not (folder / STUDIES_DIR / uid / SLICE_FILE).is_file() or (
            exported is not None and uid not in exported
        ):
            unknown_studies.append(f"row {number}: {uid}")
        elif exported is not None and exported[uid] != row["accession"]:
            unknown_accessions.append(
                f"row {number}: accession {row['accession']!r} (the package has "
                f"{exported[uid]!r} for study {uid})"
            )
    if unknown_studies or unknown_accessions:
        parts = []
        if unknown_studies:
            parts.append(
                f"{len(unknown_studies)} study UID(s) not in the package: "
                + ", ".join(unknown_studies[:10])
            )
        if unknown_accessions:
            parts.append(
                f"{len(unknown_accessions)} accession(s) that do not match the package: "
                + ", ".join(unknown_accessions[:10])
            )
        raise DataError(
            "labels_unknown",
            f"{path}: " + "; ".join(parts) + f". Label the studies of {folder} (its "
            f"{LABELS_FILE} lists them); labels of another cohort cannot be used here.",
        )


def _slice_acquisition(data: Any, shape: tuple[int, ...]) -> AcquisitionValues:
    """What a slice file says of its series' acquisition, for the bundle's training
    distribution: matrix, ``pixel_spacing``, and the header values (``manufacturer``,
    ``field_strength_t``, ``echo_time_ms``, ``repetition_time_ms``) where the file has them."""

    def number(key: str) -> float | None:
        if key not in data.files:
            return None
        value = np.asarray(data[key]).ravel()
        return float(value[0]) if value.size and np.isfinite(value[0]) else None

    spacing = (
        np.asarray(data["pixel_spacing"], dtype=float).ravel()
        if ("pixel_spacing" in data.files)
        else np.zeros(0)
    )
    maker = str(np.asarray(data["manufacturer"])) if "manufacturer" in data.files else ""
    return AcquisitionValues(
        source="dicom",
        manufacturer=maker.strip() or None,
        field_strength_t=number("field_strength_t"),
        echo_time_ms=number("echo_time_ms"),
        repetition_time_ms=number("repetition_time_ms"),
        pixel_spacing_mm=(float(spacing[0]), float(spacing[1])) if spacing.size == 2 else None,
        rows=int(shape[0]),
        columns=int(shape[1]),
    )


def _cohort_case(folder: Path, row: dict[str, str], readers: list[str]) -> CohortCase:
    uid = row["study_uid"]
    file = folder / STUDIES_DIR / uid / SLICE_FILE
    try:
        with np.load(file) as data:
            image = np.asarray(data["image"], dtype=np.float32)
            mask = np.asarray(data["mask"]) != 0
            acquisition = _slice_acquisition(data, image.shape)
    except (OSError, KeyError, ValueError) as err:
        raise DataError(
            "cohort_unreadable", f"{file}: not a slice file with image and mask ({err})"
        ) from err
    if image.ndim != 2 or image.shape != mask.shape:
        raise DataError(
            "cohort_unreadable", f"{file}: image {image.shape} and mask {mask.shape} differ"
        )
    if not mask.any():
        raise DataError(
            "cohort_unreadable",
            f"study {uid}: the liver mask on its caudate slice is empty; correct it or delete "
            "the row",
        )
    reads = {
        name: int(row[READER_PREFIX + name])
        for name in readers
        if row.get(READER_PREFIX + name, "") in ("0", "1")
    }
    return CohortCase(
        case=ClsCase(uid, image, mask, int(row["label"]), acquisition),
        accession=row["accession"],
        patient_key=row["patient_key"],
        readers=reads,
    )


def check_trainable(cohort: LabelledCohort, minimum: int = MIN_PATIENTS_PER_CLASS) -> None:
    """Refuse a cohort with fewer than ``minimum`` patients of either class (each of the
    training, validation and test parts needs both classes)."""
    counts = cohort.counts
    pos, neg = counts["patients_cirrhosis"], counts["patients_no_cirrhosis"]
    if pos < minimum or neg < minimum:
        raise DataError(
            "labels_too_few",
            f"{cohort.labels_file}: too few cases per class: {pos} patient(s) labelled 1 "
            f"(cirrhosis) and {neg} labelled 0; training needs at least {minimum} patients of "
            "each class (one each for the training, validation and test parts; the published "
            "study had 713 patients)",
        )


def split_by_patient(cohort: LabelledCohort, seed: int) -> Split:
    """70/15/15 split by patient, stratified by class (each class's patients are split with
    :func:`~pipeline.training.split.split_cases` and the seed), as study UIDs: every study of a
    patient lands in the same part."""
    patients = patient_labels(cohort.cases)
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for label in (0, 1):
        keys = [k for k, v in patients.items() if v == label]
        if not keys:
            continue
        split = split_cases(keys, seed)
        for part in parts:
            parts[part] += getattr(split, part)
    where = {key: part for part, keys in parts.items() for key in keys}
    studies: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for c in cohort.cases:
        studies[where[c.patient_key]].append(c.study_uid)
    return Split(**{part: sorted(uids, key=natural_key) for part, uids in studies.items()})


def split_summary(cohort: LabelledCohort, split: Split) -> dict[str, dict[str, int]]:
    """Studies, patients and studies of each class in each part of the split."""
    by_study = cohort.by_study()
    out: dict[str, dict[str, int]] = {}
    for part in ("train", "val", "test"):
        members = [by_study[uid] for uid in getattr(split, part)]
        positive = sum(m.case.label for m in members)
        out[part] = {
            "studies": len(members),
            "patients": len({m.patient_key for m in members}),
            "cirrhosis": positive,
            "no_cirrhosis": len(members) - positive,
        }
    return out
