"""Selection on vendor-style studies: Siemens, GE and Philips names with their distractors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from test_selection_headers import (
    CORONAL,
    SAGITTAL,
    Written,
    assert_rejected,
    candidate,
    select,
    tilted_axial,
    write_series,
)

from pipeline.results import SeriesSelection

# role -> words one of the rejection reasons must contain
Distractors = dict[str, tuple[str, ...]]
StudyBuilder = Callable[[Path], tuple[dict[str, Written], str, Distractors]]

LOCALIZER_PLANES = [
    {"ImageOrientationPatient": ["1", "0", "0", "0", "1", "0"]},
    {"ImageOrientationPatient": ["1", "0", "0", "0", "0", "-1"]},
    {"ImageOrientationPatient": ["0", "1", "0", "0", "0", "-1"]},
]
DIFFUSION_TYPE = ["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE"]


def siemens_study(folder: Path) -> tuple[dict[str, Written], str, Distractors]:
    s = generate_uid()
    # fmt: off
    w = {
        "loc": write_series(folder, s, 1, "localizer", n=9, te=4.0, tr=8.6,
                            scanning_sequence="GR", sequence_name="*fl2d1",
                            per_image=LOCALIZER_PLANES),
        "cor_t2": write_series(folder, s, 2, "t2_haste_cor_mbh", iop=CORONAL, te=92, tr=1400,
                               sequence_name="*haste2d1"),
        "ax_t2": write_series(folder, s, 3, "t2_haste_tra_mbh", n=30, te=92, tr=1400,
                              sequence_name="*haste2d1", extra={"EchoTrainLength": 128}),
        "ax_t2_fs": write_series(folder, s, 4, "t2_tse_tra_fs", n=30, te=84, tr=3200,
                                 sequence_name="*tse2d1_15",
                                 extra={"ScanOptions": ["PFP", "FS"], "EchoTrainLength": 15}),
        "blade": write_series(folder, s, 5, "t2_blade_tra_fs", n=30, te=100, tr=4000,
                              sequence_name="*tseR2d1rs15"),
        "dwi": write_series(folder, s, 6, "ep2d_diff_b50_400_800_tra", n=20, te=66, tr=5000,
                            scanning_sequence="EP", sequence_name="*ep_b50t",
                            b_values=[50, 400, 800], b_value_style="siemens",
                            image_type=DIFFUSION_TYPE),
        "adc": write_series(folder, s, 7, "ep2d_diff_b50_400_800_tra_ADC", n=20, te=66, tr=5000,
                            scanning_sequence="EP",
                            image_type=["DERIVED", "PRIMARY", "DIFFUSION", "ADC"]),
        "t2star": write_series(folder, s, 8, "t2_fl2d_tra_t2star", n=20, te=20, tr=1200,
                               scanning_sequence="GR", sequence_name="*fl2d1"),
        "t1": write_series(folder, s, 9, "t1_vibe_dixon_tra_opp", n=64, spacing=3, te=2.4,
                           tr=6.7, scanning_sequence="GR", acquisition="3D",
                           sequence_name="*fl3d2"),
        "mrcp": write_series(folder, s, 10, "t2_space_cor_p2_trig_mrcp", n=60, spacing=1,
                             iop=CORONAL, te=700, tr=2400, acquisition="3D",
                             sequence_name="*spcR3d1"),
        "post": write_series(folder, s, 11, "t2_haste_tra_mbh", n=30, te=92, tr=1400,
                             sequence_name="*haste2d1",
                             extra={"ContrastBolusAgent": "Gadovist"}),
        "mpr": write_series(folder, s, 12, "t2_haste_tra_mbh_MPR", n=30, te=92, tr=1400,
                            image_type=["DERIVED", "SECONDARY", "MPR"]),
    }
    # fmt: on
    distractors = {
        "loc": ("localizer",),
        "cor_t2": ("coronal",),
        "dwi": ("diffusion", "b-values 50/400/800"),
        "adc": ("ADC",),
        "t2star": ("gradient echo", "T2*"),
        "t1": ("T1-weighted",),
        "mrcp": ("MRCP",),
        "post": ("contrast",),
        "mpr": ("derived", "MPR"),
    }
    return w, "ax_t2", distractors


def ge_study(folder: Path) -> tuple[dict[str, Written], str, Distractors]:
    s = generate_uid()
    # fmt: off
    w = {
        "loc": write_series(folder, s, 1, "3-Plane Loc", n=15, te=1.6, tr=4.5,
                            scanning_sequence="GR", per_image=LOCALIZER_PLANES,
                            image_type=["ORIGINAL", "PRIMARY", "LOCALIZER"]),
        "cor_t2": write_series(folder, s, 2, "Cor SSFSE T2", iop=CORONAL, te=85, tr=1300,
                               sequence_name="ssfse"),
        "ax_t2": write_series(folder, s, 3, "Ax SSFSE T2", n=32, te=85, tr=1300,
                              sequence_name="ssfse", image_type=["ORIGINAL", "PRIMARY", "OTHER"]),
        "ax_t2_fs": write_series(folder, s, 4, "AX T2 FRFSE FS", n=32, te=90, tr=6000,
                                 sequence_name="frfse",
                                 extra={"ScanOptions": ["FAST_GEMS", "FS", "RESP_GEMS"]}),
        "propeller": write_series(folder, s, 5, "Ax T2 PROPELLER", n=32, te=100, tr=6500,
                                  sequence_name="PROPELLER"),
        "dwi": write_series(folder, s, 6, "Ax DWI", n=20, te=68, tr=6000,
                            scanning_sequence=["EP", "SE"], b_values=[0, 800],
                            b_value_style="ge"),
        "t2star": write_series(folder, s, 7, "Ax GRE T2*", n=20, te=15, tr=300,
                               scanning_sequence="GR"),
        "fiesta": write_series(folder, s, 8, "Ax FIESTA", n=20, te=1.5, tr=3.6,
                               scanning_sequence="GR"),
        "mrcp": write_series(folder, s, 9, "Thick slab MRCP", n=1, thickness=40,
                             iop=tilted_axial(10), te=900, tr=4500),
        "lava": write_series(folder, s, 10, "Ax LAVA portal", n=80, spacing=2.5, te=1.7, tr=3.9,
                             scanning_sequence="GR", acquisition="3D",
                             extra={"ContrastBolusAgent": "Eovist"}),
    }
    # fmt: on
    distractors = {
        "loc": ("localizer",),
        "cor_t2": ("coronal",),
        "dwi": ("diffusion", "b-values 0/800"),
        "t2star": ("T2* gradient echo",),
        "fiesta": ("gradient echo",),
        "mrcp": ("MRCP", "TE 900 ms", "40 mm slab"),
        "lava": ("contrast",),
    }
    return w, "ax_t2", distractors


def philips_study(folder: Path) -> tuple[dict[str, Written], str, Distractors]:
    s = generate_uid()
    # fmt: off
    w = {
        "survey": write_series(folder, s, 101, "SURVEY", n=9, te=4.6, tr=11,
                               scanning_sequence="GR", per_image=LOCALIZER_PLANES),
        "ax_t2": write_series(folder, s, 301, "T2W_SSh_TSE", n=24, te=80, tr=1100,
                              extra={"EchoTrainLength": 72, "DiffusionBValue": 0}),
        "ax_t2_fs": write_series(folder, s, 401, "T2W_SPAIR", n=24, te=70, tr=1600,
                                 extra={"ScanOptions": ["FS"], "DiffusionBValue": 0}),
        "mv": write_series(folder, s, 501, "T2W_TSE_MV", n=24, te=100, tr=3000),
        "dwi": write_series(folder, s, 601, "DWI_b0_800", n=20, te=72, tr=2500,
                            b_values=[0, 800], b_value_style="philips",
                            image_type=["ORIGINAL", "PRIMARY", "M_SE", "M", "SE"]),
        "adc": write_series(folder, s, 602, "dADC_DWI", n=20, te=72, tr=2500,
                            image_type=["DERIVED", "PRIMARY", "ADC", "ADC"]),
        "sag_t2": write_series(folder, s, 701, "T2W_TSE sag", iop=SAGITTAL, te=100, tr=3000),
        "mrcp": write_series(folder, s, 801, "MRCP_3D_HR", n=80, spacing=1, te=600, tr=2000,
                             acquisition="3D", iop=CORONAL),
        "t1": write_series(folder, s, 901, "T1W_mDIXON", n=60, te=1.2, tr=3.5,
                           scanning_sequence="GR", acquisition="3D"),
    }
    # fmt: on
    distractors = {
        "survey": ("localizer",),
        "dwi": ("diffusion", "b-values 0/800"),
        "adc": ("ADC",),
        "sag_t2": ("sagittal",),
        "mrcp": ("MRCP",),
        "t1": ("T1",),
    }
    return w, "ax_t2", distractors


@dataclass
class VendorStudy:
    vendor: str
    written: dict[str, Written]
    target: str
    distractors: Distractors
    selection: SeriesSelection


BUILDERS: dict[str, StudyBuilder] = {
    "siemens": siemens_study,
    "ge": ge_study,
    "philips": philips_study,
}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def vendor_study(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> VendorStudy:
    """One study per vendor style, written and selected once for the tests of this module."""
    folder = tmp_path_factory.mktemp(request.param)
    written, target, distractors = BUILDERS[request.param](folder)
    return VendorStudy(request.param, written, target, distractors, select(folder))


def test_each_vendor_gets_its_single_shot_axial_t2(vendor_study: VendorStudy) -> None:
    written, target = vendor_study.written, vendor_study.target
    distractors, selection = vendor_study.distractors, vendor_study.selection

    assert selection.series_instance_uid == written[target].uid
    assert len(selection.candidates) == len(written)
    top = selection.candidates[0]
    assert top.series_instance_uid == written[target].uid
    assert top.eligible
    assert any(r.startswith("axial (normal 0 deg from z)") for r in top.reasons)
    assert any("T2-weighted" in r for r in top.reasons)
    assert "no fat suppression (preferred)" in top.reasons
    for role, words in distractors.items():
        assert_rejected(selection, written[role], words)
    # every other series is either rejected or scored lower, with reasons
    for c in selection.candidates[1:]:
        assert c.reasons
        assert not c.eligible or c.score < top.score
    scores = [c.score for c in selection.candidates if c.eligible]
    assert scores == sorted(scores, reverse=True)


def test_fat_suppressed_axial_t2_is_eligible_but_second(vendor_study: VendorStudy) -> None:
    written, selection = vendor_study.written, vendor_study.selection
    fs = candidate(selection, written["ax_t2_fs"])
    assert fs.eligible
    assert any(r.startswith("fat-suppressed") for r in fs.reasons)
    assert fs.score < candidate(selection, written["ax_t2"]).score


def test_vendor_names_are_recognised_in_reasons(vendor_study: VendorStudy) -> None:
    written, sel = vendor_study.written, vendor_study.selection
    if vendor_study.vendor == "siemens":
        _siemens_names(written, sel)
    elif vendor_study.vendor == "philips":
        _philips_names(written, sel)
    else:
        ssfse = " ".join(candidate(sel, written["ax_t2"]).reasons)
        assert "single-shot (description matches 'ssfse')" in ssfse
        frfse = " ".join(candidate(sel, written["ax_t2_fs"]).reasons)
        assert "fat-suppressed (description matches 'fs'; ScanOptions FS)" in frfse
        prop = " ".join(candidate(sel, written["propeller"]).reasons)
        assert "turbo spin echo (description matches 'propeller')" in prop
        assert candidate(sel, written["propeller"]).eligible


def _siemens_names(written: dict[str, Written], sel: SeriesSelection) -> None:
    assert "description matches 'haste'" in " ".join(candidate(sel, written["ax_t2"]).reasons)
    fs = " ".join(candidate(sel, written["ax_t2_fs"]).reasons)
    assert "turbo spin echo" in fs
    assert "ScanOptions FS" in fs
    blade = " ".join(candidate(sel, written["blade"]).reasons)
    assert "description matches 'blade'" in blade
    assert "sequence name matches 'tser2d'" in blade


def _philips_names(written: dict[str, Written], sel: SeriesSelection) -> None:
    ssh = " ".join(candidate(sel, written["ax_t2"]).reasons)
    assert "single-shot (description matches 'ssh'; echo train length 72)" in ssh
    assert "description matches 'spair'" in " ".join(candidate(sel, written["ax_t2_fs"]).reasons)
    assert "turbo spin echo (description matches 'tse'; description matches 'mv')" in " ".join(
        candidate(sel, written["mv"]).reasons
    )
    # Philips writes DiffusionBValue 0 on ordinary images: that is not diffusion
    assert candidate(sel, written["ax_t2"]).eligible
