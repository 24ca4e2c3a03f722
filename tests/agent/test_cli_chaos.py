"""``liver-agent chaos to-dicom``: NIfTI subjects of a CHAOS-style folder as DICOM series."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import typer
from pydicom import dcmread
from typer.testing import CliRunner

from agent.cli import chaos as chaos_cli


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Test app with only the chaos commands."""

    chaos_cli.register(app)
    return app


def test_to_dicom_writes_one_series_per_subject(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    affine = np.diag([-1.5, 1.5, 6.0, 1.0])
    for sid, slices in (("2", 5), ("11", 4)):
        volume = np.full((8, 8, slices), float(sid))
        nib.save(nib.Nifti1Image(volume, affine), str(data / f"image_{sid}.nii.gz"))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        _app(), ["chaos", "to-dicom", str(data), str(out), "--order", "head-first", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    written = {item["subject"]: item for item in json.loads(result.stdout)}
    assert {sid: item["slices"] for sid, item in written.items()} == {"2": 5, "11": 4}
    first = dcmread(out / "11" / "IM0001.dcm")
    last = dcmread(out / "11" / "IM0004.dcm")
    assert float(first.ImagePositionPatient[2]) > float(last.ImagePositionPatient[2])  # head first
    assert int(first.pixel_array.max()) == 11
    assert str(first.SeriesInstanceUID) == written["11"]["series_instance_uid"]


def test_to_dicom_names_a_missing_subject(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        _app(), ["chaos", "to-dicom", str(tmp_path), str(tmp_path / "o"), "--subject", "7"]
    )
    assert result.exit_code == 2
    assert "7" in result.stderr
