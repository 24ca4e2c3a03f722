"""DCMTK's dsrdump renders the SR and the KOS: what a PACS with a DCMTK-based SR view shows."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.outputs import OutputOptions, build_outputs, write_outputs
from tests.pipeline.outputs.synthetic_mr import make_mr_series, make_result

DSRDUMP = shutil.which("dsrdump") or "/usr/bin/dsrdump"


def _dsrdump(path: Path) -> str:
    proc = subprocess.run(
        [DSRDUMP, "-Ee", str(path)], capture_output=True, text=True, timeout=60, check=False
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
