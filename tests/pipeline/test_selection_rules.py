"""Selection rules: shipped defaults, a site file that changes the choice, invalid files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydicom.uid import generate_uid
from test_selection_headers import Written, write_series

from pipeline.errors import PipelineError
from pipeline.selection import DEFAULT_RULES_FILE, SelectionRules, load_rules, select_t2_series
from pipeline.selection.checks import CHECKS
from pipeline.selection.features import normalise_text
from pipeline.selection.rules import Checks
from pipeline.study_headers import scan_study


def two_axial_t2(folder: Path) -> tuple[Written, Written, Written]:
    s = generate_uid()
    haste = write_series(folder, s, 3, "t2_haste_tra_mbh", te=92, tr=1400)
    tse_fs = write_series(
        folder, s, 4, "t2_tse_tra_fs", te=84, tr=3200, extra={"ScanOptions": "FS"}
    )
    post = write_series(
        folder, s, 9, "t2_haste_tra_mbh", n=24, te=92, tr=1400,
        extra={"ContrastBolusAgent": "Primovist"},
    )  # fmt: skip
    return haste, tse_fs, post


def site_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site-rules.yaml"
    path.write_text(text)
    return path


def test_shipped_rules_load_and_every_check_has_code() -> None:
    rules = load_rules()
    assert isinstance(rules, SelectionRules)
    assert set(CHECKS) == set(Checks.model_fields)
    shipped = yaml.safe_load(DEFAULT_RULES_FILE.read_text())
    assert set(shipped["checks"]) == set(Checks.model_fields)  # the YAML documents every check
    assert rules.checks.not_fat_suppressed.score > rules.checks.single_shot.score > 0
    assert rules.checks.contrast.reject
    assert "FS" in rules.tokens.scan_options_fat_suppression


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("t2_haste_tra_mbh", ("haste",)),
        ("t2_fl2d_tra", ("gre",)),
        ("t2 space cor mrcp", ("mrcp", "t2")),
        ("ax ssfse t2", ("ssfse", "t2")),
        ("t2w ssh tse", ("ssh", "tse", "t2")),
        ("t2w spair", ("spair", "t2")),
        ("T2SPIR", ("spir", "t2")),
        ("T2-weighted TSE", ("tse", "t2")),
        ("gre t2*", ("t2*", "gre")),
        ("ep2d diff b50 400 800 tra", ("diffusion", "b-value")),
        ("3-plane loc", ("localizer",)),
        ("t2 +c", ("post",)),
    ],
)
def test_shipped_keywords_match_vendor_names(text: str, expected: tuple[str, ...]) -> None:
    rules = load_rules()
    text = normalise_text(text)
    matched = {name for name, kw in rules.keywords.items() if kw.regex.search(text)}
    assert set(expected) <= matched
    if "t2*" in text:
        assert "t2" not in matched  # T2* is not T2
    if "mrcp" not in text:
        assert "mrcp" not in matched


def test_site_file_prefers_fat_suppression(tmp_path: Path) -> None:
    haste, tse_fs, _ = two_axial_t2(tmp_path / "study")
    study = scan_study([tmp_path / "study"])
    assert select_t2_series(study).series_instance_uid == haste.uid
    rules = load_rules(
        site_file(
            tmp_path,
            "checks:\n  not_fat_suppressed: {score: 0}\n  fat_suppressed: {score: 12}\n",
        )
    )
    assert rules.checks.contrast.reject  # untouched defaults survive the merge
    assert select_t2_series(study, rules).series_instance_uid == tse_fs.uid


def test_site_file_accepts_post_contrast_and_adds_a_keyword(tmp_path: Path) -> None:
    _, tse_fs, post = two_axial_t2(tmp_path / "study")
    study = scan_study([tmp_path / "study"])
    rules = load_rules(
        site_file(
            tmp_path,
            "checks:\n"
            "  contrast: {reject: false, score: -1}\n"
            "keywords:\n"
            "  site_fs: {pattern: 'tse tra fs$', fields: [description], score: 40,"
            " label: 'site FS protocol'}\n",
        )
    )
    assert "site_fs" in rules.keywords
    assert "haste" in rules.keywords
    selection = select_t2_series(study, rules)
    assert selection.series_instance_uid == tse_fs.uid
    chosen = selection.candidates[0]
    assert "description matches 'site FS protocol'" in chosen.reasons
    post_candidate = next(c for c in selection.candidates if c.series_instance_uid == post.uid)
    assert post_candidate.eligible
    assert "contrast-enhanced (ContrastBolusAgent 'Primovist')" in post_candidate.reasons


def test_site_file_can_switch_a_keyword_off(tmp_path: Path) -> None:
    s = generate_uid()
    folder = tmp_path / "study"
    dwi = write_series(folder, s, 1, "t2 dwi look-alike", te=90, tr=2000)
    study = scan_study([folder])
    assert select_t2_series(study).series_instance_uid is None
    rules = load_rules(site_file(tmp_path, "keywords:\n  diffusion: {enabled: false}\n"))
    assert select_t2_series(study, rules).series_instance_uid == dwi.uid


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("checks:\n  contrast: {reject: maybe}\n", "checks.contrast.reject"),
        ("checks:\n  contrst: {score: 3}\n", "checks.contrst"),
        ("thresholds:\n  min_slices: -4\n", "thresholds.min_slices"),
        ("thresholds:\n  axial_max_angle_deg: wide\n", "thresholds.axial_max_angle_deg"),
        ("keywords:\n  bad: {pattern: 't2(', fields: [description]}\n", "keywords.bad.pattern"),
        ("keywords:\n  bad: {pattern: 't2', fields: [header]}\n", "keywords.bad.fields"),
        ("keywords:\n  bad: {pattern: 't2', sets: [t3]}\n", "keywords.bad.sets"),
        ("version: 2\n", "version"),
    ],
)
def test_invalid_site_file_names_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = site_file(tmp_path, text)
    with pytest.raises(PipelineError) as info:
        load_rules(path)
    assert info.value.code == "invalid_selection_rules"
    assert field in info.value.message
    assert str(path) in info.value.message


@pytest.mark.parametrize(
    ("text", "words"),
    [("- just\n- a list\n", "must hold a mapping"), ("checks: {a: [\n", "not valid YAML")],
)
def test_rules_file_that_is_not_a_mapping(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(PipelineError, match=words) as info:
        load_rules(site_file(tmp_path, text))
    assert info.value.code == "invalid_selection_rules"


def test_missing_rules_file(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="cannot read selection rules file") as info:
        load_rules(tmp_path / "nope.yaml")
    assert info.value.code == "invalid_selection_rules"


def test_empty_site_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_rules(site_file(tmp_path, "")) == load_rules()
