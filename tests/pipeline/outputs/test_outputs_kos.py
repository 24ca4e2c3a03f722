"""The Key Object Selection document: the caudate-level slice as key image, read back."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import pydicom
from pydicom.sr.codedict import codes

from pipeline.outputs import OutputOptions, build_outputs, write_outputs
from pipeline.outputs.identity import PATIENT_STUDY_KEYWORDS
from tests.pipeline.outputs.synthetic_mr import make_mr_series, make_not_evaluated, make_result


def test_kos_flags_the_caudate_slice(tmp_path: Path) -> None:
    series = make_mr_series(10, 48, 48)
    result = make_result(series, present=False, probability=0.1234, demo=True)
    objects = build_outputs(result, OutputOptions(kos=True))
    assert [o.kind for o in objects] == ["seg", "sr", "kos"]
    paths = write_outputs(objects, tmp_path)
    assert paths[-1].name == "kos.dcm"
    kos = hd.ko.KeyObjectSelectionDocument.from_dataset(pydicom.dcmread(paths[-1]))
    assert kos.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.59"
    assert kos.Modality == "KO"
    assert kos.SeriesNumber == 9904
    assert kos.SeriesDescription == "DEMO AI Liver KEY IMAGE - RESEARCH USE ONLY"
    content = kos.ContentSequence
    assert kos.ConceptNameCodeSequence[0].CodeValue == codes.DCM.OfInterest.value
    (description,) = [i for i in content if i.ConceptNameCodeSequence[0].CodeValue == "113012"]
    assert description.TextValue == (
        "DEMO MODEL AI liver: caudate-level slice (cirrhosis of liver: absent, "
        "probability 0.12) - RESEARCH USE ONLY"
    )
    assert result.caudate is not None
    images = [i.ReferencedSOPSequence[0] for i in content if i.ValueType == "IMAGE"]
    assert [str(i.ReferencedSOPInstanceUID) for i in images] == [result.caudate.sop_instance_uid]
    assert [str(i.ReferencedSOPClassUID) for i in images] == [str(series[0].SOPClassUID)]
    # the evidence names the slice's series; the observer is the agent as a device
    (evidence,) = kos.CurrentRequestedProcedureEvidenceSequence
    (ev_series,) = evidence.ReferencedSeriesSequence
    assert ev_series.SeriesInstanceUID == series[0].SeriesInstanceUID
    observer = {i.ConceptNameCodeSequence[0].CodeMeaning: i for i in content}
    assert observer["Observer Type"].ConceptCodeSequence[0].CodeValue == "121007"
    for keyword in PATIENT_STUDY_KEYWORDS:
        assert str(kos[keyword].value) == str(series[0][keyword].value), keyword
    assert kos.Manufacturer == "liver-agent"
    assert "liver-agent" in {e.Manufacturer for e in kos.ContributingEquipmentSequence}


def test_kos_is_off_by_default_and_never_for_not_evaluated() -> None:
    series = make_mr_series(6, 32, 32)
    assert "kos" not in {o.kind for o in build_outputs(make_result(series))}
    not_evaluated = make_not_evaluated(series, "no_axial_t2", "no axial T2-weighted series")
    kinds = [o.kind for o in build_outputs(not_evaluated, OutputOptions(kos=True))]
    assert kinds == ["not_evaluated_sr"]
