"""The "not evaluated" SR says so in words and can never read as a negative result."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import pytest
from pydicom.dataset import Dataset

from pipeline.outputs import OutputOptions, build_not_evaluated_sr, build_outputs, write_outputs
from tests.pipeline.outputs.synthetic_mr import make_mr_series, make_not_evaluated


def _items(item: Dataset) -> list[Dataset]:
    out = []
    for child in item.get("ContentSequence", []):
        out.append(child)
        out += _items(child)
    return out


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("no_axial_t2", "no axial T2 series"),
        ("liver_not_covered", "liver not covered"),
        ("unreadable_pixel_data", "unreadable pixel data"),
    ],
)
def test_reason_in_words_and_no_finding_code(tmp_path: Path, code: str, reason: str) -> None:
    result = make_not_evaluated(make_mr_series(3, 16, 16), code, reason)
    (obj,) = build_outputs(result, OutputOptions(sc=True))
    assert obj.kind == "not_evaluated_sr"
    (path,) = write_outputs([obj], tmp_path)
    sr = hd.sr.srread(path)
    assert isinstance(sr, hd.sr.ComprehensiveSR)
    items = _items(sr)
    texts = [str(i.TextValue) for i in items if i.ValueType == "TEXT"]
    assert f"Not evaluated: {reason}" in texts
    assert f"Reason code: {code}" in texts
    assert any("not a negative result" in t for t in texts)
    # no Present/Absent code and no measurement anywhere
    codes_used = {i.ConceptCodeSequence[0].CodeValue for i in items if i.ValueType == "CODE"}
    assert not codes_used & {"52101004", "272519000", "19943007"}
    assert not [i for i in items if i.ValueType == "NUM"]
    # the algorithm is identified (TID 4019) under the "Not evaluated" statement
    names = [
        str(i.TextValue)
        for i in items
        if i.ValueType == "TEXT" and i.ConceptNameCodeSequence[0].CodeValue == "111001"
    ]
    assert names == ["liver-classification"]
    # a text report (TID 2000 layout), not a TID 1500 measurement report without measurements:
    # viewers that take DCM 126000 as "measurements follow" crash on it (OHIF 3.13)
    title = sr.ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator) == ("18748-4", "LN")
    (findings,) = [i for i in sr.ContentSequence if i.ValueType == "CONTAINER"]
    assert findings.ConceptNameCodeSequence[0].CodeValue == "121070"  # Findings
    assert findings.ContinuityOfContent == "SEPARATE"
    assert "ContentTemplateSequence" not in sr  # no template claimed
    assert sr.SeriesDescription == "AI Liver SR - NOT EVALUATED - RESEARCH USE ONLY"
    assert sr.CompletionFlag == "COMPLETE"
    assert sr.VerificationFlag == "UNVERIFIED"
    assert sr.StudyInstanceUID == result.study_instance_uid
    assert sr.PatientID == result.reference.PatientID


def test_option_off_makes_nothing() -> None:
    result = make_not_evaluated(make_mr_series(3, 16, 16), "no_axial_t2", "no axial T2 series")
    assert build_outputs(result, OutputOptions(not_evaluated_sr=False)) == []


def test_without_models_the_agent_is_the_algorithm() -> None:
    result = make_not_evaluated(make_mr_series(3, 16, 16), "unreadable_pixel_data", "")
    bare = type(result)(
        study_instance_uid=result.study_instance_uid,
        reference=result.reference,
        selection=result.selection,
        evaluated=False,
        reason_code=None,
        reason=None,
    )
    sr = build_not_evaluated_sr(bare, software_version="3.1.4")
    items = _items(sr)
    by_code = {
        i.ConceptNameCodeSequence[0].CodeValue: str(i.TextValue)
        for i in items
        if i.ValueType == "TEXT"
    }
    assert by_code["111001"] == "liver-agent"
    assert by_code["111003"] == "3.1.4"
    texts = [str(i.TextValue) for i in items if i.ValueType == "TEXT"]
    assert "Not evaluated: no reason was recorded" in texts
    assert sr.ManufacturerModelName == "liver-agent"


def test_a_long_reason_is_broken_into_lines_a_viewer_can_show() -> None:
    reason = (
        "no axial T2-weighted series in the study ("
        + "; ".join(f"series {n}: coronal (normal 0 deg from y)" for n in range(6))
        + ")"
    )
    result = make_not_evaluated(make_mr_series(3, 16, 16), "no_axial_t2", reason)
    sr = build_not_evaluated_sr(result, software_version="3.1.4")
    (statement,) = [
        str(i.TextValue) for i in _items(sr) if i.get("TextValue", "").startswith("Not evaluated")
    ]
    lines = statement.split("\r\n")
    assert len(lines) > 1
    assert all(len(line) <= 80 for line in lines), lines
    assert " ".join(lines) == f"Not evaluated: {reason}"
