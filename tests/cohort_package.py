"""A labelling package (the format ``liver-agent cohort export`` writes) made from phantoms whose
truth is known, so the training and validation tests do not need the cohort commands.

Layout: ``OUT/labels.csv`` (``accession,patient_key,study_uid,series_uid,sop_uid,slice_index,
predicted_probability,label`` plus ``reader_<name>`` columns) and
``OUT/studies/<study_uid>/slice.npz`` (``image`` float32, ``mask`` uint8, ``above``, ``below``,
``pixel_spacing``). Labels are the phantoms' truth (1 = cirrhotic).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.phantoms import VENDORS, phantom_axial_t2

HEADER = [
    "accession",
    "patient_key",
    "study_uid",
    "series_uid",
    "sop_uid",
    "slice_index",
    "predicted_probability",
    "label",
]


@dataclass(frozen=True)
class PackagedStudy:
    """One study of the package and its truth."""

    accession: str
    patient_key: str
    study_uid: str
    label: int
    readers: dict[str, str]


def _uid(kind: int, seed: int, n: int) -> str:
    return f"1.2.826.0.1.3680043.10.1149.{kind}.{seed}.{n}"


def reader_read(name: str, n: int, label: int) -> str:
    """A reader's deterministic read of study ``n``: ``alice`` is wrong on every 4th study,
    ``bob`` on every 3rd and has not read every 5th (empty)."""
    if name == "alice":
        return str(1 - label if n % 4 == 1 else label)
    if n % 5 == 4:
        return ""
    return str(1 - label if n % 3 == 2 else label)


def write_cohort_package(
    out: Path,
    *,
    per_class: int = 6,
    matrix: int = 64,
    slices: int = 24,
    seed: int = 0,
    readers: tuple[str, ...] = ("alice", "bob"),
    labels_value: int | None = None,
) -> list[PackagedStudy]:
    """Write ``per_class`` normal and ``per_class`` cirrhotic phantom studies as a package.

    Study ``n`` (0-based, alternately normal and cirrhotic) belongs to patient ``P<n // 2>``
    for the first two studies (one patient with two studies, one of each label) and to its own
    patient otherwise. ``labels_value`` fills every label with that value instead of the truth
    (tests of the label check).
    """
    studies_dir = out / "studies"
    studies_dir.mkdir(parents=True, exist_ok=True)
    packaged: list[PackagedStudy] = []
    rows: list[list[str]] = []
    for n in range(2 * per_class):
        cirrhotic = bool(n % 2)
        phantom_seed = seed * 1000 + 700 + n
        vol = phantom_axial_t2(
            cirrhotic=cirrhotic,
            seed=phantom_seed,
            slices=slices,
            matrix=matrix,
            vendor=VENDORS[n % len(VENDORS)],
        )
        k = vol.caudate_index
        study_uid = _uid(1, seed, n)
        folder = studies_dir / study_uid
        folder.mkdir()
        below = vol.image[k - 1] if k > 0 else np.zeros((0, 0), np.float32)
        above = vol.image[k + 1] if k + 1 < vol.image.shape[0] else np.zeros((0, 0), np.float32)
        np.savez_compressed(
            folder / "slice.npz",
            image=vol.image[k].astype(np.float32),
            mask=vol.liver_mask[k].astype(np.uint8),
            above=above.astype(np.float32),
            below=below.astype(np.float32),
            pixel_spacing=np.array(vol.pixel_spacing, dtype=np.float32),
        )
        label = int(cirrhotic)
        reads = {name: reader_read(name, n, label) for name in readers}
        accession = f"ACC{seed:02d}{n:04d}"
        patient = "P0" if n < 2 else f"P{n}"
        packaged.append(PackagedStudy(accession, patient, study_uid, label, reads))
        rows.append(
            [
                accession,
                patient,
                study_uid,
                _uid(2, seed, n),
                _uid(3, seed, n),
                str(k),
                "",
                str(label if labels_value is None else labels_value),
                *(reads[name] for name in readers),
            ]
        )
    with (out / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([*HEADER, *(f"reader_{name}" for name in readers)])
        writer.writerows(rows)
    return packaged


def rewrite_labels(
    source: Path, target: Path, edit: dict[int, dict[str, str]] | None = None, drop: str = ""
) -> Path:
    """Copy a labels CSV to ``target``, changing cells of data rows (0-based) and dropping the
    column ``drop``."""
    with source.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for index, changes in (edit or {}).items():
        rows[index].update(changes)
    fields = [f for f in rows[0] if f != drop]
    with target.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return target
