"""CPU inference of the two networks: speed per runtime and precision, and parity with float32.

Speed (random weights cost what trained ones do): the whole segmentation of a 36-slice
256 x 256 axial T2 series at 256 x 256 input (``SegmentationModel.segment``: scaling, 2.5D
context, batches, resizing, post-processing) and the classifier on one caudate-level slice at
224 x 224, for PyTorch float32, PyTorch bfloat16 autocast, OpenVINO float32 and OpenVINO
bfloat16, repeats interleaved so that every variant sees the same machine load. Goal (issue 14):
segmentation <= 1.0 s and classifier <= 0.1 s on 2 cores.

Parity (trained weights): every variant against PyTorch float32 of the same bundle: Dice of the
liver masks (goal >= 0.999) and the classifier's probability (goal within 0.01), on phantom
studies with the DEMO bundles and, with ``--chaos-data`` and ``--chaos-models``, on real CHAOS
subjects with the cross-validation fold models that never saw them.

    .venv/bin/python -m bench.inference --threads 2 --repeats 5
    .venv/bin/python -m bench.inference --chaos-data ../shared/data/chaos-t2spir \\
        --chaos-models /work/chaos-runs/cv5-128-e12
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if "--omp-spin" not in sys.argv:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import numpy.typing as npt
import torch

from bench.pipeline_speed import untrained_bundles
from pipeline.bundle import Bundle, load_bundle
from pipeline.inference import ClassificationModel, SegmentationModel

#: (label, runtime, precision)
VARIANTS = (
    ("torch float32", "torch", "float32"),
    ("torch bfloat16", "torch", "bfloat16"),
    ("openvino float32", "openvino", "float32"),
    ("openvino bfloat16", "openvino", "bfloat16"),
)


INT8 = "openvino int8 (NNCF)"

#: calibration inputs of the two networks: segmentation batches, classifier inputs
Calibration = tuple[list[torch.Tensor], list[torch.Tensor]]


def seg_inputs(model: SegmentationModel, pixels: npt.NDArray[np.floating]) -> list[torch.Tensor]:
    """The network inputs ``SegmentationModel.segment`` makes of a series (same batches)."""
    from pipeline.preprocess import normalise_channels, resize, scale_to_unit, with_context

    spec = model.manifest.input
    unit = torch.from_numpy(scale_to_unit(pixels, spec.normalisation))
    size = (spec.size[0], spec.size[1])
    return [
        normalise_channels(
            resize(with_context(unit, spec.context, start, start + model.batch_size), size),
            spec.normalisation,
            spec.channels,
        )
        for start in range(0, unit.shape[0], model.batch_size)
    ]


def quantise(
    model: SegmentationModel | ClassificationModel, calibration: list[torch.Tensor]
) -> None:
    """Swap the model's OpenVINO network for an INT8 one (NNCF post-training quantisation on
    ``calibration``); the rest of the model (pre- and post-processing) is unchanged."""
    import threading

    import nncf  # bench only: pip install nncf
    import openvino as ov

    assert model._openvino is not None
    spec = model.manifest.input
    example = torch.zeros((1, spec.channels, spec.size[0], spec.size[1]))
    converted = ov.convert_model(
        model.network.eval(), example_input=example, input=[[-1, *example.shape[1:]]]
    )
    samples = [b[i : i + 1].numpy() for b in calibration for i in range(b.shape[0])]
    quantised = nncf.quantize(converted, nncf.Dataset(samples), subset_size=min(300, len(samples)))
    network = model._openvino
    network._compiled = ov.Core().compile_model(
        quantised,
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": network.precision,
            "INFERENCE_NUM_THREADS": torch.get_num_threads(),
            "PERFORMANCE_HINT": "LATENCY",
        },
    )
    network._local = threading.local()


def build(
    label: str, seg_bundle: Bundle, cls_bundle: Bundle, calibration: Calibration | None
) -> tuple[SegmentationModel, ClassificationModel]:
    """The two models of one variant (``INT8``: OpenVINO bfloat16 with INT8 networks)."""
    if label == INT8:
        runtime, precision = "openvino", "bfloat16"
    else:
        runtime, precision = next((r, p) for name, r, p in VARIANTS if name == label)
    seg = SegmentationModel(with_precision(seg_bundle, precision), "cpu", runtime=runtime)
    cls = ClassificationModel(with_precision(cls_bundle, precision), "cpu", runtime=runtime)
    if label == INT8:
        assert calibration is not None
        quantise(seg, calibration[0])
        quantise(cls, calibration[1])
    return seg, cls


def with_precision(bundle: Bundle, precision: str) -> Bundle:
    """The same weights with another manifest precision (what the runtimes read)."""
    manifest = bundle.manifest.model_copy(update={"precision": precision})
    return dataclasses.replace(bundle, manifest=manifest)


def dice(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def phantom_cases(
    folder: Path, count: int, slices: int, matrix: int
) -> list[tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_], int]]:
    """(pixels, true mask, caudate index) of ``count`` phantom axial T2 series."""
    from pipeline.phantoms import generate_study
    from pipeline.study_headers import scan_study
    from pipeline.volume import load_volume

    cases = []
    for seed in range(count):
        phantom = generate_study(
            folder / f"s{seed}",
            cirrhotic=seed % 2 == 0,
            roles=("ax_t2",),
            axial_t2_slices=slices,
            matrix=matrix,
            seed=100 + seed,
        )
        study = scan_study([phantom.path])
        (series,) = study.series
        volume = load_volume(series)
        assert phantom.liver_mask is not None
        assert phantom.caudate_index is not None
        cases.append((volume.pixels.astype(np.float32), phantom.liver_mask, phantom.caudate_index))
    return cases


def calibration_of(
    seg: SegmentationModel,
    cls: ClassificationModel,
    cases: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_], int]],
) -> Calibration:
    """Calibration inputs from phantom cases (their true masks for the classifier)."""
    seg_batches = [b for pixels, _, _ in cases for b in seg_inputs(seg, pixels)]
    cls_inputs = [
        cls.input_tensor(pixels[k], mask[k])
        for pixels, mask, caudate in cases
        for k in (caudate - 1, caudate, caudate + 1)
    ]
    return seg_batches, cls_inputs


def speed(
    seg_path: Path,
    cls_path: Path,
    cases: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_], int]],
    repeats: int,
    labels: list[str],
) -> dict[str, dict[str, Any]]:
    seg_bundle, cls_bundle = load_bundle(seg_path), load_bundle(cls_path)
    pixels, mask, caudate = cases[0]
    models: dict[str, tuple[SegmentationModel, ClassificationModel]] = {}
    loads: dict[str, float] = {}
    calibration = None
    for label in labels:
        if label == INT8 and calibration is None:
            seg0, cls0 = models[VARIANTS[0][0]]
            calibration = calibration_of(seg0, cls0, cases[1:] or cases)
        started = time.perf_counter()
        models[label] = build(label, seg_bundle, cls_bundle, calibration)
        loads[label] = time.perf_counter() - started
    image, liver = pixels[caudate], mask[caudate]
    seg_times: dict[str, list[float]] = {label: [] for label in models}
    cls_times: dict[str, list[float]] = {label: [] for label in models}
    for seg, cls in models.values():  # warm-up
        seg.segment(pixels)
        cls.probabilities([image], [liver])
    for _ in range(repeats):
        for label, (seg, cls) in models.items():
            seg_times[label].append(_timed(lambda seg=seg: seg.segment(pixels)))
            cls_times[label].append(_timed(lambda cls=cls: cls.probabilities([image], [liver])))
    return {
        label: {
            "load_s": round(loads[label], 2),
            "segment_min_s": round(min(seg_times[label]), 3),
            "segment_median_s": round(statistics.median(seg_times[label]), 3),
            "classify_min_s": round(min(cls_times[label]), 4),
            "classify_median_s": round(statistics.median(cls_times[label]), 4),
        }
        for label in models
    }


def parity_phantoms(
    seg_path: Path,
    cls_path: Path,
    cases: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_], int]],
    labels: list[str],
    calibration_cases: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_], int]],
) -> dict[str, dict[str, float]]:
    seg_bundle, cls_bundle = load_bundle(seg_path), load_bundle(cls_path)
    reference_seg = SegmentationModel(with_precision(seg_bundle, "float32"), "cpu")
    reference_cls = ClassificationModel(with_precision(cls_bundle, "float32"), "cpu")
    references = []
    for pixels, _, caudate in cases:
        ref_mask = reference_seg.segment(pixels)
        prob = float(reference_cls.probabilities([pixels[caudate]], [ref_mask[caudate]])[0])
        references.append((ref_mask, prob))
    calibration = (
        calibration_of(reference_seg, reference_cls, calibration_cases) if INT8 in labels else None
    )
    out: dict[str, dict[str, float]] = {}
    for label in labels[1:]:
        seg, cls = build(label, seg_bundle, cls_bundle, calibration)
        dices, diffs = [], []
        for (pixels, _, caudate), (ref_mask, ref_prob) in zip(cases, references, strict=True):
            got = seg.segment(pixels)
            dices.append(dice(got, ref_mask))
            # the classifier on the reference mask, so that only the classifier's own
            # numerics differ
            prob = float(cls.probabilities([pixels[caudate]], [ref_mask[caudate]])[0])
            diffs.append(abs(prob - ref_prob))
        out[label] = {
            "min_dice": round(min(dices), 5),
            "mean_dice": round(float(np.mean(dices)), 5),
            "max_probability_diff": round(max(diffs), 5),
        }
    return out


def parity_chaos(data: Path, models: Path, labels: list[str]) -> dict[str, dict[str, float]]:
    from pipeline.training.data import load_segmentation_cases

    folds = json.loads((models / "cv.json").read_text())["folds"]
    cases = {c.case_id: c for c in load_segmentation_cases(data)}
    dices: dict[str, list[float]] = {label: [] for label in labels[1:]}
    for k, subjects in enumerate(folds, start=1):
        bundle = load_bundle(models / f"fold-{k}")
        reference = SegmentationModel(with_precision(bundle, "float32"), "cpu")
        variants: dict[str, SegmentationModel] = {}
        for label in labels[1:]:
            if label == INT8:
                model = SegmentationModel(
                    with_precision(bundle, "bfloat16"), "cpu", runtime="openvino"
                )
                # calibrated on three of the fold's training subjects, never on its test ones
                train = [cid for cid in cases if cid not in subjects][:3]
                quantise(model, [b for cid in train for b in seg_inputs(model, cases[cid].pixels)])
            else:
                runtime, precision = next((r, p) for n, r, p in VARIANTS if n == label)
                model = SegmentationModel(with_precision(bundle, precision), "cpu", runtime=runtime)
            variants[label] = model
        for cid in subjects:
            ref = reference.segment(cases[cid].pixels)
            for label, model in variants.items():
                dices[label].append(dice(model.segment(cases[cid].pixels), ref))
    return {
        label: {
            "subjects": len(d),
            "min_dice": round(min(d), 5),
            "mean_dice": round(float(np.mean(d)), 5),
        }
        for label, d in dices.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--slices", type=int, default=36)
    parser.add_argument("--seg-size", type=int, default=256)
    parser.add_argument("--cls-size", type=int, default=224)
    parser.add_argument("--phantoms", type=int, default=6, help="phantom studies for parity")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "liver-agent")
    parser.add_argument("--chaos-data", type=Path)
    parser.add_argument("--chaos-models", type=Path, help="a cv-seg --out folder")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument(
        "--int8", action="store_true",
        help="also OpenVINO with INT8 networks (NNCF post-training quantisation; pip install "
        "nncf): not a runtime the agent offers, measured to see whether it would pay",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--omp-spin", action="store_true")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > args.threads:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.threads])
    from pipeline.inference import bf16_supported

    report: dict[str, Any] = {
        "threads": args.threads,
        "cpu_bfloat16": bf16_supported(torch.device("cpu")),
        "torch": torch.__version__,
    }
    try:
        import openvino

        report["openvino"] = openvino.__version__
    except ImportError:
        print("openvino is not installed", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        work = Path(tmp)
        labels = [label for label, _, _ in VARIANTS] + ([INT8] if args.int8 else [])
        cases = phantom_cases(work / "phantoms", max(1, args.phantoms), args.slices, 256)
        calibration_cases = (
            phantom_cases(work / "calibration", 3, args.slices, 256) if args.int8 else []
        )
        if not args.skip_speed:
            seg_path, cls_path = untrained_bundles(
                work / "bundles", args.seg_size, args.cls_size, "bfloat16"
            )
            report["speed"] = speed(seg_path, cls_path, cases, args.repeats, labels)
        from pipeline.training.demo import ensure_demo_bundles

        demo_seg, demo_cls = ensure_demo_bundles(args.cache_dir, progress=False)
        report["parity_demo_phantoms"] = parity_phantoms(
            demo_seg, demo_cls, cases, labels, calibration_cases
        )
        if args.chaos_data and args.chaos_models:
            report["parity_chaos"] = parity_chaos(args.chaos_data, args.chaos_models, labels)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"threads {args.threads}, torch {report['torch']}, openvino {report['openvino']}, "
        f"CPU bfloat16: {report['cpu_bfloat16']}"
    )
    if "speed" in report:
        print(
            f"\nspeed: {args.slices} x 256 x 256 series at {args.seg_size} input; classifier at "
            f"{args.cls_size}; seconds, min (median) of {args.repeats}"
        )
        print(f"{'variant':<22}{'load':>8}{'segment':>20}{'classify':>22}")
        for label, row in report["speed"].items():
            print(
                f"{label:<22}{row['load_s']:>8.2f}"
                f"{row['segment_min_s']:>10.3f} ({row['segment_median_s']:.3f})"
                f"{row['classify_min_s']:>12.4f} ({row['classify_median_s']:.4f})"
            )
    print("\nparity with torch float32, DEMO bundles on phantom studies:")
    for label, row in report["parity_demo_phantoms"].items():
        print(
            f"  {label:<22} Dice min {row['min_dice']:.5f} mean {row['mean_dice']:.5f}; "
            f"probability max diff {row['max_probability_diff']:.5f}"
        )
    if "parity_chaos" in report:
        print("parity with torch float32, CHAOS fold models on their held-out subjects:")
        for label, row in report["parity_chaos"].items():
            print(
                f"  {label:<22} {row['subjects']} subjects, Dice min {row['min_dice']:.5f} "
                f"mean {row['mean_dice']:.5f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
