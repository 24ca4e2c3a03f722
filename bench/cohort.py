"""Cohort throughput with a real Orthanc as the archive: ``cohort pull`` + ``cohort run`` +
``cohort export`` of N phantom studies, for each retrieval method (C-MOVE, C-GET, WADO-RS).

    .venv/bin/python -m bench.cohort [--studies 20] [--methods move get wado] [--matrix 128]

Orthanc holds N phantom studies (cirrhotic and normal, three vendors; localizer, axial T2 of
24 slices at ``--matrix``, DWI); for each method a fresh agent folder pulls them all by
accession number (CSV), runs the pipeline on them and exports the labelling package. The
command lines are the real ones, run in subprocesses (``tests.integration.truth_agent``:
untrained test bundles at ``--input-size`` whose segmentation is replaced by the phantoms' true
liver masks, so every study yields a slice to export; the classifier runs). Prints seconds per
phase and studies per minute; the pull figure is the retrieval method's.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

from pydicom import dcmread

from tests.bundles import write_test_bundles
from tests.integration.cohort_archive import archive_phantoms, cohort_agent, upload
from tests.integration.orthanc import running_orthanc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=20)
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
            upload(orthanc, studies)
            print(
                f"{'method':<6} {'pull s':>8} {'run s':>8} {'export s':>9} "
                f"{'pull/min':>9} {'all/min':>8}  statuses"
            )
            for method in args.methods:
                agent = cohort_agent(
                    root / f"agent-{method}", root / "masks", bundles, orthanc, retrieve=method
                )
                times = []
                outputs = []
                for command in (
                    ("cohort", "pull", "bench", "--csv", str(csv_file)),
                    ("cohort", "run", "bench"),
                    ("cohort", "export", "bench", str(root / f"package-{method}")),
                ):
                    t0 = time.perf_counter()
                    result = agent.cli(*command, timeout=3600)
                    times.append(time.perf_counter() - t0)
                    if result.returncode != 0:
                        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
                    outputs.append(result.stdout.strip().splitlines()[-1:])
                n = args.studies
                print(
                    f"{method:<6} {times[0]:>8.1f} {times[1]:>8.1f} {times[2]:>9.1f} "
                    f"{n / times[0] * 60:>9.1f} {n / sum(times) * 60:>8.1f}  "
                    f"{outputs[0]} {outputs[2]}"
                )


if __name__ == "__main__":
    main()
