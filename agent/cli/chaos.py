"""CLI: ``chaos to-dicom`` (a CHAOS NIfTI subject as a DICOM MR series)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agent.cli._common import JsonOption, console, fail, print_json
from pipeline.errors import PipelineError
from pipeline.nifti_dicom import SliceOrder

chaos_app = typer.Typer(
    help="CHAOS data (CC BY-NC-SA 4.0, research use): write subjects as DICOM series.",
    no_args_is_help=True,
)


@chaos_app.command(
    "to-dicom",
    help="Write CHAOS NIfTI subjects (image_<N>.nii.gz) as DICOM MR series (T2 SPIR headers, "
    "geometry from the NIfTI affine), one folder OUT/<N>/ per subject.",
)
def to_dicom(
    data: Annotated[Path, typer.Argument(help="CHAOS folder, or one image_<N>.nii.gz file")],
    out: Annotated[Path, typer.Argument(help="folder for the series")],
    subject: Annotated[
        list[str] | None, typer.Option("--subject", help="subject number (repeat; default all)")
    ] = None,
    order: Annotated[
        SliceOrder,
        typer.Option("--order", help="which end gets InstanceNumber 1: feet-first or head-first"),
    ] = SliceOrder.FEET_FIRST,
    json_out: JsonOption = False,
) -> None:
    from pipeline.nifti_dicom import write_nifti_as_dicom

    if data.is_file():
        images = {data.name.removeprefix("image_").split(".nii")[0]: data}
    elif data.is_dir():
        images = {
            p.name.removeprefix("image_").split(".nii")[0]: p
            for p in sorted(data.glob("image_*.nii*"))
        }
    else:
        fail(f"{data} does not exist", 2)
    if subject:
        missing = [s for s in subject if s not in images]
        if missing:
            fail(f"no image_<N>.nii.gz for subject(s) {', '.join(missing)} in {data}", 2)
        images = {s: images[s] for s in subject}
    if not images:
        fail(f"no image_<N>.nii.gz files in {data}", 2)
    written = []
    for sid, image in images.items():
        try:
            series = write_nifti_as_dicom(image, out / sid, order=order, subject=sid)
        except (PipelineError, OSError) as err:
            fail(f"{image}: {err}", 1)
        written.append(
            {
                "subject": sid,
                "folder": str(out / sid),
                "slices": len(series.paths),
                "study_instance_uid": series.study_instance_uid,
                "series_instance_uid": series.series_instance_uid,
            }
        )
        if not json_out:
            console.print(f"{sid}: {len(series.paths)} slices -> {out / sid}", highlight=False)
    if json_out:
        print_json(written)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.add_typer(chaos_app, name="chaos")
