"""Series selection: empty descriptions, distractors by tags, no axial T2, tie-breaks."""

from __future__ import annotations

from pathlib import Path

from pydicom.uid import SecondaryCaptureImageStorage, generate_uid
from test_selection_headers import (
    CORONAL,
    SAGITTAL,
    assert_rejected,
    candidate,
    select,
    tilted_axial,
    write_series,
)


def test_only_fat_suppressed_axial_t2_is_chosen(tmp_path: Path) -> None:
    s = generate_uid()
    write_series(tmp_path, s, 1, "t2_haste_cor", iop=CORONAL, te=92)
    fs = write_series(tmp_path, s, 2, "t2_tse_tra_fs", te=84, tr=3000, extra={"ScanOptions": "FS"})
    assert select(tmp_path).series_instance_uid == fs.uid


def test_empty_descriptions_decide_from_sequence_tags(tmp_path: Path) -> None:
    s = generate_uid()
    kw = {"protocol": ""}
    w = {
        "t2": write_series(tmp_path, s, 5, "", te=95, tr=1800, **kw),
        "cor": write_series(tmp_path, s, 1, "", iop=CORONAL, te=95, tr=1800, **kw),
        "gre": write_series(tmp_path, s, 2, "", te=18, tr=1200, scanning_sequence="GR", **kw),
        "dwi": write_series(
            tmp_path, s, 3, "", te=70, tr=5000, scanning_sequence="EP", b_values=[0, 800], **kw
        ),
        "t1": write_series(tmp_path, s, 4, "", te=12, tr=550, **kw),
        "pd": write_series(tmp_path, s, 6, "", te=30, tr=3000, **kw),
        "mrcp": write_series(tmp_path, s, 7, "", te=750, tr=4500, **kw),
        "slab": write_series(tmp_path, s, 8, "", n=12, thickness=40, spacing=40, te=100, **kw),
        "unknown": write_series(tmp_path, s, 9, "", te=None, tr=None, **kw),
    }
    selection = select(tmp_path)
    assert selection.series_instance_uid == w["t2"].uid
    chosen = candidate(selection, w["t2"])
    assert "TE 95 ms: T2-weighted" in chosen.reasons
    assert "spin echo (ScanningSequence SE)" in chosen.reasons
    assert "TR 1800 ms: long" in chosen.reasons
    assert_rejected(selection, w["cor"], ("coronal (normal 0 deg from y)",))
    assert_rejected(selection, w["gre"], ("T2* gradient echo", "ScanningSequence GR, TE 18 ms"))
    assert_rejected(selection, w["dwi"], ("diffusion (b-values 0/800)",))
    assert_rejected(selection, w["t1"], ("T1-weighted (TE 12 ms, TR 550 ms)",))
    assert_rejected(selection, w["pd"], ("TE 30 ms is too short",))
    assert_rejected(selection, w["mrcp"], ("MRCP", "TE 750 ms"))
    assert_rejected(selection, w["slab"], ("MRCP", "40 mm slab"))
    assert_rejected(selection, w["unknown"], ("no EchoTime",))


def test_diffusion_by_echo_planar_and_name_without_b_values(tmp_path: Path) -> None:
    s = generate_uid()
    dwi = write_series(tmp_path, s, 1, "DWI_tra", te=65, tr=4000, scanning_sequence="EP")
    trace = write_series(
        tmp_path, s, 2, "", te=65, tr=4000, image_type=["DERIVED", "PRIMARY", "DIFFUSION", "TRACEW"]
    )
    selection = select(tmp_path)
    assert selection.series_instance_uid is None
    assert_rejected(selection, dwi, ("diffusion (description matches 'dwi')",))
    assert "echo planar (ScanningSequence EP)" in candidate(selection, dwi).reasons
    assert_rejected(selection, trace, ("diffusion (ImageType DIFFUSION/TRACEW)", "derived"))


def test_no_axial_t2_gives_none_and_keeps_every_candidate(tmp_path: Path) -> None:
    s = generate_uid()
    write_series(tmp_path, s, 1, "t2_haste_cor", iop=CORONAL, te=92)
    write_series(tmp_path, s, 2, "t2_haste_sag", iop=SAGITTAL, te=92)
    write_series(tmp_path, s, 3, "t1_vibe_tra", te=2.4, tr=6, scanning_sequence="GR")
    write_series(tmp_path, s, 4, "t2_haste_tra_obl", iop=tilted_axial(40), te=92)
    selection = select(tmp_path)
    assert selection.series_instance_uid is None
    assert len(selection.candidates) == 4
    assert all(not c.eligible for c in selection.candidates)
    reasons = " ".join(r for c in selection.candidates for r in c.reasons)
    assert "oblique (normal 40 deg from z)" in reasons
    assert selection.to_json()["series_instance_uid"] is None


def test_slightly_tilted_axial_is_axial(tmp_path: Path) -> None:
    t2 = write_series(tmp_path, generate_uid(), 1, "t2_haste_tra", iop=tilted_axial(12), te=92)
    selection = select(tmp_path)
    assert selection.series_instance_uid == t2.uid
    assert "axial (normal 12 deg from z)" in selection.candidates[0].reasons


def test_too_few_slices_and_not_mr_and_enhanced_mr(tmp_path: Path) -> None:
    s = generate_uid()
    short = write_series(tmp_path, s, 1, "t2_haste_tra", n=4, te=92)
    sc = write_series(
        tmp_path,
        s,
        2,
        "t2_haste_tra overlay",
        modality="OT",
        te=92,
        sop_class=SecondaryCaptureImageStorage,
    )
    enhanced = write_series(
        tmp_path,
        s,
        3,
        "T2W_SSh_TSE",
        n=1,
        te=None,
        tr=None,
        sop_class="1.2.840.10008.5.1.4.1.1.4.1",
    )
    mr_sc = write_series(
        tmp_path, s, 4, "t2 screenshot", te=92, sop_class=SecondaryCaptureImageStorage
    )
    selection = select(tmp_path)
    assert selection.series_instance_uid is None
    assert_rejected(selection, short, ("too few slices (4 position(s), need 10)",))
    assert candidate(selection, sc).reasons == ("rejected: modality OT, not MR",)
    assert candidate(selection, enhanced).reasons == (
        "rejected: multi-frame Enhanced MR not supported yet",
    )
    assert_rejected(selection, mr_sc, ("Secondary Capture Image Storage is not MR Image Storage",))


def test_ties_go_to_more_slices_then_lower_series_number(tmp_path: Path) -> None:
    s = generate_uid()
    late = write_series(tmp_path, s, 9, "t2_haste_tra", n=20, te=92)
    early = write_series(tmp_path, s, 4, "t2_haste_tra", n=20, te=92)
    selection = select(tmp_path)
    assert selection.candidates[0].score == selection.candidates[1].score
    assert selection.series_instance_uid == early.uid
    assert [c.series_instance_uid for c in selection.candidates] == [early.uid, late.uid]

    more = write_series(tmp_path, s, 12, "t2_haste_tra", n=24, te=92)
    assert select(tmp_path).series_instance_uid == more.uid


def test_post_contrast_names_are_rejected(tmp_path: Path) -> None:
    s = generate_uid()
    names = ["T2 +C", "t2_haste_tra_post", "Ax SSFSE T2 gad", "T2W_SSh portal"]
    written = [write_series(tmp_path, s, k + 1, name, te=90) for k, name in enumerate(names)]
    pre = write_series(tmp_path, s, 9, "t2_haste_tra_pre", te=90)
    selection = select(tmp_path)
    assert selection.series_instance_uid == pre.uid
    for w in written:
        assert_rejected(selection, w, ("contrast-enhanced",))


def test_multi_echo_and_irregular_stacks_score_lower(tmp_path: Path) -> None:
    s = generate_uid()
    plain = write_series(tmp_path, s, 1, "t2_tse_tra", te=90)
    dual = write_series(
        tmp_path,
        s,
        2,
        "t2_tse_tra_dual",
        te=90,
        per_image=[{"EchoTime": 90.0}, {"EchoTime": 180.0}],
    )
    gaps = write_series(
        tmp_path, s, 3, "t2_tse_tra_gaps", positions=[*range(0, 60, 6), *range(90, 150, 6)], te=90
    )
    selection = select(tmp_path)
    assert selection.series_instance_uid == plain.uid
    assert "multi-echo (TE 90/180 ms)" in candidate(selection, dual).reasons
    assert any(
        r.startswith("slice positions not a regular stack")
        for r in candidate(selection, gaps).reasons
    )
    assert candidate(selection, gaps).eligible


def test_a_malformed_value_does_not_stop_the_study(tmp_path: Path) -> None:
    s = generate_uid()
    t2 = write_series(tmp_path, s, 1, "t2_haste_tra", te=92, per_image=[{}, {"EchoTime": 999.5}])
    broken = write_series(tmp_path, s, 2, "t2_haste_tra_broken", te=92, extra={"FlipAngle": 777.5})
    for path in [*t2.paths[1::2], *broken.paths]:
        data = path.read_bytes()
        data = data.replace(b"999.5 ", b"abc.5 ").replace(b"777.5 ", b"xyz.5 ")
        path.write_bytes(data)
    for path in broken.paths:
        data = path.read_bytes()
        path.write_bytes(data.replace(b"0.000000\\1.000000", b"0.000000\\one_0000"))
    selection = select(tmp_path)
    assert selection.series_instance_uid == t2.uid
    assert "TE 92 ms: T2-weighted" in selection.candidates[0].reasons
    assert_rejected(selection, broken, ("no usable ImageOrientationPatient",))
