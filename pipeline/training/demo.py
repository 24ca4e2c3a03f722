"""The DEMO bundles: both networks trained on synthetic phantoms so the agent runs out of the box,
built on first use and cached per code version. Labelled DEMO everywhere; not for patients."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from pipeline.bundle import Split, code_version, read_manifest
from pipeline.errors import BundleError
from pipeline.training.cls import ClsOptions, train_classification
from pipeline.training.data import ClsCase, SegCase
from pipeline.training.loop import TrainConfig
from pipeline.training.seg import train_segmentation

if TYPE_CHECKING:
    from pipeline.phantoms import PhantomVolume, Vendor

logger = logging.getLogger(__name__)

DEMO_USE = (
    "DEMO ONLY: trained on synthetic phantoms so that the agent can be tried out of the box. "
    "Not trained on patients; its results on real images mean nothing. Not a medical device."
)
SEGMENTATION_DIR = "segmentation"
CLASSIFICATION_DIR = "classification"
VENDORS: tuple[Vendor, ...] = ("siemens", "ge", "philips")


@dataclass(frozen=True)
class DemoSettings:
    """Sizes and epochs of the DEMO training (chosen to fit about 5 minutes on 2 CPU cores)."""

    seg_phantoms: int = 10  # the last seg_test_phantoms of them are the test split
    seg_test_phantoms: int = 2
    seg_margin: int = 4  # training keeps the liver's slices and this many beyond each end
    seg_input: int = 128
    seg_epochs: int = 8
    seg_batch: int = 16
    seg_lr: float = 2e-3
    cls_phantoms: int = 60
    cls_input: int = 96
    cls_epochs: int = 10
    cls_batch: int = 16
    cls_lr: float = 1e-3
    cls_neighbours: int = 1  # training also uses the slices this far from the caudate level
    matrix: int = 256


def _phantom(seed: int, cirrhotic: bool, matrix: int) -> PhantomVolume:
    from pipeline.phantoms import phantom_axial_t2

    return phantom_axial_t2(
        cirrhotic=cirrhotic,
        seed=seed,
        matrix=matrix,
        vendor=VENDORS[seed % len(VENDORS)],
        fat_suppressed=(seed // 2) % 4 == 3,  # independent of the label (seed parity)
    )


def segmentation_phantoms(
    count: int, seed: int, matrix: int = 256, margin: int | None = None, first: int = 0
) -> list[SegCase]:
    """``count`` phantom volumes from the ``first``-th on, alternately normal and cirrhotic,
    vendors cycled.

    With ``margin``, each volume keeps only the slices that show liver and ``margin`` slices
    beyond each end (training time goes to the slices that teach the liver's edges, not to
    the pelvis and the chest).
    """
    cases = []
    for i in range(first, first + count):
        s = seed * 1000 + i
        vol = _phantom(s, bool(i % 2), matrix)
        pixels, mask = vol.image, vol.liver_mask
        if margin is not None:
            present = np.flatnonzero(mask.any(axis=(1, 2)))
            if present.size:
                first = max(0, int(present[0]) - margin)
                last = min(mask.shape[0], int(present[-1]) + margin + 1)
                pixels, mask = pixels[first:last], mask[first:last]
        cases.append(
            SegCase(
                case_id=f"phantom-{s}",
                pixels=pixels,
                mask=mask,
                pixel_spacing=vol.pixel_spacing,
                slice_spacing=vol.slice_spacing,
                acquisition=vol.acquisition,
            )
        )
    return cases


def demo_segmentation_cases(settings: DemoSettings, seed: int) -> tuple[list[SegCase], Split]:
    """Training phantoms (liver slices and a margin) and whole test phantoms, both labels in
    each part; no validation part: the last epoch is kept (one synthetic validation volume
    proved too noisy a guide), and the cosine schedule ends at a low learning rate."""
    n_test = settings.seg_test_phantoms
    n_train = settings.seg_phantoms - n_test
    train = segmentation_phantoms(n_train, seed, settings.matrix, settings.seg_margin)
    test = segmentation_phantoms(n_test, seed, settings.matrix, first=n_train)
    split = Split(train=[c.case_id for c in train], val=[], test=[c.case_id for c in test])
    return [*train, *test], split


def classification_phantoms(
    seeds: list[int],
    matrix: int = 256,
    neighbours: int = 0,
    segment: Callable[[npt.NDArray[np.floating]], npt.NDArray[np.bool_]] | None = None,
) -> dict[int, list[ClsCase]]:
    """For each seed (cirrhotic when odd) the caudate-level slice masked by the liver mask,
    first, then the slices up to ``neighbours`` away from it.

    The mask is the one ``segment`` draws on the volume (upstream segmentation: the masks the
    classifier will be given in the agent), else the true mask. The level is found by the
    pipeline's own rule (:func:`pipeline.caudate.caudate_index_of_mask`) on that mask, so the
    classifier is trained on the slices the agent will show it. A seed whose mask is empty
    gives no case.
    """
    from pipeline.caudate import caudate_index_of_mask

    out: dict[int, list[ClsCase]] = {}
    for s in seeds:
        vol = _phantom(s, bool(s % 2), matrix)
        image = vol.image
        mask = vol.liver_mask if segment is None else segment(image)
        if not mask.any():
            out[s] = []
            continue
        k0 = caudate_index_of_mask(mask, vol.pixel_spacing, vol.slice_spacing)
        offsets = [0] + [d for n in range(1, neighbours + 1) for d in (-n, n)]
        cases = []
        for d in offsets:
            k = k0 + d
            if 0 <= k < image.shape[0] and mask[k].any():
                cid = f"phantom-{s}" if d == 0 else f"phantom-{s}{d:+d}"
                cases.append(ClsCase(cid, image[k], mask[k], int(s % 2), vol.acquisition))
        out[s] = cases
    return out


def train_demo_classifier(
    out: Path,
    *,
    seed: int,
    settings: DemoSettings,
    progress: bool,
    overwrite: bool = False,
    segmentation: Path | None = None,
) -> Path:
    """Train the DEMO classifier on phantoms split 70/15/15 by phantom (neighbour slices of
    the training phantoms are extra training images), masked by the liver that the
    ``segmentation`` bundle draws when one is given (the study's best pipeline: upstream
    segmentation), else by the true liver."""
    from pipeline.training.split import split_cases

    segment = None
    if segmentation is not None:
        from pipeline.bundle import load_bundle
        from pipeline.inference import SegmentationModel

        segment = SegmentationModel(load_bundle(segmentation), device="cpu").segment
    seeds = [seed * 1000 + 500 + i for i in range(settings.cls_phantoms)]
    per_seed = classification_phantoms(seeds, settings.matrix, settings.cls_neighbours, segment)
    seeds = [s for s in seeds if per_seed[s]]
    parts = split_cases([f"phantom-{s}" for s in seeds], seed)
    train_ids = [c.case_id for s in seeds if f"phantom-{s}" in parts.train for c in per_seed[s]]
    split = Split(train=train_ids, val=parts.val, test=parts.test)
    cases = [c for s in seeds for c in per_seed[s]]
    config = TrainConfig(
        epochs=settings.cls_epochs,
        seed=seed,
        batch_size=settings.cls_batch,
        input_size=settings.cls_input,
        lr=settings.cls_lr,
        name="liver-cirrhosis-DEMO",
        version=code_version(),
        device="cpu",
        demo=True,
        intended_use=DEMO_USE,
        extra={"demo_settings": asdict(settings)},
    )
    bundle = train_classification(
        cases,
        out,
        config,
        ClsOptions(mode="masked"),
        data_description=(
            f"{len(seeds)} synthetic phantoms (pipeline.phantoms), caudate level, masked by "
            + ("the DEMO segmentation" if segmentation is not None else "the true liver")
        ),
        progress=progress,
        overwrite=overwrite,
        split=split,
    )
    return bundle.path


def build_demo_bundles(
    out: Path,
    *,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
    settings: DemoSettings | None = None,
) -> tuple[Path, Path]:
    """Train both DEMO networks on phantoms and write ``out/segmentation`` and
    ``out/classification``.

    Returns
    -------
    tuple of Path
        The segmentation and classification bundle folders.
    """
    settings = settings or DemoSettings()
    started = time.monotonic()
    cases, split = demo_segmentation_cases(settings, seed)
    config = TrainConfig(
        epochs=settings.seg_epochs,
        seed=seed,
        batch_size=settings.seg_batch,
        input_size=settings.seg_input,
        lr=settings.seg_lr,
        name="liver-segmentation-DEMO",
        version=code_version(),
        device="cpu",
        demo=True,
        intended_use=DEMO_USE,
        extra={"demo_settings": asdict(settings)},
    )
    seg = train_segmentation(
        cases,
        out / SEGMENTATION_DIR,
        config,
        data_description=(
            f"{len(cases)} synthetic phantom volumes (pipeline.phantoms); training volumes "
            f"cut to the liver's slices +-{settings.seg_margin}"
        ),
        progress=progress,
        overwrite=overwrite,
        split=split,
    ).path
    cls = train_demo_classifier(
        out / CLASSIFICATION_DIR,
        seed=seed,
        settings=settings,
        progress=progress,
        overwrite=overwrite,
        segmentation=seg,
    )
    logger.info("DEMO bundles built in %.0f s under %s", time.monotonic() - started, out)
    return seg, cls


def demo_key(settings: DemoSettings | None = None, seed: int = 0) -> str:
    """Package version plus a hash of the training, network, bundle and phantom code and the
    DEMO settings: a change to any of them makes a new cache entry."""
    import pipeline

    root = Path(pipeline.__file__).parent
    digest = hashlib.sha256(repr((asdict(settings or DemoSettings()), seed)).encode())
    files = sorted(
        [
            *root.glob("training/*.py"),
            *root.glob("phantoms/*.py"),
            root / "networks.py",
            root / "preprocess.py",
            root / "bundle.py",
        ]
    )
    for file in files:
        digest.update(file.relative_to(root).as_posix().encode())
        digest.update(file.read_bytes())
    return f"{code_version()}-{digest.hexdigest()[:12]}"


def _complete(folder: Path) -> bool:
    try:
        for name in (SEGMENTATION_DIR, CLASSIFICATION_DIR):
            read_manifest(folder / name)
    except BundleError:
        return False
    return True


@contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def ensure_demo_bundles(
    cache_dir: Path,
    *,
    progress: bool = True,
    settings: DemoSettings | None = None,
    seed: int = 0,
) -> tuple[Path, Path]:
    """The DEMO bundles, built on first use under ``cache_dir/demo-<key>/``.

    Safe against several processes at once: one builds (holding a file lock) into a temporary
    folder renamed into place when complete; the others wait for the lock and then use it.

    Parameters
    ----------
    cache_dir
        Where DEMO bundles are kept (settings ``model.cache_dir``).
    progress
        Show progress bars while building.
    settings, seed
        The DEMO training settings (tests use smaller ones); part of the cache key.

    Returns
    -------
    tuple of Path
        The segmentation and classification bundle folders.
    """
    key = demo_key(settings, seed)
    final = cache_dir / f"demo-{key}"
    if not _complete(final):
        with _locked(cache_dir / f".demo-{key}.lock"):
            if not _complete(final):
                logger.info("building the DEMO bundles in %s (first use of this version)", final)
                tmp = cache_dir / f".demo-{key}.tmp-{os.getpid()}"
                shutil.rmtree(tmp, ignore_errors=True)
                try:
                    build_demo_bundles(
                        tmp, seed=seed, progress=progress, settings=settings or DemoSettings()
                    )
                    if final.exists():
                        shutil.rmtree(final)  # an incomplete leftover
                    tmp.rename(final)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
    return final / SEGMENTATION_DIR, final / CLASSIFICATION_DIR


__all__ = [
    "CLASSIFICATION_DIR",
    "DEMO_USE",
    "SEGMENTATION_DIR",
    "DemoSettings",
    "build_demo_bundles",
    "classification_phantoms",
    "demo_key",
    "ensure_demo_bundles",
    "segmentation_phantoms",
]
