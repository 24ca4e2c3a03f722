"""``liver-agent phantom``: write a synthetic liver MRI study (DICOM) with its ground truth."""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from agent.cli._common import JsonOption, console, fail, print_json
from pipeline.phantoms import ALL_ROLES, generate_study


class VendorChoice(StrEnum):
    siemens = "siemens"
    ge = "ge"
    philips = "philips"


class SyntaxChoice(StrEnum):
    explicit = "explicit"
    implicit = "implicit"
    deflated = "deflated"
    rle = "rle"
    jpeg_ls = "jpeg-ls"
    jpeg2000 = "jpeg2000"
    jpeg_lossless = "jpeg-lossless"


_SYNTAX_UID = {
    SyntaxChoice.explicit: ExplicitVRLittleEndian,
    SyntaxChoice.implicit: ImplicitVRLittleEndian,
    SyntaxChoice.deflated: DeflatedExplicitVRLittleEndian,
    SyntaxChoice.rle: RLELossless,
    SyntaxChoice.jpeg_ls: JPEGLSLossless,
    SyntaxChoice.jpeg2000: JPEG2000Lossless,
    SyntaxChoice.jpeg_lossless: JPEGLosslessSV1,
}


def parse_roles(text: str | None) -> tuple[str, ...] | None:
    """``a,b,c`` -> roles; None for the full exam; typer.BadParameter names the valid roles."""
    if text is None or not text.strip():
        return None
    roles = tuple(r.strip() for r in text.split(",") if r.strip())
    unknown = [r for r in roles if r not in ALL_ROLES]
    if unknown:
        raise typer.BadParameter(
            f"unknown role(s) {', '.join(unknown)}; choose from {', '.join(ALL_ROLES)}"
        )
    return roles


def register(app: typer.Typer) -> None:
    @app.command("phantom")
    def phantom(
        out_dir: Annotated[Path, typer.Argument(help="folder to write the study into")],
        cirrhotic: Annotated[
            bool, typer.Option("--cirrhotic/--normal", help="cirrhotic or normal liver")
        ] = False,
        vendor: Annotated[VendorChoice, typer.Option(help="header and naming style")] = (
            VendorChoice.siemens
        ),
        seed: Annotated[int, typer.Option(min=0, help="same seed, same study")] = 0,
        roles: Annotated[
            str | None,
            typer.Option(help=f"comma-separated series roles (default all): {','.join(ALL_ROLES)}"),
        ] = None,
        slices: Annotated[int, typer.Option(min=1, max=400, help="axial T2 slices")] = 36,
        matrix: Annotated[int, typer.Option(min=16, max=1024, help="axial T2 rows/columns")] = 256,
        ascites: Annotated[
            bool | None,
            typer.Option(
                "--ascites/--no-ascites", help="default: by seed for cirrhotic, none for normal"
            ),
        ] = None,
        syntax: Annotated[
            SyntaxChoice, typer.Option("--transfer-syntax", help="pixel data encoding")
        ] = SyntaxChoice.explicit,
        as_json: JsonOption = False,
    ) -> None:
        """Write a synthetic multi-series liver MRI study (labelled DEMO data, fake patient)."""
        chosen = parse_roles(roles)
        if out_dir.exists() and any(out_dir.iterdir()):
            fail(f"{out_dir} is not empty: choose a new folder")
        started = time.perf_counter()
        try:
            study = generate_study(
                out_dir,
                cirrhotic=cirrhotic,
                vendor=vendor.value,
                seed=seed,
                roles=chosen,
                axial_t2_slices=slices,
                matrix=matrix,
                ascites=ascites,
                transfer_syntax=_SYNTAX_UID[syntax],
            )
        except ValueError as err:
            fail(str(err), 2)
        elapsed = time.perf_counter() - started
        summary = {
            "path": str(study.path),
            "study_instance_uid": study.study_instance_uid,
            "vendor": study.vendor,
            "cirrhotic": study.cirrhotic,
            "ascites": study.ascites,
            "seed": study.seed,
            "target_series_uid": study.target_series_uid,
            "caudate_index": study.caudate_index,
            "liver_extent": list(study.liver_extent) if study.liver_extent else None,
            "liver_volume_ml": round(study.liver_volume_ml, 1) if study.liver_volume_ml else None,
            "seconds": round(elapsed, 2),
            "series": [
                {
                    "series_instance_uid": s.series_instance_uid,
                    "role": s.role,
                    "description": s.description,
                    "files": len(s.files),
                }
                for s in study.series
            ],
        }
        if as_json:
            print_json(summary)
            return
        kind = "cirrhotic" if study.cirrhotic else "normal"
        console.print(
            f"phantom study {study.study_instance_uid} ({study.vendor}, {kind}, seed {study.seed})"
            f" in {study.path} [{elapsed:.1f} s]",
            highlight=False,
        )
        for s in study.series:
            mark = "  <- target" if s.series_instance_uid == study.target_series_uid else ""
            console.print(
                f"  {s.role:<13} {s.description:<40} {len(s.files):>4} files{mark}", highlight=False
            )
        if study.target_series_uid is None:
            console.print("  no axial T2 series: a selector should find none", highlight=False)
        else:
            console.print(
                f"  caudate slice {study.caudate_index}, liver slices {study.liver_extent}, "
                f"liver {study.liver_volume_ml:.0f} ml (slices ascending feet to head)",
                highlight=False,
            )
