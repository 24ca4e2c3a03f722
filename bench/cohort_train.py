"""Time the site-cohort half of issue 11 on phantoms: a labelling package (the format of
``liver-agent cohort export``), ``train cls --cohort``, ``evaluate cls --cohort`` (report with
2000 bootstrap resamples, figures) and ``model install``.

    .venv/bin/python -m bench.cohort_train [--per-class 15] [--matrix 128] [--epochs 3]
        [--input-size 96] [--device cpu]

Prints wall and process CPU seconds of each step and the validation/test/report numbers (they
say the code runs and learns on phantoms, nothing about patients).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def timed(label: str, action: Callable[[], T]) -> T:
    wall, cpu = time.perf_counter(), time.process_time()
    result = action()
    print(
        f"{label:<28} wall {time.perf_counter() - wall:7.1f} s   "
        f"cpu {time.process_time() - cpu:7.1f} s",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=15)
    parser.add_argument("--matrix", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--input-size", type=int, default=96)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from agent.model_store import ModelStore
    from pipeline.training.cls import CLS_DEFAULTS
    from pipeline.training.cls_report import classification_report
    from pipeline.training.cls_report_html import write_report
    from pipeline.training.cohort import read_cohort
    from pipeline.training.cohort_train import plan_cohort_training, train_cohort_classifier
    from pipeline.training.loop import TrainConfig
    from tests.cohort_package import write_cohort_package

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        package = root / "package"
        timed(
            f"package ({2 * args.per_class} studies)",
            lambda: write_cohort_package(package, per_class=args.per_class, matrix=args.matrix),
        )
        cohort = timed("read + check labels", lambda: read_cohort(package))
        plan = plan_cohort_training(cohort, seed=0)
        print("split", json.dumps(plan.parts))
        config = TrainConfig(
            epochs=args.epochs,
            device=args.device,
            batch_size=CLS_DEFAULTS.batch_size,
            input_size=args.input_size,
            lr=CLS_DEFAULTS.lr,
            name="bench-cirrhosis",
        )
        bundle = timed(
            f"train ({args.epochs} epochs, {args.input_size} px)",
            lambda: train_cohort_classifier(cohort, plan, root / "bundle", config, progress=False),
        )
        print(
            "model card metrics",
            json.dumps(bundle.manifest.training.settings["model_card"]["metrics"]),
        )
        report = timed(
            "evaluate (all studies)",
            lambda: classification_report(
                bundle, cohort.cases, cohort.readers, split="all", device=args.device
            ),
        )
        timed("report files", lambda: write_report(report, root / "report"))
        print(
            f"report: n {report.n}, accuracy {report.accuracy.value:.3f} "
            f"({report.accuracy.ci_low:.3f}-{report.accuracy.ci_high:.3f}), AUC "
            f"{report.auc if report.auc is None else round(report.auc, 3)}"
        )
        timed(
            "model install",
            lambda: ModelStore(root / "store").install(root / "bundle", actor="bench"),
        )


if __name__ == "__main__":
    main()
