"""CLI: ``train seg|cls``, ``evaluate seg|cls`` and ``model info|build-demo`` (model bundles)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from agent.cli._common import ConfigOption, JsonOption, console, fail, print_json, settings_or_exit
from agent.cli.cohort_model import (
    COHORT_HELP,
    evaluate_cohort,
    print_card,
    print_report,
    train_from_cohort,
)
from pipeline.errors import PipelineError

logger = logging.getLogger(__name__)

T = TypeVar("T")

SEG_DATA_HELP = """\
Data layout (seg): a folder of CHAOS-style NIfTI pairs image_<case>.nii.gz +
label_<case>.nii.gz (liver = label 1, other labels ignored), e.g. the CHAOS T2-SPIR folder as
it is; and/or DICOM series in subfolders <case>/ with label_<case>.npy, a (slices, rows, columns)
array in the series' order sorted along the slice normal (inferior first). NIfTI volumes are
reoriented from their affine to DICOM axial order: columns to the patient's left, rows to the
posterior, slices inferior to superior - the order the agent feeds DICOM slices in."""

CLS_DATA_HELP = """\
Data layout (cls): a folder with labels.csv (header case,label[,slice]; label cirrhosis|normal
or 1|0) and per case image_<case>.nii.gz + mask_<case>.nii.gz (liver mask, nonzero = liver; or
label_<case>.nii.gz with liver = 1), a 2D caudate-level slice or a 3D volume; or a DICOM series
folder <case>/ + mask_<case>.npy (slices, rows, columns). For a volume, 'slice' is the index
along the NIfTI's third axis (or the sorted DICOM series); without it the slice at 45 % of the
liver's extent from its top is used."""

# One paragraph each: typer re-wraps help text, so hard line breaks would show.
SEG_DATA_HELP = " ".join(SEG_DATA_HELP.split())
CLS_DATA_HELP = " ".join(CLS_DATA_HELP.split())

train_app = typer.Typer(help="Train a network and write a model bundle.", no_args_is_help=True)
evaluate_app = typer.Typer(help="Evaluate a model bundle on labelled data.", no_args_is_help=True)
model_app = typer.Typer(
    help="Model bundles: check one, build the DEMO bundles, switch one live or silent.",
    no_args_is_help=True,
)


class Split(StrEnum):
    TEST = "test"
    ALL = "all"


class Device(StrEnum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class Precision(StrEnum):
    AUTO = "auto"
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"


class Mode(StrEnum):
    MASKED = "masked"
    WHOLE = "whole"


DataOpt = Annotated[Path, typer.Option("--data", help="labelled data folder (layout above)")]
ClsDataOpt = Annotated[
    Path | None, typer.Option("--data", help="labelled data folder (layout above)")
]
CohortOpt = Annotated[
    Path | None,
    typer.Option("--cohort", help="labelling package of 'cohort export' (instead of --data)"),
]
LabelsOpt = Annotated[
    Path | None,
    typer.Option(
        "--labels",
        help="with --cohort: the filled-in labels CSV (default: labels.csv of the package)",
    ),
]
OutOpt = Annotated[Path, typer.Option("--out", help="bundle folder to write")]
ModelOpt = Annotated[Path, typer.Option("--model", help="model bundle folder")]
DeviceOpt = Annotated[Device, typer.Option("--device", help="auto: CUDA if available, else CPU")]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", min=1, help="training epochs")]
WeightsOpt = Annotated[
    Path | None,
    typer.Option(
        "--encoder-weights",
        help="local torchvision ImageNet checkpoint (resnet34 for seg, resnet50 for cls)",
        dir_okay=False,
    ),
]
FreezeOpt = Annotated[
    bool, typer.Option("--freeze-encoder", help="train only the decoder / classifier head")
]
SeedOpt = Annotated[int, typer.Option("--seed", help="seed of the split and the training")]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", min=1)]
SizeOpt = Annotated[int | None, typer.Option("--input-size", min=16, help="network input (pixels)")]
LrOpt = Annotated[float | None, typer.Option("--lr", min=0.0, help="peak learning rate")]
NameOpt = Annotated[str | None, typer.Option("--name", help="bundle name")]
VersionOpt = Annotated[str, typer.Option("--version", help="bundle version")]
PrecisionOpt = Annotated[
    Precision, typer.Option("--precision", help="auto: bfloat16 where the device supports it")
]
MinutesOpt = Annotated[
    float | None, typer.Option("--max-minutes", help="stop after the epoch that passes this")
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="replace an existing bundle")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="no progress bars")]
SplitOpt = Annotated[
    Split, typer.Option("--split", help="test: the bundle's recorded test cases; all: every case")
]


def _guard(action: Callable[[], T]) -> T:
    try:
        return action()
    except PipelineError as err:
        fail(f"{err.message} [{err.code}]")


def _config(**values: Any) -> Any:
    from pipeline.training.loop import TrainConfig

    return TrainConfig(**{k: v for k, v in values.items() if v is not None})


@train_app.command(
    "seg", help="Train the liver segmentation U-Net (ResNet34 encoder).\n\n" + SEG_DATA_HELP
)
def train_seg(
    data: DataOpt,
    out: OutOpt,
    epochs: EpochsOpt = None,
    device: DeviceOpt = Device.AUTO,
    encoder_weights: WeightsOpt = None,
    freeze_encoder: FreezeOpt = False,
    seed: SeedOpt = 0,
    batch_size: BatchOpt = None,
    input_size: SizeOpt = None,
    lr: LrOpt = None,
    name: NameOpt = None,
    version: VersionOpt = "1",
    precision: PrecisionOpt = Precision.AUTO,
    max_minutes: MinutesOpt = None,
    crop_size: Annotated[
        int | None,
        typer.Option("--crop-size", min=16, help="train on random patches of this size (faster)"),
    ] = None,
    init_from: Annotated[
        Path | None,
        typer.Option("--init-from", help="continue training from this segmentation bundle"),
    ] = None,
    context: Annotated[
        int,
        typer.Option(
            "--context",
            min=0,
            max=1,
            help="1: the slices below and above as extra channels (2.5D); 0: the slice alone",
        ),
    ] = 1,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    from pipeline.training.data import load_segmentation_cases
    from pipeline.training.seg import train_segmentation

    config = _config(
        epochs=epochs,
        device=device.value,
        encoder_weights=encoder_weights,
        freeze_encoder=freeze_encoder,
        seed=seed,
        batch_size=batch_size,
        input_size=input_size,
        lr=lr,
        name=name or "liver-segmentation",
        version=version,
        precision=precision.value,
        max_minutes=max_minutes,
        crop_size=crop_size,
        init_from=init_from,
        context=context,
    )
    cases = _guard(lambda: load_segmentation_cases(data))
    bundle = _guard(
        lambda: train_segmentation(
            cases,
            out,
            config,
            data_description=f"{len(cases)} labelled series from {data.name}",
            progress=not quiet,
            overwrite=overwrite,
        )
    )
    _print_trained(bundle)


@train_app.command(
    "cls",
    help="Train the cirrhosis classifier (ResNet50).\n\n" + CLS_DATA_HELP + "\n\n" + COHORT_HELP,
)
def train_cls(
    out: OutOpt,
    data: ClsDataOpt = None,
    cohort: CohortOpt = None,
    labels: LabelsOpt = None,
    epochs: EpochsOpt = None,
    device: DeviceOpt = Device.AUTO,
    encoder_weights: WeightsOpt = None,
    freeze_encoder: FreezeOpt = False,
    seed: SeedOpt = 0,
    batch_size: BatchOpt = None,
    input_size: SizeOpt = None,
    lr: LrOpt = None,
    name: NameOpt = None,
    version: VersionOpt = "1",
    precision: PrecisionOpt = Precision.AUTO,
    max_minutes: MinutesOpt = None,
    mode: Annotated[
        Mode, typer.Option("--mode", help="masked: liver-masked crop (upstream segmentation)")
    ] = Mode.MASKED,
    crop_margin: Annotated[float, typer.Option("--crop-margin", min=0.0, max=1.0)] = 0.1,
    threshold: Annotated[float, typer.Option("--threshold", min=0.0, max=1.0)] = 0.5,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    from pipeline.training.cls import CLS_DEFAULTS, ClsOptions, train_classification
    from pipeline.training.data import load_classification_cases

    config = _config(
        epochs=epochs or CLS_DEFAULTS.epochs,
        device=device.value,
        encoder_weights=encoder_weights,
        freeze_encoder=freeze_encoder,
        seed=seed,
        batch_size=batch_size or CLS_DEFAULTS.batch_size,
        input_size=input_size or CLS_DEFAULTS.input_size,
        lr=lr or CLS_DEFAULTS.lr,
        name=name or "liver-cirrhosis",
        version=version,
        precision=precision.value,
        max_minutes=max_minutes,
    )
    options = ClsOptions(mode=mode.value, crop_margin=crop_margin, threshold=threshold)
    source = _one_source(data, cohort)
    if cohort is not None:
        bundle = train_from_cohort(
            cohort, labels, out, config, options, progress=not quiet, overwrite=overwrite
        )
        _print_trained(bundle)
        print_card(bundle)
        return
    cases = _guard(lambda: load_classification_cases(source))
    bundle = _guard(
        lambda: train_classification(
            cases,
            out,
            config,
            options,
            data_description=f"{len(cases)} labelled slices from {source.name}",
            progress=not quiet,
            overwrite=overwrite,
        )
    )
    _print_trained(bundle)


def _one_source(data: Path | None, cohort: Path | None) -> Path:
    """The one data source of a classifier command: --data or --cohort."""
    if data is not None and cohort is None:
        return data
    if cohort is not None and data is None:
        return cohort
    fail("give either --data DIR or --cohort OUT (with --labels), not both or neither")


def _print_trained(bundle: Any) -> None:
    training = bundle.manifest.training
    console.print(
        f"wrote {bundle.path}: {bundle.manifest.name} {bundle.manifest.version}, "
        f"{training.epochs} epochs (best {training.best_epoch}), split "
        f"{len(training.split.train)}/{len(training.split.val)}/{len(training.split.test)}",
        highlight=False,
    )
    for key, value in sorted(training.metrics.items()):
        console.print(f"  {key}: {value:.4f}", highlight=False)


@evaluate_app.command(
    "seg",
    help="Per-case liver Dice, 95th-percentile Hausdorff distance and mean surface distance (mm, "
    "MONAI, from the voxel spacing), liver volume and volume error of a segmentation bundle.\n\n"
    + SEG_DATA_HELP,
)
def evaluate_seg(
    model: ModelOpt,
    data: DataOpt,
    json_out: JsonOption = False,
    split: SplitOpt = Split.TEST,
    device: DeviceOpt = Device.AUTO,
) -> None:
    from pipeline.bundle import load_bundle
    from pipeline.training.data import load_segmentation_cases, natural_key
    from pipeline.training.evaluate import cases_for_split, evaluate_segmentation

    def run() -> Any:
        bundle = load_bundle(model)
        all_ids = _case_ids(data)
        ids = cases_for_split(bundle, sorted(all_ids, key=natural_key), split.value)
        cases = load_segmentation_cases(data, case_ids=ids)
        return evaluate_segmentation(bundle, cases, device=device.value, split=split.value)

    result = _guard(run)
    if json_out:
        print_json(result.to_json())
        return
    console.print(seg_table(result, f"liver segmentation ({split.value} cases)"))


def _mm(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def seg_table(result: Any, title: str) -> Table:
    """Per-case Dice, HD95, mean surface distance, volumes and volume error, then mean and SD."""
    table = Table(title=title)
    for column in ("case", "Dice", "HD95 mm", "MSD mm", "volume mL", "label mL", "vol. err %"):
        table.add_column(column, justify="right")
    for cid, value in result.dice.items():
        error = result.volume_error_pct[cid]
        table.add_row(
            cid,
            f"{value:.4f}",
            _mm(result.hd95_mm[cid]),
            _mm(result.mean_surface_mm[cid]),
            f"{result.volume_ml[cid]:.0f}",
            f"{result.label_volume_ml[cid]:.0f}",
            "n/a" if error is None else f"{error:+.1f}",
        )
    summary = result.summary()
    for stat in ("mean", "sd"):
        row = [stat]
        for name, fmt in (
            ("dice", "{:.4f}"),
            ("hd95_mm", "{:.1f}"),
            ("mean_surface_mm", "{:.1f}"),
        ):
            row.append(fmt.format(summary[name][stat]) if name in summary else "")
        row += ["", ""]
        error = summary.get("volume_error_pct")
        row.append(f"{error[stat]:+.1f}" if error else "")
        table.add_row(*row, style="bold")
    return table


def _case_ids(data: Path) -> list[str]:
    from pipeline.training.data import DataError

    if not data.is_dir():
        raise DataError("data_missing", f"data folder {data} does not exist")
    ids = [p.name[len("image_") :].split(".nii")[0] for p in data.glob("image_*.nii*")]
    ids += [
        p.name for p in data.iterdir() if p.is_dir() and (data / f"label_{p.name}.npy").is_file()
    ]
    return ids


@evaluate_app.command(
    "cls",
    help="Accuracy, sensitivity, specificity and AUC of a classification bundle, and a "
    "chi-square test of two proportions against reader accuracies (McNemar would need the "
    "readers' own reads of the same cases).\n\n"
    + CLS_DATA_HELP
    + "\n\n"
    + COHORT_HELP
    + " With --cohort it writes a report to --out: report.html with PNG figures and "
    "report.json (accuracy, sensitivity, specificity with 95% Wilson intervals, ROC and AUC "
    "with a bootstrap interval, calibration, confusion matrix, and per reader_<name> column "
    "the reader's metrics, chi-square and McNemar against the network).",
)
def evaluate_cls(
    model: ModelOpt,
    data: ClsDataOpt = None,
    cohort: CohortOpt = None,
    labels: LabelsOpt = None,
    report_out: Annotated[
        Path | None,
        typer.Option("--out", help="with --cohort: report folder (report.html, .json, PNGs)"),
    ] = None,
    json_out: JsonOption = False,
    split: SplitOpt = Split.TEST,
    device: DeviceOpt = Device.AUTO,
    reader_accuracy: Annotated[
        list[float] | None,
        typer.Option("--reader-accuracy", help="a reader's accuracy (repeat per reader)"),
    ] = None,
    reader_cases: Annotated[
        int | None, typer.Option("--reader-cases", min=1, help="cases the readers read")
    ] = None,
) -> None:
    from pipeline.bundle import load_bundle
    from pipeline.training.data import load_classification_cases
    from pipeline.training.evaluate import cases_for_split, evaluate_classification

    source = _one_source(data, cohort)
    if cohort is not None:
        if report_out is None:
            fail("--cohort needs --out REPORT_DIR (the report folder)")
        report, files = evaluate_cohort(
            cohort, labels, model, report_out, split=split.value, device=device.value
        )
        if json_out:
            print_json(report.to_json())
        else:
            print_report(report, files)
        return

    def run() -> Any:
        bundle = load_bundle(model)
        everything = load_classification_cases(source)
        ids = cases_for_split(bundle, [c.case_id for c in everything], split.value)
        chosen = set(ids)
        cases = [c for c in everything if c.case_id in chosen]
        return evaluate_classification(
            bundle,
            cases,
            device=device.value,
            split=split.value,
            reader_accuracies=reader_accuracy or (),
            reader_cases=reader_cases,
        )

    result = _guard(run)
    if json_out:
        print_json(result.to_json())
        return
    m = result.metrics
    table = Table(title=f"cirrhosis classification ({split.value} cases, n={m.n})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for label, value in (
        ("accuracy", m.accuracy),
        ("sensitivity", m.sensitivity),
        ("specificity", m.specificity),
        ("AUC", m.auc),
    ):
        table.add_row(label, "n/a" if value is None else f"{value:.3f}")
    console.print(table)
    if result.readers:
        readers = Table(title="model vs readers: " + result.readers[0].test)
        for column in ("reader acc.", "reader n", "model acc.", "chi2", "p", "Fisher p"):
            readers.add_column(column, justify="right")
        for r in result.readers:
            readers.add_row(
                f"{r.reader_accuracy:.3f}",
                str(r.reader_cases),
                f"{r.model_accuracy:.3f}",
                f"{r.chi2:.3f}",
                f"{r.p_value:.4f}",
                f"{r.fisher_p_value:.4f}",
            )
        console.print(readers)


@model_app.command("info", help="Check a bundle (manifest, checksums, weights) and show it.")
def model_info(
    bundle_dir: Annotated[Path, typer.Argument(help="bundle folder")], json_out: JsonOption = False
) -> None:
    from pipeline.bundle import load_bundle
    from pipeline.input_distribution import describe_distribution

    bundle = _guard(lambda: load_bundle(bundle_dir))
    data = bundle.manifest.model_dump(mode="json")
    if json_out:
        print_json(data)
        return
    m = bundle.manifest
    console.print(
        f"{m.name} {m.version}{' [bold red]DEMO[/]' if m.demo else ''}: {m.task}, "
        f"{m.network.architecture}, input {m.input.size[0]}x{m.input.size[1]}, {m.precision}"
    )
    console.print(f"  checksums ok; {m.intended_use}", highlight=False)
    for key, value in sorted(m.training.metrics.items()):
        console.print(f"  {key}: {value:.4f}", highlight=False)
    for line in describe_distribution(m.training_distribution):
        console.print(f"  {line}", highlight=False, soft_wrap=True)


@model_app.command(
    "build-demo",
    help="Train the DEMO bundles (segmentation + classification) on synthetic phantoms. "
    "Without --out they go to the cache the agent uses (model.cache_dir/demo-<code version "
    "key>/), where the agent would otherwise build them on first use.",
)
def build_demo(
    out: Annotated[
        Path | None, typer.Option("--out", help="folder for the two bundles (default: the cache)")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="the agent uses seed 0")] = 0,
    config: ConfigOption = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    from pipeline.training.demo import build_demo_bundles, ensure_demo_bundles

    if out is None:
        cache_dir = settings_or_exit(config).model.cache_dir
        seg, cls = _guard(lambda: ensure_demo_bundles(cache_dir, progress=not quiet, seed=seed))
    else:
        target = out
        seg, cls = _guard(
            lambda: build_demo_bundles(target, seed=seed, progress=not quiet, overwrite=overwrite)
        )
    console.print(f"DEMO bundles: {seg}\n              {cls}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.add_typer(train_app, name="train")
    app.add_typer(evaluate_app, name="evaluate")
    app.add_typer(model_app, name="model")
