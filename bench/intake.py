"""How fast the native front end's indexer takes received files in, against the one-by-one
ingest it replaced, in one process.

    .venv/bin/python -m bench.intake [--files 500] [--size 256] [--threads 1 2 4] [--repeat 3]

Each try fills a fresh ``incoming`` folder (new spool, new SQLite database) with ``--files``
MR images of one series, as storescp would have left them, then takes them in:

- ``one by one``: each file through ``Ingestor.store`` on N threads (one instance per commit,
  shared flushes; the file written again into the spool) - the first version of the indexer;
- ``batches``: :class:`agent.native_receiver.IncomingIndexer` with N drainers (batches of up
  to 64: one lookup, files hard-linked into place, one multi-row insert, one flush).

Printed: images/s per variant and thread count (median of ``--repeat`` tries, interleaved).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydicom.uid import generate_uid

from agent.context import open_context
from agent.native_receiver import IncomingIndexer, incoming_folder, rejected_folder
from agent.settings import load_settings
from tests.factory import write_series


def _try(root: Path, files: list[Path], variant: str, threads: int, flush: str) -> float:
    """Seconds to take every file in."""
    work = Path(tempfile.mkdtemp(dir=root))
    try:
        settings = load_settings(
            None,
            database={"url": f"sqlite:///{work / 'db.sqlite'}"},
            spool={"path": work / "spool", "min_free_mb": 0, "flush": flush},
        )
        ctx = open_context(settings)
        incoming = incoming_folder(ctx.spool.root)
        incoming.mkdir(parents=True)
        names = []
        for n, source in enumerate(files):
            shutil.copy(source, incoming / f"MR.X.{n}")
            names.append(f"MR.X.{n}")
        started = time.perf_counter()
        if variant == "one by one":

            def take(name: str) -> None:
                path = incoming / name
                ctx.ingestor.store(path.read_bytes(), association_id=None, source_ae=None)
                path.unlink()

            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(take, names))
        else:
            indexer = IncomingIndexer(
                ctx.ingestor, incoming, rejected_folder(ctx.spool.root), threads=threads
            )
            indexer.start()
            while indexer.taken < len(names):
                time.sleep(0.002)
            indexer.stop()
        seconds = time.perf_counter() - started
        ctx.ingestor.close()
        ctx.engine.dispose()
        return seconds
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--flush", choices=("files", "filesystem"), default="files")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="intake-bench-") as tmp:
        root = Path(tmp)
        files = write_series(
            root / "data", args.files, study_uid=generate_uid(), rows=args.size, columns=args.size
        )
        print(
            f"{args.files} MR images {args.size}x{args.size}, {os.cpu_count()} CPUs, "
            f"{platform.processor() or platform.machine()}, spool.flush={args.flush}"
        )
        times: dict[tuple[str, int], list[float]] = {}
        for _ in range(args.repeat):
            for threads in args.threads:
                for variant in ("one by one", "batches"):
                    seconds = _try(root, files, variant, threads, args.flush)
                    times.setdefault((variant, threads), []).append(seconds)
        print("| variant | threads | images/s (median) | ms per image |")
        print("|---|---:|---:|---:|")
        for (variant, threads), values in times.items():
            median = statistics.median(values)
            print(
                f"| {variant} | {threads} | {args.files / median:.0f} "
                f"| {1000 * median / args.files:.2f} |"
            )


if __name__ == "__main__":
    main()
