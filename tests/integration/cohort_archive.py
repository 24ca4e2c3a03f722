"""A real Orthanc standing in for the hospital archive of a cohort: phantom studies (cirrhotic
and normal, three vendors) stored in it, and the agent's cohort commands run against it."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.phantoms import PhantomStudy, generate_study
from tests.integration.orthanc import Modality, OrthancProcess
from tests.integration.processes import agent_config, free_port
from tests.integration.truth_agent import MASKS_ENV, REPO, files_of, save_mask

VENDORS = ("siemens", "ge", "philips")


def archive_phantoms(
    folder: Path,
    masks: Path,
    count: int,
    *,
    seed0: int = 100,
    no_t2: int = 1,
    matrix: int = 64,
) -> list[PhantomStudy]:
    """``count`` small phantom studies (24 axial T2 slices of ``matrix`` squared, a localizer
    and a DWI),
    cirrhotic and normal alternating over three vendors; the last ``no_t2`` have a coronal T2
    and no axial T2. The true liver masks go to ``masks`` for the truth agent."""
    studies = []
    for i in range(count):
        t2 = "cor_t2" if i >= count - no_t2 else "ax_t2"
        roles = ("localizer", t2, "dwi")
        study = generate_study(
            folder / f"study{i}",
            cirrhotic=i % 2 == 0,
            vendor=VENDORS[i % 3],  # type: ignore[arg-type]
            seed=seed0 + i,
            roles=roles,
            axial_t2_slices=24,
            matrix=matrix,
        )
        if study.target_series_uid is not None and study.liver_mask is not None:
            save_mask(masks, study.target_series_uid, study.liver_mask)
        studies.append(study)
    return studies


def accession(study: PhantomStudy) -> str:
    """The accession number the generator wrote into ``study`` (what a cohort CSV lists)."""
    from pydicom import dcmread

    return str(dcmread(study.series[0].files[0], stop_before_pixels=True).AccessionNumber)


def upload(orthanc: OrthancProcess, studies: list[PhantomStudy]) -> None:
    for study in studies:
        orthanc.upload(files_of(study))


@dataclass
class CohortAgent:
    """The agent's settings and working folder for cohort commands (no ``serve`` running)."""

    workdir: Path
    masks: Path
    config: dict[str, Any]

    @property
    def config_path(self) -> Path:
        return self.workdir / "liver-agent.yaml"

    @property
    def db_path(self) -> Path:
        return self.workdir / "var" / "liver-agent.db"

    @property
    def port(self) -> int:
        return int(self.config["dicom"]["port"])

    def write(self) -> CohortAgent:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config))
        return self

    def command(self, *args: str) -> tuple[list[str], dict[str, str]]:
        """The command line and environment of ``liver-agent ARGS --config FILE`` with the
        phantoms' true liver masks."""
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            MASKS_ENV: str(self.masks),
            "OMP_WAIT_POLICY": "PASSIVE",
        }
        command = [
            sys.executable,
            "-m",
            "tests.integration.truth_agent",
            *args,
            "--config",
            str(self.config_path),
        ]
        return command, env

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run ``liver-agent ARGS --config FILE`` (:meth:`command`) to its end."""
        command, env = self.command(*args)
        return subprocess.run(
            command,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )


def cohort_agent(
    workdir: Path,
    masks: Path,
    bundles: tuple[Path, Path],
    orthanc: OrthancProcess,
    *,
    retrieve: str,
    register_modality: bool = True,
    **source: Any,
) -> CohortAgent:
    """Settings with Orthanc as source ``pacs`` (``retrieve: move | get | wado``); for C-MOVE
    Orthanc learns the agent's AE title and port as modality ``liveragent``."""
    port = free_port()
    if retrieve == "wado":
        pacs: dict[str, Any] = {"kind": "dicomweb", "base_url": orthanc.dicomweb_url}
    else:
        pacs = {"ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}
    pacs["name"] = "pacs"
    pacs.update({"retrieve": retrieve, "max_concurrent_studies": 2, "timeout_seconds": 30})
    pacs.update(source)
    model = {"segmentation": str(bundles[0]), "classification": str(bundles[1]), "device": "cpu"}
    config = agent_config(
        port,
        free_port(),
        model=model,
        sources=[pacs],
        cohorts={"path": str(workdir / "cohorts"), "patient_key_salt": "test-salt-5f1c"},
    )
    if register_modality:
        orthanc.add_modality("liveragent", Modality("LIVERAI", port))
    return CohortAgent(workdir, masks, config).write()
