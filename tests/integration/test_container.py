"""The container image (deploy/Dockerfile), built with podman and run on the host's network:
C-ECHO, a phantom study in with DCMTK storescu, SEG + SR out to a DCMTK storescp on the host,
the HTTP API behind its token, the health check; then a new container on the same volume still
knows the job. Skips, saying why, where podman cannot run containers.

The agent in the first container is the image's own code with the phantom's true liver mask in
place of the segmentation network (tests/integration/truth_agent.py, mounted read-only: an
untrained network finds no liver, so no SEG); the second container runs the image's own
entrypoint. Small test bundles are mounted read-only, so neither container trains DEMO bundles.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from pydicom import dcmread

from tests.agent.test_delivery import StoreSCP
from tests.bundles import write_test_bundles
from tests.integration import podman as pm
from tests.integration.processes import (
    ECHOSCU,
    UNDER_WAY,
    dcmtk_env,
    free_port,
    storescu,
    wait_for_port,
    wait_until,
)
from tests.integration.truth_agent import MASKS_ENV, files_of, truth_phantom

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.container]

TAG = "localhost/liver-agent:test"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
STATE = "/var/lib/liver-agent"
CONFIG = "/etc/liver-agent/liver-agent.yaml"


@pytest.fixture(scope="module")
def image() -> str:
    """The image, built (or found in podman's layer cache) by deploy/build-image.sh."""
    if reason := pm.missing_requirement():
        pytest.skip(reason)
    if reason := pm.cannot_start_containers(pm.base_image()):
        pytest.skip(reason)
    output = pm.build_image(TAG)
    assert f"image {TAG}:" in output, output
    return TAG


@pytest.fixture
def volume() -> Iterator[str]:
    """A fresh named podman volume for the agent's state, removed afterwards."""
    name = f"liver-agent-test-{uuid.uuid4().hex[:12]}"
    pm.podman("volume", "create", name)
    try:
        yield name
    finally:
        pm.podman("volume", "rm", "--force", name, check=False)


class Container:
    """One ``podman run -d`` of the image on the host's network; removed on :meth:`remove`."""

    def __init__(
        self,
        image: str,
        mounts: list[str],
        env: dict[str, str],
        entrypoint: list[str] | None = None,
    ) -> None:
        self.name = f"liver-agent-test-{uuid.uuid4().hex[:12]}"
        args = ["run", "--detach", "--name", self.name, "--network", "host", *pm.ULIMITS]
        for mount in mounts:
            args += ["--volume", mount]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        command: list[str] = []
        if entrypoint:
            args += ["--entrypoint", entrypoint[0]]
            command = entrypoint[1:]
        pm.podman(*args, image, *command)

    def running(self) -> bool:
        state = pm.podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return state.stdout.strip() == "true"

    def wait_for_port(self, port: int, deadline_s: float) -> None:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if not self.running():
                raise RuntimeError(f"the container exited before port {port} opened")
            try:
                wait_for_port(port, 2.0)
                return
            except TimeoutError:
                continue
        raise TimeoutError(f"nothing listens on port {port} after {deadline_s} s")

    def inspect(self) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(pm.podman("inspect", self.name).stdout)
        return data[0]

    def logs(self) -> str:
        result = pm.podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def stop(self) -> None:
        pm.podman("stop", "--time", "30", self.name, timeout=90)

    def remove(self) -> None:
        pm.podman("rm", "--force", "--volumes", "--time", "5", self.name, check=False, timeout=90)


class Api:
    """The agent's HTTP API on the host's loopback, with its token."""

    def __init__(self, port: int, token: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.token = token

    def get(self, path: str, token: str | None = None, **params: Any) -> requests.Response:
        return requests.get(
            self.base + path,
            headers={"Authorization": f"Bearer {token or self.token}"},
            params=params,
            timeout=10,
        )

    def json(self, path: str, **params: Any) -> Any:
        response = self.get(path, **params)
        response.raise_for_status()
        return response.json()

    def finished_job(self, study_uid: str, deadline_s: float) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            jobs = self.json("/api/jobs", study_instance_uid=study_uid)["jobs"]
            if not jobs or jobs[0]["status"] in UNDER_WAY:
                return None
            detail: dict[str, Any] = self.json(f"/api/jobs/{jobs[0]['id']}")
            return detail

        job: dict[str, Any] = wait_until(final, deadline_s, f"the job of study {study_uid}", 0.5)
        return job


# building the image from nothing (the base bootstrapped, torch and the dependencies installed)
# takes about 13 minutes on 2 busy cores; podman's layer cache makes later builds take seconds
@pytest.mark.timeout(3600)
def test_image_receives_a_study_delivers_seg_and_sr_and_keeps_its_history(
    image: str, volume: str, tmp_path: Path
) -> None:
    masks = tmp_path / "masks"
    study = truth_phantom(
        tmp_path / "study", masks, seed=5, roles=("localizer", "ax_t2", "dwi"), cirrhotic=True
    )
    segmentation, classification = write_test_bundles(tmp_path / "bundles")
    for path in [segmentation.parent, *segmentation.parent.rglob("*")]:
        # bundles are written owner-only; the container's user (uid 10001) reads them
        path.chmod(0o755 if path.is_dir() else 0o644)
    dicom_port, http_port, dest_port = free_port(), free_port(), free_port()
    token = secrets.token_urlsafe(24)
    settings = {
        "dicom": {"ae_title": "LIVERAI", "host": "127.0.0.1", "port": dicom_port},
        "http": {"enabled": True, "host": "127.0.0.1", "port": http_port},
        "model": {
            "segmentation": "/bundles/segmentation",
            "classification": "/bundles/classification",
            "device": "cpu",
        },
        "completion": {"quiet_seconds": 1.0, "stable_seconds": 30.0, "poll_seconds": 0.2},
        "delivery": {"poll_seconds": 0.2, "retry_seconds": [1, 1, 2, 5, 10]},
        "destinations": [
            {
                "name": "viewer",
                "ae_title": "DEST",
                "host": "127.0.0.1",
                "port": dest_port,
                "route": "always",
                "send": {"seg": True, "sr": True, "sc": False},
            }
        ],
    }
    config = tmp_path / "etc" / "liver-agent.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump(settings))
    assert segmentation.parent == classification.parent
    mounts = [
        f"{volume}:{STATE}",
        f"{config}:{CONFIG}:ro",
        f"{segmentation.parent}:/bundles:ro",
    ]
    # the image's ENV sets http.host 0.0.0.0 (the container's default); on the host's network
    # the test keeps the agent on loopback
    env = {"LIVER_AGENT__HTTP__TOKEN": token, "LIVER_AGENT__HTTP__HOST": "127.0.0.1"}
    truth = [
        f"{masks}:/masks:ro",
        f"{pm.REPO / 'tests'}:/opt/liver-agent-tests/tests:ro",
    ]
    truth_env = {**env, MASKS_ENV: "/masks", "PYTHONPATH": "/opt/liver-agent-tests"}
    api = Api(http_port, token)

    scp = StoreSCP(tmp_path / "received", dest_port)
    scp.start()
    containers: list[Container] = []
    try:
        first = Container(
            image,
            mounts + truth,
            truth_env,
            ["python", "-m", "tests.integration.truth_agent", "serve"],
        )
        containers.append(first)
        first.wait_for_port(dicom_port, 180)
        assert first.inspect()["Config"]["User"] == "liver-agent"
        uid = pm.podman("exec", first.name, "id", "-u").stdout.strip()
        assert uid == "10001"  # not root

        echo = subprocess.run(
            [ECHOSCU, "-aet", "STORESCU", "-aec", "LIVERAI", "127.0.0.1", str(dicom_port)],
            capture_output=True,
            text=True,
            env=dcmtk_env(),
            timeout=60,
            check=False,
        )
        assert echo.returncode == 0, echo.stdout + echo.stderr

        sent = storescu(dicom_port, files_of(study))
        assert sent.returncode == 0, sent.stdout + sent.stderr

        wait_for_port(http_port, 60)
        assert api.get("/api/jobs", token="not-the-token").status_code == 401
        done = api.finished_job(study.study_instance_uid, 240)
        assert done["status"] == "done", done
        assert done["evaluated"] is True
        (delivery,) = done["deliveries"]
        assert delivery["status"] == "done"
        assert delivery["objects_sent"] == 2
        objects = {str(ds.SOPClassUID): ds for ds in (dcmread(p) for p in scp.received())}
        assert set(objects) == {SEG, COMPREHENSIVE_3D_SR}
        assert objects[SEG].StudyInstanceUID == study.study_instance_uid
        assert objects[SEG].ReferencedSeriesSequence[0].SeriesInstanceUID == (
            study.target_series_uid
        )

        # HEALTHCHECK: `liver-agent health` in the container (database, spool, GET /readyz)
        health = pm.podman("healthcheck", "run", first.name, check=False, timeout=120)
        assert health.returncode == 0, health.stdout + health.stderr + first.logs()[-4000:]

        first.stop()  # SIGTERM: the agent stops cleanly
        assert first.inspect()["State"]["ExitCode"] == 0, first.logs()[-4000:]

        # a new container from the image's own entrypoint, on the same volume
        second = Container(image, mounts, env)
        containers.append(second)
        second.wait_for_port(dicom_port, 180)
        wait_for_port(http_port, 60)
        jobs = api.json("/api/jobs", study_instance_uid=study.study_instance_uid)["jobs"]
        assert [(j["id"], j["status"]) for j in jobs] == [(done["id"], "done")]
        again = api.json(f"/api/jobs/{done['id']}")
        assert again["deliveries"][0]["status"] == "done"
        assert {o["sop_instance_uid"] for o in again["outputs"]} == {
            str(ds.SOPInstanceUID) for ds in objects.values()
        }
        wait_until(lambda: api.get("/readyz").status_code == 200, 120, "GET /readyz 200", 0.5)
    except BaseException:
        for container in containers:
            print(f"---- {container.name} log (tail) ----\n{container.logs()[-6000:]}")
        raise
    finally:
        for container in containers:
            container.remove()
        scp.stop()
