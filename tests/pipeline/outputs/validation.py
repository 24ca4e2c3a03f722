"""dciodvfy (dicom3tools) as a test oracle for written result objects."""

from __future__ import annotations

import subprocess
from pathlib import Path

DCIODVFY = Path("/usr/bin/dciodvfy")


def dciodvfy(path: Path) -> tuple[list[str], str]:
    """Run dciodvfy on a file; return its "Error" lines and its full output."""
    proc = subprocess.run(
        [str(DCIODVFY), str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    output = proc.stdout + proc.stderr
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    return errors, output


def assert_valid(path: Path) -> None:
    """Fail with dciodvfy's whole output when it reports any error for ``path``."""
    errors, output = dciodvfy(path)
    assert not errors, f"dciodvfy reports errors for {path.name}:\n{output}"
