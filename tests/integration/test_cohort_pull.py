"""Site cohorts against a real Orthanc archive: ``cohort pull`` over C-MOVE, C-GET and WADO-RS,
then ``cohort run`` and ``cohort export``; bad input gets its reason in the cohort status."""

from __future__ import annotations

import csv
import json
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.phantoms import PhantomStudy
from tests.bundles import write_test_bundles
from tests.integration.cohort_archive import accession, archive_phantoms, cohort_agent, upload
from tests.integration.orthanc import OrthancProcess, orthanc_missing, running_orthanc
from tests.integration.processes import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LABEL_HEADER = [
    "accession",
    "patient_key",
    "study_uid",
    "series_uid",
    "sop_uid",
    "slice_index",
    "predicted_probability",
    "label",
]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_test_bundles(tmp_path_factory.mktemp("bundles"))


@pytest.fixture(scope="module")
def archive(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[OrthancProcess, list[PhantomStudy], Path]]:
    """Orthanc holding six phantom studies (the last without an axial T2) and their masks."""
    if missing := orthanc_missing():
        pytest.fail(missing)
    root = tmp_path_factory.mktemp("archive")
    masks = root / "masks"
    studies = archive_phantoms(root / "studies", masks, 6)
    with running_orthanc(root / "orthanc") as orthanc:
        upload(orthanc, studies)
        yield orthanc, studies, masks


def write_csv(path: Path, column: str, values: list[str]) -> Path:
    path.write_text(column + "\n" + "".join(f"{v}\n" for v in values))
    return path


def cohort_status(agent: Any, name: str) -> dict[str, dict[str, Any]]:
    result = agent.cli("cohort", "status", name, "--json")
    assert result.returncode == 0, result.stderr
    return {s["requested"]: s for s in json.loads(result.stdout)["studies"]}


def jobs_and_series(db: Path) -> tuple[int, dict[str, int]]:
    """Jobs in the agent's database, and series per study."""
    with sqlite3.connect(db) as conn:
        jobs = conn.execute("select count(*) from jobs").fetchone()[0]
        rows = conn.execute(
            "select st.study_instance_uid, count(se.id) from studies st "
            "join series se on se.study_id = st.id group by st.id"
        ).fetchall()
    return int(jobs), {str(uid): int(n) for uid, n in rows}


def test_pull_over_cmove_run_and_export(
    tmp_path: Path,
    archive: tuple[OrthancProcess, list[PhantomStudy], Path],
    bundles: tuple[Path, Path],
) -> None:
    orthanc, studies, masks = archive
    agent = cohort_agent(tmp_path / "agent", masks, bundles, orthanc, retrieve="move")
    accessions = [accession(s) for s in studies] + ["NOSUCH01"]
    csv_file = write_csv(tmp_path / "cohort.csv", "accession", accessions)

    pulled = agent.cli("cohort", "pull", "site", "--csv", str(csv_file))
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert "6 retrieved" in pulled.stdout, pulled.stdout
    assert "1 failed" in pulled.stdout
    status = cohort_status(agent, "site")
    missing = status["accession:NOSUCH01"]
    assert missing["status"] == "failed"
    assert missing["reason_code"] == "accession_not_found"
    assert "NOSUCH01" in missing["reason"]
    for study in studies:
        row = status[f"accession:{accession(study)}"]
        assert row["status"] == "retrieved", row
        assert row["study_instance_uid"] == study.study_instance_uid
    # only the series the selection may choose came (not the localizer, not the DWI), and no job
    jobs, series = jobs_and_series(agent.db_path)
    assert jobs == 0
    assert series == {s.study_instance_uid: 1 for s in studies}
    target = studies[0].target_series_uid
    assert target is not None
    assert status[f"accession:{accession(studies[0])}"]["instances"] == len(
        studies[0].series_by_role("ax_t2").files
    )

    ran = agent.cli("cohort", "run", "site", "--json")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    by_uid = {d["study_instance_uid"]: d for d in json.loads(ran.stdout)}
    assert len(by_uid) == 6
    no_t2 = by_uid[studies[-1].study_instance_uid]
    assert (no_t2["status"], no_t2["reason_code"]) == ("not_evaluated", "no_axial_t2")
    for study in studies[:-1]:
        assert by_uid[study.study_instance_uid]["status"] == "processed"

    out = tmp_path / "package"
    exported = agent.cli("cohort", "export", "site", str(out))
    assert exported.returncode == 0, exported.stdout + exported.stderr
    check_package(out, studies)
    check_trainer_reads_it(out, studies)


def check_trainer_reads_it(out: Path, studies: list[PhantomStudy]) -> None:
    """The package, labelled from the phantoms' truth, is what ``train cls --cohort`` reads."""
    from pipeline.training.cohort import read_cohort

    truth = {s.study_instance_uid: int(s.cirrhotic) for s in studies}
    with (out / "labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    with (out / "labelled.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*LABEL_HEADER, "reader_a"])
        writer.writeheader()
        for row in rows:
            label = str(truth[row["study_uid"]])
            writer.writerow({**row, "label": label, "reader_a": label})
    cohort = read_cohort(out, Path("labelled.csv"))
    assert {c.case.case_id: c.case.label for c in cohort.cases} == {
        r["study_uid"]: truth[r["study_uid"]] for r in rows
    }
    assert cohort.readers == ["a"]


def check_package(out: Path, studies: list[PhantomStudy]) -> None:
    """labels.csv, the slices as npz and png, the contact sheet and cohort.json agree."""
    with (out / "labels.csv").open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = [dict(zip(header, r, strict=True)) for r in reader]
    assert header == LABEL_HEADER
    evaluated = studies[:-1]
    assert sorted(r["study_uid"] for r in rows) == sorted(s.study_instance_uid for s in evaluated)
    keys = {r["patient_key"] for r in rows}
    assert len(keys) == len(evaluated)
    for row in rows:
        study = next(s for s in evaluated if s.study_instance_uid == row["study_uid"])
        assert row["series_uid"] == study.target_series_uid
        assert len(row["patient_key"]) == 16
        assert int(row["patient_key"], 16) >= 0
        assert "PH-" not in row["patient_key"]
        assert row["label"] == ""
        assert 0.0 <= float(row["predicted_probability"]) <= 1.0
        index = int(row["slice_index"])
        t2 = study.series_by_role("ax_t2")
        assert row["sop_uid"] in {_sop(f) for f in t2.files}
        folder = out / "studies" / row["study_uid"]
        with np.load(folder / "slice.npz") as arrays:
            image, mask = arrays["image"], arrays["mask"]
            assert image.dtype == np.float32
            assert image.shape == (64, 64)
            assert mask.dtype == np.uint8
            assert set(np.unique(mask)) <= {0, 1}
            assert mask.any()
            assert study.liver_mask is not None
            assert np.array_equal(mask.astype(bool), study.liver_mask[index])
            for name in ("above", "below"):
                assert arrays[name].dtype == np.float32
                assert arrays[name].shape in ((64, 64), (0, 0))
            assert arrays["pixel_spacing"].dtype == np.float32
            assert arrays["pixel_spacing"].shape == (2,)
        assert (folder / "slice.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sheet = (out / "contact-sheet.html").read_text()
    assert "http://" not in sheet
    assert "https://" not in sheet
    for row in rows:
        assert f'src="studies/{row["study_uid"]}/slice.png"' in sheet
    assert "no_axial_t2" in sheet
    meta = json.loads((out / "cohort.json").read_text())
    assert meta["cohort"] == "site"
    assert meta["models"]["segmentation"]["name"] == "test-segmentation-untrained"
    assert meta["agent_version"]
    statuses = {s["study_uid"]: s["status"] for s in meta["studies"] if s["study_uid"]}
    assert statuses[studies[-1].study_instance_uid] == "not_evaluated"
    assert sum(1 for s in meta["studies"] if s["exported"]) == len(evaluated)


def _sop(path: Path) -> str:
    from pydicom import dcmread

    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_pull_over_cget_by_date_resumes(
    tmp_path: Path,
    archive: tuple[OrthancProcess, list[PhantomStudy], Path],
    bundles: tuple[Path, Path],
) -> None:
    orthanc, studies, masks = archive
    # Orthanc answers C-FIND and C-GET only from the modalities it knows
    agent = cohort_agent(tmp_path / "agent", masks, bundles, orthanc, retrieve="get")
    pulled = agent.cli("cohort", "pull", "bydate", "--from", "1990-01-01", "--to", "2100-12-31")
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert "6 studies to pull" in pulled.stdout
    status = cohort_status(agent, "bydate")
    assert {s["study_instance_uid"] for s in status.values()} == {
        s.study_instance_uid for s in studies
    }
    assert all(s["status"] == "retrieved" for s in status.values()), status
    jobs, series = jobs_and_series(agent.db_path)
    assert jobs == 0
    assert set(series.values()) == {1}
    again = agent.cli("cohort", "pull", "bydate", "--from", "1990-01-01", "--to", "2100-12-31")
    assert again.returncode == 0, again.stderr
    assert "0 studies to pull" in again.stdout


def test_pull_over_wado_by_study_uid(
    tmp_path: Path,
    archive: tuple[OrthancProcess, list[PhantomStudy], Path],
    bundles: tuple[Path, Path],
) -> None:
    orthanc, studies, masks = archive
    agent = cohort_agent(
        tmp_path / "agent", masks, bundles, orthanc, retrieve="wado", register_modality=False
    )
    chosen = [studies[1], studies[2]]
    uids = [s.study_instance_uid for s in chosen] + ["1.2.826.0.1.3680043.8.498.1"]
    csv_file = write_csv(tmp_path / "uids.csv", "study_uid", uids)
    pulled = agent.cli("cohort", "pull", "web", "--csv", str(csv_file))
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    status = cohort_status(agent, "web")
    assert status["study:1.2.826.0.1.3680043.8.498.1"]["reason_code"] == "study_not_found"
    for study in chosen:
        row = status[f"study:{study.study_instance_uid}"]
        assert row["status"] == "retrieved", row
        assert row["instances"] == len(study.series_by_role("ax_t2").files)
    ran = agent.cli("cohort", "run", "web", "--json", "--workers", "2")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert [d["status"] for d in json.loads(ran.stdout)] == ["processed", "processed"]


def test_move_destination_refused(
    tmp_path: Path,
    archive: tuple[OrthancProcess, list[PhantomStudy], Path],
    bundles: tuple[Path, Path],
) -> None:
    orthanc, studies, masks = archive
    agent = cohort_agent(
        tmp_path / "agent",
        masks,
        bundles,
        orthanc,
        retrieve="move",
        move_destination="NOTDECLARED",
    )
    csv_file = write_csv(tmp_path / "one.csv", "accession", [accession(studies[0])])
    pulled = agent.cli("cohort", "pull", "refused", "--csv", str(csv_file))
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    (row,) = cohort_status(agent, "refused").values()
    assert row["status"] == "failed"
    assert row["reason_code"] == "move_destination_refused", row
    assert "NOTDECLARED" in row["reason"]


def _retrieved(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            found = conn.execute(
                "select count(*) from cohort_studies where status = 'retrieved'"
            ).fetchone()
    except sqlite3.Error:  # not created yet
        return 0
    return int(found[0])


def test_ctrl_c_keeps_what_was_retrieved_and_a_rerun_resumes(
    tmp_path: Path,
    archive: tuple[OrthancProcess, list[PhantomStudy], Path],
    bundles: tuple[Path, Path],
) -> None:
    orthanc, studies, masks = archive
    agent = cohort_agent(
        tmp_path / "agent", masks, bundles, orthanc, retrieve="get", max_concurrent_studies=1
    )
    csv_file = write_csv(tmp_path / "all.csv", "accession", [accession(s) for s in studies])
    command, env = agent.command("cohort", "pull", "ctrlc", "--csv", str(csv_file))
    proc = subprocess.Popen(
        command, cwd=agent.workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_until(lambda: _retrieved(agent.db_path) >= 1, 120, "the first retrieved study")
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    if proc.returncode == 0:
        pytest.skip("the pull finished before the interrupt arrived")
    assert proc.returncode == 130, stdout
    assert b"re-run" in stdout or b"again to resume" in stdout
    before = cohort_status(agent, "ctrlc")
    done = [r for r in before.values() if r["status"] == "retrieved"]
    assert done
    assert {r["status"] for r in before.values()} <= {"retrieved", "pending"}
    left = len(studies) - len(done)
    for row in done:  # what was acknowledged is complete and stays
        study = next(s for s in studies if s.study_instance_uid == row["study_instance_uid"])
        role = "ax_t2" if study.target_series_uid else "cor_t2"
        assert row["instances"] == len(study.series_by_role(role).files)

    again = agent.cli("cohort", "pull", "ctrlc", "--csv", str(csv_file))
    assert again.returncode == 0, again.stderr
    assert f"{left} studies to pull" in again.stdout
    after = cohort_status(agent, "ctrlc")
    assert all(r["status"] == "retrieved" for r in after.values()), after
