"""Scale-out on one PostgreSQL: 2 receiver and 3 worker processes share the database, the spool
and the results folder; 4 DCMTK storescu senders send 40 small phantom studies at once; one
worker is SIGKILLed while it runs a job.

Every study ends with exactly one ``done`` job version (its latest; an earlier T2-first
version replaced by it is cancelled), every result object reaches the storescp destination
exactly once (counted by SOP Instance UID: storescp writes each received
object to its own file, ``--unique-filenames``), and the killed worker's job is finished by
another worker after its heartbeat stopped.

The destination comes up only after the kill: no C-STORE can be in flight when the worker
dies (a send cut short by a crash is re-sent: at-least-once, as every DICOM router), so what
is counted is the claiming of jobs and deliveries across processes, not a crash mid-send.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from sqlalchemy import create_engine, text

from tests.bundles import write_test_bundles
from tests.integration.processes import (
    STORESCP,
    STORESCU,
    agent_config,
    dcmtk_env,
    free_port,
    wait_for_port,
    wait_until,
)
from tests.integration.truth_agent import TruthAgentProcess, files_of, truth_phantom

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STUDIES = 40
SENDERS = 4


def _agent(workdir: Path, role: str, shared: dict[str, Any], masks: Path) -> TruthAgentProcess:
    port, http_port = free_port(), free_port()
    config = agent_config(port, http_port, cluster={"role": role}, **shared)
    agent = TruthAgentProcess(workdir, config, port, http_port)
    agent.masks = masks
    return agent


def test_two_receivers_three_workers_one_killed(tmp_path: Path, postgres_url: str) -> None:
    masks = tmp_path / "masks"
    studies = [  # small studies: one axial T2 series of 24 slices, 64 x 64
        truth_phantom(
            tmp_path / "studies" / f"s{n}", masks, seed=n, roles=("ax_t2",), cirrhotic=n % 2 == 0
        )
        for n in range(STUDIES)
    ]
    bundles = write_test_bundles(tmp_path / "bundles")
    dest_port = free_port()
    received = tmp_path / "received"
    received.mkdir()
    shared: dict[str, Any] = {
        "database": {"url": postgres_url, "pool_size": 3, "pool_max_overflow": 5},
        "spool": {"path": str(tmp_path / "spool"), "min_free_mb": 0},
        "results": {"path": str(tmp_path / "results")},
        "model": {
            "segmentation": str(bundles[0]),
            "classification": str(bundles[1]),
            "device": "cpu",
        },
        "worker": {"threads": 1, "heartbeat_seconds": 0.5, "stale_after_seconds": 10.0},
        "completion": {"quiet_seconds": 1.0, "stable_seconds": 60.0, "poll_seconds": 0.3},
        "delivery": {"poll_seconds": 0.3, "retry_seconds": [1.0] * 300},
        "destinations": [
            {
                "name": "pacs",
                "ae_title": "DEST",
                "host": "127.0.0.1",
                "port": dest_port,
                "route": "always",
                "send": {"seg": True, "sr": True, "sc": False},
            }
        ],
    }
    receivers = [_agent(tmp_path / f"receiver{n}", "receiver", shared, masks) for n in range(2)]
    workers = [_agent(tmp_path / f"worker{n}", "worker", shared, masks) for n in range(3)]
    agents = receivers + workers
    engine = create_engine(postgres_url)
    senders: list[subprocess.Popen[str]] = []
    storescp: subprocess.Popen[bytes] | None = None

    def rows(sql: str) -> list[Any]:
        with engine.connect() as conn:
            return list(conn.execute(text(sql)).all())

    try:
        for agent in agents:  # all at once: they migrate the empty database one at a time
            agent.start(wait=False)
        for agent in receivers:
            wait_for_port(agent.port, 300, agent.proc)  # five processes import torch at once
        for agent in agents:
            wait_for_port(agent.http_port, 300, agent.proc)
        for n in range(SENDERS):
            files = [str(f) for s in studies[n::SENDERS] for f in files_of(s)]
            senders.append(
                subprocess.Popen(
                    [
                        STORESCU,
                        "-aet",
                        f"PACS{n}",
                        "-aec",
                        "LIVERAI",
                        "127.0.0.1",
                        str(receivers[n % 2].port),
                        *files,
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    env=dcmtk_env(),
                )
            )

        pids = {agent.proc.pid: agent for agent in workers if agent.proc is not None}

        def running_job_of_a_worker() -> tuple[int, str, TruthAgentProcess] | None:
            for job_id, worker in rows("select id, worker from jobs where status = 'running'"):
                pid = int(str(worker).split(":")[1])
                if pid in pids:
                    return int(job_id), str(worker), pids[pid]
            return None

        victim_job, victim_name, victim = wait_until(
            running_job_of_a_worker, 300, "a worker running a job", interval=0.05
        )
        victim.kill()
        for proc in senders:
            output = proc.communicate(timeout=300)[0]
            assert proc.returncode == 0, output[-2000:]

        storescp = subprocess.Popen(
            [STORESCP, "-aet", "DEST", "-uf", "-od", str(received), str(dest_port)],
            env=dcmtk_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(dest_port, 20, storescp)

        def all_settled() -> bool:
            (studies_done,) = rows("select count(*) from studies where status = 'complete'")[0]
            under_way = rows(
                "select count(*) from jobs where status in ('queued', 'running', 'delivering')"
            )[0][0]
            return studies_done == STUDIES and under_way == 0

        wait_until(all_settled, 600, "every study's job to finish", interval=0.5)

        jobs = rows("select study_id, version, status, worker, attempts, id from jobs")
        per_study: dict[int, list[Any]] = {}
        for row in jobs:
            per_study.setdefault(int(row[0]), []).append(row)
        assert len(per_study) == STUDIES
        for versions in per_study.values():  # T2-first may have replaced an early version
            statuses = [v[2] for v in sorted(versions, key=lambda v: int(v[1]))]
            assert statuses[-1] == "done", versions
            assert set(statuses[:-1]) <= {"cancelled"}, versions

        ran_by = {int(str(row[3]).split(":")[1]) for row in jobs if row[3] is not None}
        assert ran_by <= set(pids), "a receiver ran a job"
        for agent in workers:  # workers listen for no DICOM association
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", agent.port), 0.5),
            ):
                pytest.fail(f"a worker listens on its DICOM port {agent.port}")
        (_, _, status, worker, attempts, _) = next(row for row in jobs if row[5] == victim_job)
        assert status == "done"
        assert worker != victim_name, "the killed worker's job was not taken over"
        assert attempts == 2
        events = [
            str(r[0]) for r in rows(f"select message from job_events where job_id = {victim_job}")
        ]
        assert any("stopped; re-queued" in m for m in events), events

        outputs = {
            str(r[0])
            for r in rows(
                "select o.sop_instance_uid from outputs o join jobs j on j.id = o.job_id "
                "where j.status = 'done'"
            )
        }
        assert len(outputs) == 2 * STUDIES  # a SEG and an SR per study
        arrived = [
            str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in _files(received)
        ]
        assert sorted(arrived) == sorted(outputs), "an object missing or received twice"
    except BaseException:
        for agent in agents:
            print(f"---- {agent.workdir.name} log (tail) ----\n" + agent.log()[-4000:])
        raise
    finally:
        for proc in senders:
            if proc.poll() is None:
                proc.kill()
        if storescp is not None:
            storescp.terminate()
            storescp.wait(10)
        for agent in agents:
            agent.stop()
        engine.dispose()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file())
