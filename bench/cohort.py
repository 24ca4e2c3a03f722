"""Cohort throughput with a real Orthanc as the archive: ``cohort pull`` + ``cohort run`` +
``cohort export`` of N phantom studies, for each retrieval method (C-MOVE, C-GET, WADO-RS).

    .venv/bin/python -m bench.cohort [--studies 100] [--methods move get wado] [--matrix 128]

Orthanc holds N phantom studies (cirrhotic and normal, three vendors; localizer, axial T2 of
24 slices at ``--matrix``, DWI); for each method a fresh agent folder pulls them all by
accession number (CSV), runs the pipeline on them and exports the labelling package. The
command lines are the real ones, run in subprocesses (``tests.integration.truth_agent``:
untrained test bundles at ``--input-size`` whose segmentation is replaced by the phantoms' true
liver masks, so every study yields a slice to export; the classifier runs). Prints, for each
method, seconds and studies per minute of each stage (pull, run, export) and of the three
together, and how many studies each stage got through (retrieved, processed, exported); the pull
figure is the retrieval method's. The load average before and after is printed too: on a shared
machine the figures are a floor.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import tempfile
import time
from pathlib import Path

from pydicom import dcmread

from tests.bundles import write_test_bundles
from tests.integration.cohort_archive import archive_phantoms, cohort_agent, upload
from tests.integration.orthanc import running_orthanc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--methods", nargs="+", default=["move", "get", "wado"])
    parser.add_argument("--matrix", type=int, default=128)
    parser.add_argument("--input-size", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cohort-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        studies = archive_phantoms(
            root / "studies", root / "masks", args.studies, no_t2=0, matrix=args.matrix
        )
        bundles = write_test_bundles(root / "bundles", input_size=args.input_size)
        print(
            f"{args.studies} phantom studies ({args.matrix} x {args.matrix}, 24 axial T2 slices, "
            f"3 series each) written in {time.perf_counter() - started:.1f} s; "
            f"{platform.node()}, {platform.processor() or platform.machine()}"
        )
        accessions = [
            str(dcmread(s.series[0].files[0], stop_before_pixels=True).AccessionNumber)
            for s in studies
        ]
        csv_file = root / "cohort.csv"
        csv_file.write_text("accession\n" + "".join(f"{a}\n" for a in accessions))
        with running_orthanc(root / "orthanc") as orthanc:
            t0 = time.perf_counter()
            upload(orthanc, studies)
            print(
                f"uploaded to Orthanc in {time.perf_counter() - t0:.1f} s; load average "
                + " ".join(f"{v:.1f}" for v in os.getloadavg()),
                flush=True,
            )
            header = (
                f"{'method':<6} {'pull s':>7} {'run s':>7} {'export s':>8} {'all s':>7} "
                f"{'pull/min':>8} {'run/min':>8} {'export/min':>10} {'all/min':>8}  "
                "retrieved processed exported  load"
            )
            print(header, flush=True)
            for method in args.methods:
                agent = cohort_agent(
                    root / f"agent-{method}", root / "masks", bundles, orthanc, retrieve=method
                )
                times = []
                outputs = []
                for command in (
                    ("cohort", "pull", "bench", "--csv", str(csv_file), "--json"),
                    ("cohort", "run", "bench", "--json"),
                    ("cohort", "export", "bench", str(root / f"package-{method}")),
                ):
                    t0 = time.perf_counter()
                    result = agent.cli(*command, timeout=3600)
                    times.append(time.perf_counter() - t0)
                    if result.returncode != 0:
                        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
                    outputs.append(result.stdout)
                pulled = json.loads(outputs[0])["studies"]
                retrieved = sum(1 for s in pulled if s["status"] == "retrieved")
                processed = sum(1 for d in json.loads(outputs[1]) if d["status"] == "processed")
                found = re.search(r"(\d+) studies exported", outputs[2])
                exported = int(found.group(1)) if found else -1
                n = args.studies
                per_min = [n / t * 60 for t in (*times, sum(times))]
                row = (
                    f"{method:<6} {times[0]:>7.1f} {times[1]:>7.1f} {times[2]:>8.1f} "
                    f"{sum(times):>7.1f} {per_min[0]:>8.1f} {per_min[1]:>8.1f} "
                    f"{per_min[2]:>10.1f} {per_min[3]:>8.1f}  {retrieved:>9} {processed:>9} "
                    f"{exported:>8}  {os.getloadavg()[0]:.1f}"
                )
                print(row, flush=True)


if __name__ == "__main__":
    main()
