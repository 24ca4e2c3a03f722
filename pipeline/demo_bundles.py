"""The model bundles a serving process uses: the configured ones, the DEMO bundle of a task
where none is configured. The one door from serving code to the DEMO training code, which is
imported only here and only when a DEMO bundle has to be built (first use of a code version)."""

from __future__ import annotations

from pathlib import Path


def ensure_demo_bundles(cache_dir: Path, *, progress: bool = False) -> tuple[Path, Path]:
    """The DEMO segmentation and classification bundles under ``cache_dir``, built on first use.

    Parameters
    ----------
    cache_dir
        Where DEMO bundles are kept (settings ``model.cache_dir``).
    progress
        Show progress bars while building (a few minutes on a CPU).

    Returns
    -------
    tuple of Path
        The segmentation and classification bundle folders.
    """
    from pipeline.training.demo import ensure_demo_bundles as build_or_find

    segmentation, classification = build_or_find(cache_dir, progress=progress)
    return Path(segmentation), Path(classification)


def bundle_paths(
    segmentation: Path | None,
    classification: Path | None,
    cache_dir: Path,
    *,
    progress: bool = False,
) -> tuple[Path, Path]:
    """The segmentation and classification bundles to load.

    A task without a configured bundle gets its DEMO bundle. A DEMO bundle speaks only about
    the project's own phantom studies (:mod:`pipeline.demo_scope`), so a real segmentation
    bundle paired with the DEMO classifier gives a SEG and liver measurements, but no finding.

    Parameters
    ----------
    segmentation, classification
        Configured bundle folders (settings ``model.segmentation`` / ``model.classification``).
    cache_dir
        Where DEMO bundles are kept.
    progress
        Show progress while a DEMO bundle is built.
    """
    if segmentation is not None and classification is not None:
        return segmentation, classification
    demo_segmentation, demo_classification = ensure_demo_bundles(cache_dir, progress=progress)
    return segmentation or demo_segmentation, classification or demo_classification
