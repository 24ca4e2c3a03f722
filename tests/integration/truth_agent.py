"""``liver-agent`` with the phantoms' true liver masks in place of the segmentation network.

Run as ``python -m tests.integration.truth_agent serve --config FILE`` with
``LIVER_AGENT_TEST_MASKS`` naming a folder of ``<SeriesInstanceUID>.npy`` boolean masks (slices
sorted along the normal, as ``PhantomStudy.liver_mask``). Everything else is the real agent:
the bundles are loaded and the classifier runs; only the liver mask of a known series comes
from the file (an untrained network finds no liver, and the PACS loop is what is under test).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pipeline.phantoms import PhantomStudy, generate_study
from tests.integration.processes import (
    AgentProcess,
    agent_config,
    free_port,
    wait_for_port,
    wait_until,
)

MASKS_ENV = "LIVER_AGENT_TEST_MASKS"
REPO = Path(__file__).resolve().parents[2]


class TruthSegmentation:
    """Answers with the stored mask of a known series; other series go to the network."""

    def __init__(self, network: Any, masks: Path) -> None:
        self.network = network
        self.masks = masks
        self.info = network.info
        self.manifest = network.manifest

    def predict(self, volume: Any) -> Any:
        from pipeline.results import LiverSegmentation

        file = self.masks / f"{volume.series_instance_uid}.npy"
        if not file.is_file():
            return self.network.predict(volume)
        mask = np.load(file).astype(bool)
        if mask.shape != volume.shape:
            raise ValueError(f"mask {mask.shape} does not fit the volume {volume.shape}")
        spacing = float(volume.pixel_spacing[0]) * float(volume.pixel_spacing[1])
        area = mask.sum(axis=(1, 2), dtype=np.float64) * spacing
        return LiverSegmentation(mask, area, float(area.sum() * volume.slice_spacing / 1000.0))


def save_mask(folder: Path, series_instance_uid: str, mask: np.ndarray[Any, Any]) -> None:
    """Store a series' true liver mask for the agent to use."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{series_instance_uid}.npy", mask.astype(bool))


class TruthAgentProcess(AgentProcess):
    """An :class:`AgentProcess` running this module instead of ``liver-agent``."""

    masks: Path = Path()

    def start(self, wait: bool = True) -> TruthAgentProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config))
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            MASKS_ENV: str(self.masks),
            # torch's OpenMP threads spin while they wait: on a busy 2-core machine that makes
            # every forward pass ~10x slower unless they sleep instead
            "OMP_WAIT_POLICY": "PASSIVE",
        }
        command = [sys.executable, "-m", "tests.integration.truth_agent", "serve"]
        self.proc = subprocess.Popen(
            [*command, "--config", str(self.config_path)],
            cwd=self.workdir,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            env=env,
        )
        if wait:
            wait_for_port(self.port, 60, self.proc)
        return self


@contextlib.contextmanager
def running_truth_agent(
    workdir: Path, masks: Path, bundles: tuple[Path, Path], **groups: Any
) -> Iterator[TruthAgentProcess]:
    """Start the agent with ``bundles`` (segmentation, classification) and the true masks in
    ``masks`` (other ``model`` settings from ``groups``); stop it on exit, printing its log if
    the block failed."""
    port, http_port = free_port(), free_port()
    model = {"segmentation": str(bundles[0]), "classification": str(bundles[1]), "device": "cpu"}
    model.update(groups.pop("model", {}))  # e.g. mode: silent
    config = agent_config(port, http_port, model=model, **groups)
    agent = TruthAgentProcess(workdir, config, port, http_port)
    agent.masks = masks
    agent.start()
    try:
        yield agent
    except BaseException:
        print("---- agent log (tail) ----\n" + agent.log()[-8000:])
        raise
    finally:
        agent.stop()


def truth_phantom(
    folder: Path, masks: Path, *, seed: int, roles: tuple[str, ...], cirrhotic: bool = True
) -> PhantomStudy:
    """A small phantom study (24 axial T2 slices of 64 x 64) whose true liver mask the agent
    will use."""
    study = generate_study(
        folder, cirrhotic=cirrhotic, seed=seed, roles=roles, axial_t2_slices=24, matrix=64
    )
    if study.target_series_uid is not None and study.liver_mask is not None:
        save_mask(masks, study.target_series_uid, study.liver_mask)
    return study


def files_of(study: PhantomStudy) -> list[Path]:
    """Every file of a phantom study."""
    return [f for series in study.series for f in series.files]


def truth_load(masks: Path) -> Any:
    """A replacement for ``Models.load`` (a classmethod to set on ``Models``): the bundles are
    loaded and the classifier runs as in production, but the segmentation's output is the
    phantom's true mask saved under ``masks``."""
    from pipeline.run import Models

    real_load = Models.load.__func__  # type: ignore[attr-defined]

    def load(
        cls: type[Models],
        segmentation: Path,
        classification: Path,
        device: str,
        runtime: str = "torch",
        cache: Path | None = None,
    ) -> Models:
        models: Models = real_load(cls, segmentation, classification, device, runtime, cache)
        models.segmentation = TruthSegmentation(models.segmentation, masks)  # type: ignore[assignment]
        return models

    return classmethod(load)


def _patch_models() -> None:
    from pipeline.run import Models

    Models.load = truth_load(Path(os.environ[MASKS_ENV]))  # type: ignore[method-assign]


if __name__ == "__main__":
    _patch_models()
    from agent.cli import main

    main()


def check_whole_study_received(
    agent: TruthAgentProcess, study: PhantomStudy, job: dict[str, Any]
) -> None:
    """Every file of ``study`` reached the agent. The job ran on all of them, unless it is a
    T2-first job: that one started on the instances received when the axial T2 was complete
    (its snapshot), and stood when the rest of the study changed nothing."""
    total = len(files_of(study))
    wait_until(
        lambda: agent.finished_job(study.study_instance_uid)["study"]["instance_count"] == total,
        30,
        f"all {total} instances of the study",
    )
    if "t2_first" in (job.get("details") or {}):
        assert job["instance_count"] <= total
    else:
        assert job["instance_count"] == total
