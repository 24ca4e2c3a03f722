"""Benchmark ``liver-agent run``'s pipeline against a bare forward pass of its two networks.

On a 5-series phantom study (localizer, coronal T2, axial T2 of 36 slices of 256 x 256, DWI,
ADC), in one process: the pipeline's time per stage (select, load, segment, localise, classify)
and the floor, a bare forward pass of the segmentation network over the same number of slices at
the bundle's input size and batch size plus the classifier over one slice (same device,
precision and threads). Goal: pipeline total <= 1.3 x the floor.

    .venv/bin/python -m bench.pipeline_speed --threads 2            # demo bundle (built if missing)
    .venv/bin/python -m bench.pipeline_speed --untrained            # random weights, same networks
    .venv/bin/python -m bench.pipeline_speed --seg-model S --cls-model C
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

# torch's OpenMP threads spin while they wait; on a machine shared with other work that makes
# every parallel region wait for a time slice (docs/benchmarks.md, "End-to-end latency"). The
# agent's CLI, unit and image set PASSIVE; so does this benchmark unless --omp-spin is given.
if "--omp-spin" not in sys.argv:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


import numpy as np
import numpy.typing as npt
import torch

from pipeline.inference import ClassificationModel, SegmentationModel, autocast
from pipeline.results import LiverSegmentation, Volume
from pipeline.run import Models, PipelineOptions, run_pipeline
from pipeline.study_headers import scan_study

ROLES = ("localizer", "cor_t2", "ax_t2", "dwi", "adc")
STAGES = ("select", "load", "segment", "localise", "classify")


def untrained_bundles(
    folder: Path, seg_size: int, cls_size: int, precision: str
) -> tuple[Path, Path]:
    """Bundles of the two networks with random weights (the cost is the same as trained ones)."""
    from pipeline.bundle import save_bundle
    from pipeline.networks import RESNET50, UNET_RESNET34, build_network

    common: dict[str, Any] = {
        "version": "0",
        "precision": precision,
        "intended_use": "benchmark only: untrained weights",
        "demo": True,
        "training": {
            "data": "none (untrained)",
            "cases": 0,
            "split": {"train": [], "val": [], "test": []},
            "seed": 0,
            "epochs": 0,
            "best_epoch": 0,
            "metrics": {},
        },
    }
    norm = {"scope": "volume"}
    seg = save_bundle(
        folder / "seg",
        {
            **common,
            "name": "bench-untrained-segmentation",
            "task": "segmentation",
            "network": {"architecture": UNET_RESNET34, "in_channels": 3, "classes": 1},
            "input": {"size": [seg_size, seg_size], "normalisation": norm},
        },
        build_network(UNET_RESNET34, 3, 1).state_dict(),
        overwrite=True,
    )
    cls = save_bundle(
        folder / "cls",
        {
            **common,
            "name": "bench-untrained-classification",
            "task": "classification",
            "network": {"architecture": RESNET50, "in_channels": 3, "classes": 2},
            "input": {"size": [cls_size, cls_size], "normalisation": {"scope": "mask"}},
            "classification": {"threshold": 0.5, "mode": "masked"},
        },
        build_network(RESNET50, 3, 2).state_dict(),
        overwrite=True,
    )
    return seg.path, cls.path


class TruthAfterNetwork:
    """Runs the whole segmentation (network, resizing, post-processing), then returns the
    phantom's true mask instead of its output, so that untrained weights still reach the
    localise and classify stages."""

    def __init__(self, model: SegmentationModel, truth: npt.NDArray[np.bool_]) -> None:
        self.model = model
        self.truth = truth
        self.info = model.info

    def predict(self, volume: Volume) -> LiverSegmentation:
        self.model.predict(volume)
        spacing = volume.pixel_spacing
        area = self.truth.sum(axis=(1, 2)) * float(spacing[0] * spacing[1])
        return LiverSegmentation(self.truth, area, float(area.sum() * volume.slice_spacing / 1e3))


def bare_forward(seg: SegmentationModel, cls: ClassificationModel, slices: int) -> float:
    """Seconds for the networks alone: segmentation over ``slices`` slices, classifier over one."""
    size = seg.manifest.input.size
    x = torch.rand(slices, seg.manifest.input.channels, size[0], size[1], device=seg.device)
    csize = cls.manifest.input.size
    y = torch.rand(1, cls.manifest.input.channels, csize[0], csize[1], device=cls.device)
    if seg.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    with torch.inference_mode():
        with autocast(seg.device, seg.manifest.precision):
            for start in range(0, slices, seg.batch_size):
                batch = x[start : start + seg.batch_size]
                seg.network(batch.contiguous(memory_format=torch.channels_last)).float()
        with autocast(cls.device, cls.manifest.precision):
            cls.network(y.contiguous(memory_format=torch.channels_last)).float()
    if seg.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seg-model", type=Path)
    parser.add_argument("--cls-model", type=Path)
    parser.add_argument("--untrained", action="store_true", help="random-weight bundles")
    parser.add_argument("--seg-size", type=int, default=256, help="untrained: input size")
    parser.add_argument("--cls-size", type=int, default=224, help="untrained: input size")
    parser.add_argument("--precision", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--slices", type=int, default=36)
    parser.add_argument("--matrix", type=int, default=256)
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "liver-agent")
    parser.add_argument("--tracemalloc", action="store_true", help="also trace Python allocations")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--omp-spin", action="store_true", help="leave OMP_WAIT_POLICY unset (threads spin)"
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > args.threads:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.threads])

    from pipeline.phantoms import generate_study

    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        work = Path(tmp)
        if args.seg_model and args.cls_model:
            seg_path, cls_path = args.seg_model, args.cls_model
            weights = "given bundles"
        elif args.untrained:
            seg_path, cls_path = untrained_bundles(
                work / "bundles", args.seg_size, args.cls_size, args.precision
            )
            weights = "untrained (random) weights"
        else:
            from pipeline.training.demo import ensure_demo_bundles

            seg_path, cls_path = ensure_demo_bundles(args.cache_dir, progress=True)
            weights = "DEMO bundle"
        models = Models.load(Path(seg_path), Path(cls_path), device=args.device)
        study_dir = work / "study"
        phantom = generate_study(
            study_dir,
            cirrhotic=True,
            roles=ROLES,
            axial_t2_slices=args.slices,
            matrix=args.matrix,
            seed=1,
        )
        files = [p for s in phantom.series for p in s.files]
        options = PipelineOptions()
        seg_model, cls_model = models.segmentation, models.classification
        if args.untrained and phantom.liver_mask is not None:
            models = Models(TruthAfterNetwork(seg_model, phantom.liver_mask), cls_model)  # type: ignore[arg-type]
            weights += "; segmentation output replaced by the phantom's truth after its full pass"

        in_network = _time_forward_calls(seg_model, cls_model)

        def one_run() -> dict[str, float]:
            started = time.perf_counter()
            study = scan_study([study_dir])
            scanned = time.perf_counter() - started
            in_network[0] = 0.0
            cpu = time.process_time()
            result = run_pipeline(study, models, options)
            record = {"scan": scanned, **result.timings}
            record["cpu"] = time.process_time() - cpu
            record["in_network"] = in_network[0]
            record["evaluated"] = float(result.evaluated)
            return record

        one_run()  # warm-up: lazy initialisation, oneDNN kernels, page cache
        bare_forward(seg_model, cls_model, args.slices)
        runs: list[dict[str, float]] = []
        for _ in range(args.repeats):  # interleaved, so that both see the same machine load
            cpu = time.process_time()
            bare = bare_forward(seg_model, cls_model, args.slices)
            record = {"bare": bare, "bare_cpu": time.process_time() - cpu, **one_run()}
            runs.append(record)
        traced_peak = None
        if args.tracemalloc:
            tracemalloc.start()
            one_run()
            traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()

    keys = ("scan", *STAGES, "total", "in_network", "bare", "cpu", "bare_cpu")
    median = {k: statistics.median(r.get(k, float("nan")) for r in runs) for k in keys}
    least = {k: min(r.get(k, float("nan")) for r in runs) for k in keys}
    seg_info, cls_info = seg_model.info, cls_model.info
    report = {
        "weights": weights,
        "segmentation": f"{seg_info.name} {seg_info.version} {seg_info.architecture} "
        f"input {tuple(seg_model.manifest.input.size)} "
        f"batch {seg_model.batch_size} {seg_model.manifest.precision}"
        + (" DEMO" if seg_info.demo else ""),
        "classification": f"{cls_info.name} {cls_info.version} {cls_info.architecture} "
        f"input {tuple(cls_model.manifest.input.size)} {cls_model.manifest.precision}"
        + (" DEMO" if cls_info.demo else ""),
        "device": str(seg_model.device),
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "files": len(files),
        "slices": args.slices,
        "matrix": args.matrix,
        "repeats": args.repeats,
        "evaluated": all(r["evaluated"] for r in runs),
        "median_s": median,
        "min_s": least,
        "ratio_total_to_bare": median["total"] / median["bare"],
        "ratio_total_to_bare_minima": least["total"] / least["bare"],
        "ratio_total_to_in_network": statistics.median(r["total"] / r["in_network"] for r in runs),
        "ratio_cpu_time": median["cpu"] / median["bare_cpu"],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "tracemalloc_peak_mib": traced_peak,
        "load_average": os.getloadavg(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"weights        {report['weights']}")
    print(f"segmentation   {report['segmentation']}")
    print(f"classification {report['classification']}")
    print(
        f"device         {report['device']}, {report['threads']} threads, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
    )
    print(f"study          {len(files)} files, axial T2 {args.slices} x {args.matrix}^2")
    print(f"runs           {args.repeats}, all evaluated: {report['evaluated']}")
    print(f"{'seconds':26} {'median':>8} {'min':>8}")
    labels = {"scan": "scan headers (not in total)", "in_network": "networks inside the run",
              "bare": "bare forward (floor)", "cpu": "pipeline CPU time",
              "bare_cpu": "bare forward CPU time"}  # fmt: skip
    for key in keys:
        print(f"{labels.get(key, '  ' + key):26} {median[key]:8.3f} {least[key]:8.3f}")
    print(f"ratio total / bare forward      {report['ratio_total_to_bare']:.3f} (medians)")
    print(f"ratio total / bare forward      {report['ratio_total_to_bare_minima']:.3f} (minima)")
    print(
        f"ratio total / networks in run   {report['ratio_total_to_in_network']:.3f} "
        "(median over runs; robust to machine load)"
    )
    print(f"ratio CPU time                  {report['ratio_cpu_time']:.3f}")
    print(f"peak RSS       {report['peak_rss_mib']:.0f} MiB")
    if traced_peak is not None:
        print(f"tracemalloc    {traced_peak:.1f} MiB peak (Python/NumPy allocations, one run)")
    print(f"load average   {' '.join(f'{x:.2f}' for x in report['load_average'])}")
    return 0


def _time_forward_calls(seg: SegmentationModel, cls: ClassificationModel) -> list[float]:
    """Accumulate the seconds spent in both models' forward passes (the bare network part of
    the pipeline's own run) into the returned one-element list."""
    spent = [0.0]
    for model in (seg, cls):
        forward = model._forward

        def timed(batch: torch.Tensor, forward: Any = forward) -> torch.Tensor:
            started = time.perf_counter()
            out: torch.Tensor = forward(batch)
            spent[0] += time.perf_counter() - started
            return out

        model._forward = timed  # type: ignore[method-assign]
    return spent


if __name__ == "__main__":
    sys.exit(main())
