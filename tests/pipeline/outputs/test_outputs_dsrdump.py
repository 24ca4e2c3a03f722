"""DCMTK's dsrdump renders the SR and the KOS: what a PACS with a DCMTK-based SR view shows."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.outputs import OutputOptions, build_outputs, write_outputs
from tests.pipeline.outputs.synthetic_mr import make_mr_series, make_not_evaluated, make_result

DSRDUMP = shutil.which("dsrdump") or "/usr/bin/dsrdump"


def _dsrdump(path: Path, *options: str) -> str:
    proc = subprocess.run(
        [DSRDUMP, "-Ee", *options, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "E:" not in proc.stderr, proc.stderr  # no error while reading the document
    return proc.stdout


def test_dsrdump_renders_sr_and_kos(tmp_path: Path) -> None:
    if not Path(DSRDUMP).exists():
        pytest.fail("dsrdump missing: install the Debian package dcmtk")
    result = make_result(make_mr_series(10, 48, 48), present=True, probability=0.8765)
    paths = write_outputs(build_outputs(result, OutputOptions(kos=True)), tmp_path)
    sr = _dsrdump(tmp_path / "sr.dcm")
    probability = re.search(
        r'NUM:\(,,"Probability of cirrhosis"\)="([0-9.]+)" \(%,UCUM,"percent"\)', sr
    )
    assert probability is not None, sr
    assert float(probability.group(1)) == pytest.approx(87.65)
    assert 'CODE:(,,"Cirrhosis of liver")=(52101004,SCT,"Present")' in sr
    assert 'SCOORD:(,,"Image Region")=(POLYLINE,' in sr
    assert 'NUM:(,,"Area")=' in sr
    assert 'NUM:(,,"Volume")=' in sr
    assert 'IMAGE:(,,"Referenced Segment")=(SG image,,1)' in sr
    kos = _dsrdump(tmp_path / "kos.dcm")
    assert 'CONTAINER:(,,"Of Interest")' in kos
    assert 'IMAGE:(,,"Source")=(MR image,)' in kos
    assert [p.name for p in paths] == ["seg.dcm", "sr.dcm", "kos.dcm"]


def test_dsrdump_renders_the_not_evaluated_sr(tmp_path: Path) -> None:
    if not Path(DSRDUMP).exists():
        pytest.fail("dsrdump missing: install the Debian package dcmtk")
    result = make_not_evaluated(make_mr_series(3, 16, 16), "no_axial_t2", "no axial T2 series")
    (path,) = write_outputs(build_outputs(result), tmp_path)
    sr = _dsrdump(path, "+Pc", "+Pl")  # concept name codes, whole text values
    assert '<CONTAINER:(18748-4,LN,"Diagnostic Imaging Report")=SEPARATE>' in sr, sr
    assert '<contains CONTAINER:(121070,DCM,"Findings")=SEPARATE>' in sr, sr
    assert 'TEXT:(121071,DCM,"Finding")="Not evaluated: no axial T2 series"' in sr, sr
    assert 'TEXT:(121106,DCM,"Comment")="Reason code: no_axial_t2"' in sr, sr
    assert "NUM:" not in sr
    assert "SCOORD" not in sr
