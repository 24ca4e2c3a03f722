"""CLI: ``chaos to-dicom`` (a CHAOS NIfTI subject as a DICOM MR series), ``model build-chaos``
(a real-anatomy segmentation bundle in one command) and ``model cv-seg`` (its cross-validation)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agent.cli._common import JsonOption, console, fail, print_json
from agent.cli.model import Device, model_app, seg_table
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


DataOpt = Annotated[
    Path, typer.Option("--data", help="CHAOS-style folder: image_<N>.nii.gz + label_<N>.nii.gz")
]
DeviceOpt = Annotated[Device, typer.Option("--device", help="auto: CUDA if available, else CPU")]
SeedOpt = Annotated[int, typer.Option("--seed", help="split, initialisation and augmentation")]
ImagenetOpt = Annotated[
    Path | None,
    typer.Option(
        "--imagenet", dir_okay=False, help="local torchvision ResNet34 ImageNet checkpoint (.pth)"
    ),
]
SizeOpt = Annotated[
    int, typer.Option("--input-size", min=32, help="network input in pixels (the recipe: 256)")
]
BiasOpt = Annotated[
    bool, typer.Option("--bias-field/--no-bias-field", help="bias-field augmentation")
]
OrganOpt = Annotated[
    bool,
    typer.Option(
        "--organ-contrast/--no-organ-contrast",
        help="organ-contrast augmentation (the liver alone darker or brighter)",
    ),
]


@model_app.command(
    "build-chaos",
    help="Train the project's liver segmentation recipe (U-Net/ResNet34, 2.5D, 256 x 256) on "
    "CHAOS-style data and write a bundle with a model card (subjects, recipe, held-out test "
    "metrics, data licence CC BY-NC-SA 4.0: research, non-commercial). --minutes becomes a fixed "
    "epoch count (same seed, same metrics). Use it with model.segmentation in the settings. "
    "Download CHAOS from https://chaos.grand-challenge.org/ (Kavur et al., Med Image Anal 2021).",
)
def build_chaos(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", help="bundle folder (outside the repository)")],
    minutes: Annotated[float, typer.Option("--minutes", min=0.0, help="training budget")] = 60.0,
    device: DeviceOpt = Device.AUTO,
    seed: SeedOpt = 0,
    imagenet: ImagenetOpt = None,
    input_size: SizeOpt = 256,
    bias_field: BiasOpt = False,
    organ_contrast: OrganOpt = False,
    flip_tta: Annotated[
        bool, typer.Option("--flip-tta/--no-flip-tta", help="left-right flip test-time aug.")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace the bundle")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bars")] = False,
    json_out: JsonOption = False,
) -> None:
    from pipeline.training.chaos import ChaosRecipe
    from pipeline.training.chaos import build_chaos as build

    if out.exists() and not overwrite:
        fail(f"{out} exists; choose another folder or give --overwrite", 2)
    recipe = ChaosRecipe(
        input_size=input_size,
        bias_field=bias_field,
        organ_contrast=organ_contrast,
        flip_tta=flip_tta,
    )
    try:
        bundle = build(
            data,
            out,
            minutes=minutes,
            device=device.value,
            seed=seed,
            imagenet=imagenet,
            recipe=recipe,
            progress=not quiet and not json_out,
            overwrite=overwrite,
        )
    except PipelineError as err:
        fail(f"{err.message} [{err.code}]", 1)
    card = bundle.manifest.training.settings["model_card"]
    if json_out:
        print_json({"bundle": str(bundle.path), "model_card": card})
        return
    test = card["test_metrics"]
    summary = test["summary"]
    console.print(
        f"bundle: {bundle.path}\n"
        f"  {card['epochs']} epochs on {card['device']} ({card['wall_minutes']} min), seed "
        f"{card['seed']}; train {', '.join(card['training_subjects'])}; test "
        f"{', '.join(card['test_subjects'])}",
        highlight=False,
    )
    for cid, value in test["dice"].items():
        hd95 = test["hd95_mm"][cid]
        console.print(
            f"  test subject {cid}: Dice {value:.4f}, HD95 "
            f"{'n/a' if hd95 is None else f'{hd95:.1f} mm'}, volume error "
            f"{test['volume_error_pct'][cid] or 0:+.1f} %",
            highlight=False,
        )
    console.print(f"  test mean Dice {summary['dice']['mean']:.4f}", highlight=False)
    console.print(
        f"use it: set model.segmentation: {bundle.path} in the settings "
        "(RESEARCH USE ONLY; CHAOS data licence CC BY-NC-SA 4.0)",
        highlight=False,
    )


@model_app.command(
    "cv-seg",
    help="Subject-level k-fold cross-validation of the build-chaos recipe: every subject is "
    "tested once by the model trained without it; per-subject Dice, HD95, mean surface distance "
    "and volume error, with and without post-processing and flip test-time augmentation; "
    "writes OUT/cv.json and OUT/cv.csv. Deterministic for a seed.",
)
def cv_seg(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", help="folder for cv.json, cv.csv, fold models")],
    folds: Annotated[int, typer.Option("--folds", min=2, help="number of folds")] = 5,
    minutes: Annotated[
        float, typer.Option("--minutes", min=0.0, help="training budget per fold")
    ] = 10.0,
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="epochs per fold (instead of --minutes)")
    ] = None,
    device: DeviceOpt = Device.AUTO,
    seed: SeedOpt = 0,
    imagenet: ImagenetOpt = None,
    input_size: SizeOpt = 256,
    bias_field: BiasOpt = False,
    organ_contrast: OrganOpt = False,
    only: Annotated[
        list[int] | None,
        typer.Option(
            "--fold",
            min=1,
            help="run only this fold (repeat; the folds are the same as in a full run); "
            "for quick comparisons of recipes",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bars")] = False,
    json_out: JsonOption = False,
) -> None:
    from pipeline.training.chaos import ChaosRecipe, cross_validate

    recipe = ChaosRecipe(
        input_size=input_size, bias_field=bias_field, organ_contrast=organ_contrast
    )
    try:
        result = cross_validate(
            data,
            out,
            folds=folds,
            minutes_per_fold=minutes,
            epochs=epochs,
            device=device.value,
            seed=seed,
            imagenet=imagenet,
            recipe=recipe,
            progress=not quiet and not json_out,
            only_folds=only,
        )
        json_path, csv_path = result.write(out)
    except (PipelineError, ValueError) as err:
        fail(str(err), 1)
    if json_out:
        print_json(result.to_json())
        return
    for name, evaluation in result.variants.items():
        console.print(seg_table(evaluation, f"{folds}-fold CV, {name}"))
    console.print(f"wrote {json_path} and {csv_path}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.add_typer(chaos_app, name="chaos")
