"""Time result encoding: SEG (36 frames, 256 and 512 matrix), SR and SC, built and written to bytes.

    .venv/bin/python -m bench.encode [--repeat 7] [--pipeline] [--threads 2]

Prints the median of several runs of each step and the first (cold) call of the process, which
pays for highdicom loading its copy of the standard. Also times highdicom's SEG options
(mask dtype, precomputed plane positions, workers, compressed transfer syntaxes) to show which
is fastest. With ``--pipeline`` it also runs ``pipeline.run.run_pipeline`` in the same process
(networks with untrained weights: same compute as trained ones) on the same synthetic 36-slice
256 x 256 series and prints encoding / pipeline total (goal: under 10 %).
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from pipeline.outputs import OutputOptions, build_outputs, build_sc, build_seg, build_sr
from pipeline.outputs.seg import liver_segment_description
from pipeline.results import PipelineResult
from tests.pipeline.outputs.synthetic_mr import ellipse_mask, make_mr_series, make_result

SLICES = 36


def to_bytes(ds: Dataset) -> int:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return len(buffer.getvalue())


def median_ms(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), out


def result_for(matrix: int) -> PipelineResult:
    series = make_mr_series(SLICES, matrix, matrix, spacing=380.0 / matrix)
    mask = ellipse_mask(SLICES, matrix, matrix, first=4, last=SLICES - 6)
    return make_result(series, mask=mask)


def raw_seg(result: PipelineResult, **kwargs: Any) -> hd.seg.Segmentation:
    """highdicom's constructor directly, to compare its options."""
    assert result.volume is not None
    assert result.segmentation is not None
    pixel_array = kwargs.pop("pixel_array", result.segmentation.mask)
    return hd.seg.Segmentation(
        source_images=list(result.volume.headers),
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[liver_segment_description(result.segmentation_model)],
        series_instance_uid=generate_uid(),
        series_number=9901,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="liver-agent",
        manufacturer_model_name="bench",
        software_versions="bench",
        device_serial_number="bench",
        **kwargs,
    )


def seg_variants(result: PipelineResult) -> dict[str, Callable[[], Any]]:
    volume, seg = result.volume, result.segmentation
    assert volume is not None
    assert seg is not None
    positions = [
        hd.PlanePositionSequence("PATIENT", [float(v) for v in p]) for p in volume.positions
    ]
    orientation = hd.PlaneOrientationSequence(
        "PATIENT", [*map(float, volume.row_cosine), *map(float, volume.column_cosine)]
    )
    measures = hd.PixelMeasuresSequence(
        pixel_spacing=list(volume.pixel_spacing),
        slice_thickness=volume.slice_spacing,
        spacing_between_slices=volume.slice_spacing,
    )
    variants: dict[str, Callable[[], Any]] = {
        "bool mask, keep empty (as shipped)": lambda: to_bytes(
            raw_seg(result, omit_empty_frames=False)
        ),
        "bool mask, omit empty": lambda: to_bytes(raw_seg(result, omit_empty_frames=True)),
        "uint8 mask, keep empty": lambda: to_bytes(
            raw_seg(result, omit_empty_frames=False, pixel_array=seg.mask.astype(np.uint8))
        ),
        "precomputed plane positions": lambda: to_bytes(
            raw_seg(
                result,
                omit_empty_frames=False,
                plane_positions=positions,
                plane_orientation=orientation,
                pixel_measures=measures,
            )
        ),
        "workers=2 (uncompressed)": lambda: to_bytes(
            raw_seg(result, omit_empty_frames=False, workers=2)
        ),
    }
    for name, syntax in (
        ("RLE Lossless", RLELossless),
        ("JPEG-LS Lossless", JPEGLSLossless),
        ("JPEG 2000 Lossless", JPEG2000Lossless),
    ):
        for workers in (0, 2):
            variants[f"{name}, workers={workers}"] = lambda syntax=syntax, workers=workers: (
                to_bytes(
                    raw_seg(
                        result,
                        omit_empty_frames=False,
                        transfer_syntax_uid=syntax,
                        workers=workers,
                    )
                )
            )
    return variants


def pipeline_total(repeat: int, threads: int) -> tuple[float, PipelineResult]:
    """Median seconds of run_pipeline on a synthetic 36 x 256 x 256 study, and its last result."""
    import tempfile

    import torch

    from pipeline.run import Models, run_pipeline
    from pipeline.study_headers import scan_study

    torch.set_num_threads(threads)
    from bench import pipeline_speed

    with tempfile.TemporaryDirectory(prefix="bench-encode-") as tmp:
        folder = Path(tmp)
        for k, ds in enumerate(make_mr_series(SLICES, 256, 256, spacing=380.0 / 256)):
            ds.save_as(folder / f"{k:03d}.dcm", enforce_file_format=True)
        seg_path, cls_path = pipeline_speed.untrained_bundles(
            folder / "bundles", 256, 224, "bfloat16"
        )
        models = Models.load(seg_path, cls_path, device="cpu")
        study = scan_study([folder])
        run_pipeline(study, models)  # warm-up
        totals, result = [], None
        for _ in range(repeat):
            result = run_pipeline(study, models)
            totals.append(result.timings["total"])
    assert result is not None
    return statistics.median(totals), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--no-variants", action="store_true", help="skip highdicom option table")
    parser.add_argument("--pipeline", action="store_true", help="also time run_pipeline")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for --pipeline")
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    results = {m: result_for(m) for m in (256, 512)}
    start = time.perf_counter()
    build_outputs(results[256], OutputOptions(sc=True), software_version="bench")
    cold_ms = (time.perf_counter() - start) * 1000
    print(f"first build_outputs(SEG+SR+SC, 256) in this process (cold): {cold_ms:7.1f} ms")

    print(f"\nmedian of {args.repeat} runs, dataset build + dcmwrite to bytes:")
    for matrix, result in results.items():
        seg_ms, seg = median_ms(
            lambda r=result: build_seg(r, software_version="bench"), args.repeat
        )
        seg_w_ms, size = median_ms(lambda s=seg: to_bytes(s), args.repeat)
        sr_ms, sr = median_ms(
            lambda r=result, s=seg: build_sr(r, s, software_version="bench"), args.repeat
        )
        sr_w_ms, _ = median_ms(lambda s=sr: to_bytes(s), args.repeat)
        sc_ms, sc = median_ms(lambda r=result: build_sc(r, software_version="bench"), args.repeat)
        sc_w_ms, _ = median_ms(lambda s=sc: to_bytes(s), args.repeat)
        all_ms, _ = median_ms(
            lambda r=result: [
                to_bytes(o.dataset)
                for o in build_outputs(r, OutputOptions(sc=True), software_version="bench")
            ],
            args.repeat,
        )
        print(f"  {SLICES} x {matrix} x {matrix}:")
        print(f"    SEG build {seg_ms:6.1f} ms + write {seg_w_ms:5.1f} ms ({size / 1e6:.2f} MB)")
        print(f"    SR  build {sr_ms:6.1f} ms + write {sr_w_ms:5.1f} ms")
        print(f"    SC  build {sc_ms:6.1f} ms + write {sc_w_ms:5.1f} ms")
        print(f"    build_outputs(SEG+SR+SC) + write all: {all_ms:6.1f} ms")

    if args.pipeline:
        total_s, result = pipeline_total(max(3, args.repeat // 2), args.threads)
        encoded = result if result.evaluated else results[256]
        enc_ms, _ = median_ms(
            lambda: [
                to_bytes(o.dataset)
                for o in build_outputs(encoded, OutputOptions(sc=True), software_version="bench")
            ],
            args.repeat,
        )
        stages = ", ".join(f"{k} {v:.2f} s" for k, v in result.timings.items())
        print(f"\nrun_pipeline, untrained networks, {args.threads} threads: {stages}")
        which = "its own result" if result.evaluated else "the synthetic 256 result"
        print(f"  evaluated: {result.evaluated} ({result.reason_code}); encoding {which}")
        print(
            f"  pipeline total {total_s * 1000:.0f} ms, SEG+SR+SC encoding {enc_ms:.0f} ms "
            f"= {100 * enc_ms / (total_s * 1000):.1f} % of the pipeline"
        )

    if args.no_variants:
        return
    print(f"\nhighdicom SEG options, build + write, median of {args.repeat}:")
    for matrix, result in results.items():
        for name, fn in seg_variants(result).items():
            try:
                ms, size = median_ms(fn, args.repeat)
            except (ValueError, TypeError, NotImplementedError, RuntimeError) as err:
                print(f"  {matrix:3d}  {name:38s}  not supported: {err}")
                continue
            print(f"  {matrix:3d}  {name:38s} {ms:7.1f} ms  {size / 1e6:6.2f} MB")


if __name__ == "__main__":
    main()
