"""Series selection on the phantom generator's studies: each vendor's target series is chosen."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.phantoms import ALL_ROLES, VENDORS, PhantomStudy, Vendor, generate_study
from pipeline.results import SeriesCandidate, SeriesSelection
from pipeline.selection import select_t2_series
from pipeline.study_headers import scan_study

# Role -> words of which at least one must appear in a rejection reason of that series.
REJECTED_BECAUSE: dict[str, tuple[str, ...]] = {
    "localizer": ("localizer",),
    "cor_t2": ("coronal",),
    "t1_in_opp": ("T1-weighted",),
    "t2star": ("gradient echo",),
    "mrcp": ("MRCP",),
    "dwi": ("diffusion",),
    "adc": ("ADC",),
    "dyn_pre": ("T1-weighted", "gradient echo"),
    "dyn_arterial": ("contrast",),
    "dyn_portal": ("contrast",),
    "dyn_delayed": ("contrast",),
}
SMALL = {"axial_t2_slices": 12, "matrix": 64}


@dataclass
class Selected:
    study: PhantomStudy
    selection: SeriesSelection

    def candidate(self, role: str) -> SeriesCandidate:
        uid = self.study.series_by_role(role).series_instance_uid
        return next(c for c in self.selection.candidates if c.series_instance_uid == uid)


def generate_and_select(folder: Path, vendor: Vendor, roles: tuple[str, ...] | None) -> Selected:
    study = generate_study(folder, cirrhotic=False, vendor=vendor, seed=11, roles=roles, **SMALL)
    return Selected(study, select_t2_series(scan_study([study.path])))


@pytest.fixture(scope="module", params=VENDORS)
def full_study(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Selected:
    return generate_and_select(tmp_path_factory.mktemp(request.param), request.param, None)


def test_every_role_is_in_the_full_study(full_study: Selected) -> None:
    assert {s.role for s in full_study.study.series} == set(ALL_ROLES)
    assert len(full_study.selection.candidates) == len(ALL_ROLES)


def test_target_series_is_chosen(full_study: Selected) -> None:
    study, selection = full_study.study, full_study.selection
    assert study.target_role == "ax_t2"
    assert selection.series_instance_uid == study.target_series_uid
    target = full_study.candidate("ax_t2")
    assert target.eligible
    assert "no fat suppression (preferred)" in target.reasons
    for series in study.series:
        if series.role == "ax_t2":
            continue
        other = full_study.candidate(series.role)
        assert other.reasons, series.role
        assert not other.eligible or other.score < target.score, (series.role, other)


def test_distractors_are_rejected_with_their_reason(full_study: Selected) -> None:
    for role, words in REJECTED_BECAUSE.items():
        c = full_study.candidate(role)
        assert not c.eligible, (role, c.reasons)
        rejections = " ".join(r for r in c.reasons if r.startswith("rejected:"))
        assert any(w in rejections for w in words), (role, c.reasons)


def test_fat_suppressed_axial_t2_is_eligible_and_second(full_study: Selected) -> None:
    fs = full_study.candidate("ax_t2_fs")
    assert fs.eligible
    assert any(r.startswith("fat-suppressed") for r in fs.reasons)
    assert full_study.selection.candidates[1].series_instance_uid == fs.series_instance_uid


@pytest.mark.parametrize("vendor", VENDORS)
def test_without_the_non_fs_t2_the_fs_t2_is_chosen(tmp_path: Path, vendor: Vendor) -> None:
    roles = tuple(r for r in ALL_ROLES if r not in ("ax_t2", "dwi", "adc", "mrcp"))
    selected = generate_and_select(tmp_path, vendor, roles)
    assert selected.study.target_role == "ax_t2_fs"
    assert selected.selection.series_instance_uid == selected.study.target_series_uid


@pytest.mark.parametrize("vendor", VENDORS)
def test_no_axial_t2_gives_none(tmp_path: Path, vendor: Vendor) -> None:
    roles = tuple(r for r in ALL_ROLES if r not in ("ax_t2", "ax_t2_fs"))
    selected = generate_and_select(tmp_path, vendor, roles)
    assert selected.study.target_series_uid is None
    assert selected.selection.series_instance_uid is None
    assert len(selected.selection.candidates) == len(roles)
    assert all(not c.eligible for c in selected.selection.candidates)
