"""``cohort export``: the labelling package of a processed cohort.

::

    OUT/labels.csv                      one row per study with a caudate-level slice
    OUT/studies/<Study UID>/slice.npz   image, mask, above, below, pixel_spacing
    OUT/studies/<Study UID>/slice.png   windowed, liver outline; above.png, below.png
    OUT/contact-sheet.html              every study: slices, outline, selection reasons
    OUT/cohort.json                     cohort, agent version, models, per-study status

``labels.csv`` columns: accession, patient_key, study_uid, series_uid, sop_uid, slice_index,
predicted_probability (empty without a classifier's finding), label (empty: the reader fills
in 0/1); a reader may add ``reader_<name>`` columns. The patient key is a salted SHA-256
prefix of the Patient ID (:func:`agent.cohorts.process.patient_key`), never the ID.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import json
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image
from scipy import ndimage

from agent.cohorts.process import slice_file
from agent.settings import Settings
from storage.models import Cohort, CohortStudy, CohortStudyStatus

LABEL_COLUMNS = (
    "accession",
    "patient_key",
    "study_uid",
    "series_uid",
    "sop_uid",
    "slice_index",
    "predicted_probability",
    "label",
)


@dataclass(frozen=True)
class ExportSummary:
    out: Path
    exported: int
    without_slice: int


def export_cohort(
    settings: Settings, cohort: Cohort, rows: list[CohortStudy], out: Path
) -> ExportSummary:
    """Write the package of ``cohort`` into ``out`` (created; must be empty if it exists)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "studies").mkdir(exist_ok=True)
    labelled: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    models: dict[str, dict[str, Any]] = {}
    for row in rows:
        result = row.result or {}
        for task, info in (result.get("models") or {}).items():
            if info:
                models[task] = {k: info.get(k) for k in ("name", "version", "demo", "sha256")}
        source = slice_file(settings, cohort.name, row.study_instance_uid or "")
        has_slice = (
            row.status is CohortStudyStatus.PROCESSED
            and row.study_instance_uid is not None
            and source.is_file()
        )
        entry = _entry(row, result, exported=has_slice)
        entries.append(entry)
        if not has_slice:
            continue
        assert row.study_instance_uid is not None
        folder = out / "studies" / row.study_instance_uid
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / "slice.npz")
        with np.load(folder / "slice.npz") as arrays:
            _write_pngs(folder, arrays["image"], arrays["mask"], arrays["above"], arrays["below"])
        labelled.append(entry)
    _write_labels(out / "labels.csv", labelled)
    _write_cohort_json(out / "cohort.json", cohort, models, entries)
    (out / "contact-sheet.html").write_text(_contact_sheet(cohort, entries), encoding="utf-8")
    return ExportSummary(out, len(labelled), len(entries) - len(labelled))


def _entry(row: CohortStudy, result: dict[str, Any], *, exported: bool) -> dict[str, Any]:
    slice_info = result.get("slice") or {}
    series = result.get("series") or {}
    classification = result.get("classification") or {}
    chosen = series.get("series_instance_uid")
    candidates = (result.get("selection") or {}).get("candidates") or []
    reasons: list[str] = next(
        (c.get("reasons", []) for c in candidates if c.get("series_instance_uid") == chosen), []
    )
    return {
        "requested": row.requested,
        "accession": row.accession_number or "",
        "patient_key": row.patient_key or "",
        "study_uid": row.study_instance_uid or "",
        "series_uid": chosen or "",
        "series_description": series.get("description") or "",
        "slices": series.get("slices"),
        "sop_uid": slice_info.get("sop_instance_uid") or "",
        "slice_index": slice_info.get("index"),
        "slice_rule": slice_info.get("rule") or "",
        "predicted_probability": classification.get("probability"),
        "finding_withheld": result.get("finding_withheld"),
        "selection_reasons": list(reasons),
        "status": row.status.value,
        "reason_code": row.reason_code,
        "reason": row.reason,
        "exported": exported,
    }


def _write_labels(path: Path, entries: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(LABEL_COLUMNS)
        for e in entries:
            p = e["predicted_probability"]
            writer.writerow(
                [
                    e["accession"],
                    e["patient_key"],
                    e["study_uid"],
                    e["series_uid"],
                    e["sop_uid"],
                    e["slice_index"],
                    "" if p is None else f"{p:.4f}",
                    "",
                ]
            )


def _write_cohort_json(
    path: Path, cohort: Cohort, models: dict[str, dict[str, Any]], entries: list[dict[str, Any]]
) -> None:
    try:
        version = metadata.version("liver-agent")
    except metadata.PackageNotFoundError:
        version = "unknown"
    data = {
        "cohort": cohort.name,
        "source": cohort.source,
        "created": cohort.created_at.isoformat(),
        "exported": dt.datetime.now(dt.UTC).isoformat(),
        "agent_version": version,
        "models": models,
        "studies": [
            {
                k: e[k]
                for k in (
                    "requested",
                    "accession",
                    "study_uid",
                    "status",
                    "reason_code",
                    "reason",
                    "exported",
                )
            }
            for e in entries
        ],
    }
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


# images -------------------------------------------------------------------------------------


def window(image: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """Grey levels from the 1st to the 99th percentile (MR has no fixed window)."""
    if image.size == 0:
        return np.zeros((0, 0), dtype=np.uint8)
    low, high = np.percentile(image, [1.0, 99.0])
    scaled = (image.astype(np.float64) - low) / max(float(high - low), 1e-6)
    clipped: npt.NDArray[np.uint8] = np.clip(scaled * 255.0, 0, 255).astype(np.uint8)
    return clipped


def _write_pngs(
    folder: Path,
    image: npt.NDArray[Any],
    mask: npt.NDArray[Any],
    above: npt.NDArray[Any],
    below: npt.NDArray[Any],
) -> None:
    grey = window(image)
    rgb = np.stack([grey] * 3, axis=-1)
    liver = mask.astype(bool)
    outline = liver & ~ndimage.binary_erosion(liver)
    rgb[outline] = (255, 64, 64)
    Image.fromarray(rgb).save(folder / "slice.png")
    for name, neighbour in (("above", above), ("below", below)):
        target = folder / f"{name}.png"
        if neighbour.size:
            Image.fromarray(window(neighbour)).save(target)
        else:
            target.unlink(missing_ok=True)


# contact sheet ------------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1em;background:#fafafa;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px;vertical-align:top}
img{width:160px;height:160px;object-fit:contain;background:#000;image-rendering:pixelated}
.reasons{font-size:0.8em;max-width:28em}.bad{color:#a00}.demo{color:#a60;font-weight:bold}
"""


def _contact_sheet(cohort: Cohort, entries: list[dict[str, Any]]) -> str:
    e = html.escape
    rows = []
    for item in entries:
        uid = item["study_uid"]
        head = (
            f"<td>{e(item['accession'] or item['requested'])}<br><small>{e(uid)}</small>"
            f"<br>key {e(item['patient_key'])}</td>"
        )
        if item["exported"]:
            base = f"studies/{e(uid)}"
            probability = item["predicted_probability"]
            shown = (
                f"{probability:.3f}"
                if probability is not None
                else e(item["finding_withheld"] or "no classifier finding")
            )
            images = "".join(
                f'<td><img src="{base}/{name}.png" alt="{name}"></td>'
                if (name != "above" and name != "below") or _has_neighbour(item, name)
                else "<td>(end of stack)</td>"
                for name in ("above", "slice", "below")
            )
            reasons = "".join(f"<li>{e(r)}</li>" for r in item["selection_reasons"])
            rows.append(
                f"<tr>{head}{images}<td class=reasons>{e(item['series_description'])}, slice "
                f"{item['slice_index']} of {item['slices']}<br>{e(item['slice_rule'])}"
                f"<ul>{reasons}</ul></td><td>{shown}</td></tr>"
            )
        else:
            why = f"{item['status']}: {item['reason_code'] or ''} {item['reason'] or ''}"
            rows.append(f"<tr>{head}<td colspan=5 class=bad>{e(why)}</td></tr>")
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        f"<title>Cohort {e(cohort.name)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>Cohort {e(cohort.name)}</h1><p>Source {e(cohort.source)}; "
        f"{sum(1 for i in entries if i['exported'])} of {len(entries)} studies with a "
        "caudate-level slice. Red line: the liver mask. RESEARCH USE ONLY.</p>"
        "<table><tr><th>study</th><th>above</th><th>caudate level</th><th>below</th>"
        "<th>series and why</th><th>probability</th></tr>"
        + "".join(rows)
        + "</table></body></html>\n"
    )


def _has_neighbour(item: dict[str, Any], name: str) -> bool:
    index, slices = item["slice_index"], item["slices"]
    if index is None or slices is None:
        return False
    return bool(index + 1 < slices if name == "above" else index > 0)
