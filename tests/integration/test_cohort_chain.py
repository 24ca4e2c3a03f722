"""The whole site-cohort chain of issue 11 against a real Orthanc archive, in the order a research
group follows it: ``cohort pull`` (C-MOVE) -> ``cohort run`` -> ``cohort export`` -> labels
filled in (here from the phantoms' truth) -> ``train cls --cohort`` -> ``evaluate cls --cohort``
-> ``model install`` -> ``model use`` -> ``liver-agent serve`` with the same settings classifies
a new study with the installed model and delivers its SR, naming that model, to the PACS.

The archive holds 30 labelled phantom studies (cirrhotic and normal alternating over three
vendors) and one without an axial T2, whose reason shows in ``cohort status``. C-GET and WADO-RS
pull part of the same archive and must feed the same labelling package as C-MOVE.
"""

from __future__ import annotations

import csv
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from pipeline.phantoms import PhantomStudy
from tests.bundles import write_test_bundles
from tests.integration.cohort_archive import (
    CohortAgent,
    accession,
    archive_phantoms,
    cohort_agent,
    upload,
)
from tests.integration.orthanc import (
    OrthancProcess,
    orthanc_missing,
    running_orthanc,
    wait_for_results,
)
from tests.integration.processes import LIVER_AGENT, storescu
from tests.integration.truth_agent import TruthAgentProcess, files_of, truth_phantom

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LABELLED = 30  # studies with an axial T2; one more in the archive has none
SITE_NAME = "site-cirrhosis"
SITE_VERSION = "2026.12-chain"
UNTRAINED = "test-classification-untrained"  # the classifier the settings name
SUBSET = 6  # studies C-GET and WADO-RS pull (both classes, three vendors)


@dataclass
class Archive:
    orthanc: OrthancProcess
    studies: list[PhantomStudy]  # the last one has no axial T2
    masks: Path
    bundles: tuple[Path, Path]
    root: Path


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    if missing := orthanc_missing():
        pytest.fail(missing)
    root = tmp_path_factory.mktemp("chain")
    masks = root / "masks"
    studies = archive_phantoms(root / "studies", masks, LABELLED + 1, seed0=400, matrix=48)
    bundles = write_test_bundles(root / "bundles")
    with running_orthanc(root / "orthanc") as orthanc:
        upload(orthanc, studies)
        yield Archive(orthanc, studies, masks, bundles, root)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def offline(*args: str) -> subprocess.CompletedProcess[str]:
    """``liver-agent ARGS`` for the commands that need no settings (training, evaluation)."""
    result = subprocess.run(
        [LIVER_AGENT, *args], capture_output=True, text=True, timeout=600, check=False
    )
    ok(result)
    return result


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def pull_run_export(agent: CohortAgent, name: str, studies: list[PhantomStudy], out: Path) -> None:
    """``cohort pull`` by accession (CSV), ``cohort run``, ``cohort export`` to ``out``."""
    csv_file = agent.workdir / f"{name}.csv"
    csv_file.write_text("accession\n" + "".join(f"{accession(s)}\n" for s in studies))
    pulled = ok(agent.cli("cohort", "pull", name, "--csv", str(csv_file), timeout=600))
    assert f"{len(studies)} retrieved" in pulled, pulled
    ok(agent.cli("cohort", "run", name, "--workers", "2", timeout=600))
    ok(agent.cli("cohort", "export", name, str(out)))


@dataclass
class Pulled:
    agent: CohortAgent
    package: Path


@pytest.fixture(scope="module")
def moved(archive: Archive) -> Pulled:
    """Every study of the archive pulled over C-MOVE, run and exported; Orthanc is also the
    agent's destination for results (which ``cohort run`` must not send)."""
    agent = cohort_agent(
        archive.root / "agent",
        archive.masks,
        archive.bundles,
        archive.orthanc,
        retrieve="move",
    )
    agent.config["model"]["store"] = str(agent.workdir / "models")
    agent.config["destinations"] = [
        {
            "name": "pacs-results",
            "ae_title": archive.orthanc.aet,
            "host": "127.0.0.1",
            "port": archive.orthanc.dicom_port,
            "route": "always",  # the new study comes from storescu, not from Orthanc's AE
        }
    ]
    agent.write()
    package = archive.root / "package-move"
    pull_run_export(agent, "site", archive.studies, package)
    return Pulled(agent, package)


def test_cohort_from_pacs_to_the_serving_classifier(
    archive: Archive, moved: Pulled, tmp_path: Path
) -> None:
    agent, package = moved.agent, moved.package
    studies, orthanc = archive.studies, archive.orthanc
    labelled, no_t2 = studies[:-1], studies[-1]
    truth = {s.study_instance_uid: int(s.cirrhotic) for s in studies}
    assert sorted(truth[s.study_instance_uid] for s in labelled) == [0] * 15 + [1] * 15

    # the study without an axial T2 has its reason in the cohort status; the others processed
    status = json.loads(ok(agent.cli("cohort", "status", "site", "--json")))["studies"]
    by_uid = {s["study_instance_uid"]: s for s in status}
    assert len(by_uid) == len(studies)
    assert (
        by_uid[no_t2.study_instance_uid]["status"],
        by_uid[no_t2.study_instance_uid]["reason_code"],
    ) == (
        "not_evaluated",
        "no_axial_t2",
    )
    assert by_uid[no_t2.study_instance_uid]["reason"]
    assert {by_uid[s.study_instance_uid]["status"] for s in labelled} == {"processed"}
    # cohort processing sends nothing to the PACS
    for study in labelled[:3]:
        study_id = orthanc.study_id(study.study_instance_uid)
        assert study_id is not None
        assert orthanc.agent_results(study_id) == {}

    # the package: one row per labelled study; the readers fill in the label (and a reader column)
    header, rows = read_rows(package / "labels.csv")
    assert sorted(r["study_uid"] for r in rows) == sorted(s.study_instance_uid for s in labelled)
    assert all(r["label"] == "" for r in rows)
    labels = tmp_path / "labels-filled.csv"
    with labels.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*header, "reader_a"])
        writer.writeheader()
        for n, row in enumerate(rows):
            label = truth[row["study_uid"]]
            read = 1 - label if n % 5 == 2 else label  # reader a misreads every 5th study
            writer.writerow({**row, "label": str(label), "reader_a": str(read)})

    # train on the package (tiny: one epoch on 32 x 32 slices) and evaluate on its test part
    bundle = tmp_path / "site-bundle"
    options = ["--cohort", str(package), "--labels", str(labels), "--device", "cpu"]
    tiny = ["--epochs", "1", "--input-size", "32", "--batch-size", "8", "--quiet"]
    named = ["--name", SITE_NAME, "--version", SITE_VERSION]
    trained = offline("train", "cls", *options, "--out", str(bundle), *tiny, *named)
    assert "15 cirrhosis / 15 no cirrhosis studies" in " ".join(trained.stderr.split())
    manifest = json.loads((bundle / "manifest.json").read_text())
    split = manifest["training"]["split"]
    parts = split["train"] + split["val"] + split["test"]
    assert sorted(parts) == sorted(s.study_instance_uid for s in labelled)

    report_dir = tmp_path / "report"
    offline("evaluate", "cls", *options, "--model", str(bundle), "--out", str(report_dir))
    report = json.loads((report_dir / "report.json").read_text())
    check_report(report, split["test"], truth)
    assert (report_dir / "report.html").is_file()
    pngs = list(report_dir.glob("*.png"))
    assert pngs
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)

    # install it and make it serve; serve starts with the very same settings file
    installed = ok(agent.cli("model", "install", str(bundle)))
    assert f"installed: {SITE_NAME} {SITE_VERSION} (classification)" in " ".join(installed.split())
    ok(agent.cli("model", "use", SITE_NAME, SITE_VERSION))
    listed = json.loads(ok(agent.cli("model", "list", "--json")))
    assert listed["in_use"]["classification"]["name"] == SITE_NAME
    serving = Path(listed["serving"]["classification"])
    assert (serving / "manifest.json").is_file()
    assert serving.is_relative_to(Path(agent.config["model"]["store"]))

    new = truth_phantom(
        tmp_path / "new",
        archive.masks,
        seed=4242,
        roles=("localizer", "ax_t2", "dwi"),
        cirrhotic=True,
    )
    serve = TruthAgentProcess(
        agent.workdir, agent.config, agent.port, int(agent.config["http"]["port"])
    )
    serve.masks = archive.masks
    serve.start()
    try:
        sent = storescu(serve.port, files_of(new))
        assert sent.returncode == 0, sent.stdout + sent.stderr
        job = serve.finished_job(new.study_instance_uid, deadline_s=180)
        study_id, found, _ = wait_for_results(
            orthanc, new.study_instance_uid, {"SEG", "SR"}, deadline_s=60
        )
    except BaseException:
        print("---- agent log (tail) ----\n" + serve.log()[-8000:])
        raise
    finally:
        serve.stop()
    assert job["status"] == "done", job
    (delivery,) = job["deliveries"]
    assert (delivery["destination"], delivery["status"]) == ("pacs-results", "done")
    assert job["evaluated"] is True
    assert (job["model_name"], job["model_version"]) == (SITE_NAME, SITE_VERSION)
    assert job["model_demo"] is False
    assert 0.0 <= job["probability"] <= 1.0
    assert job["label"] == ("cirrhosis" if job["probability"] >= 0.5 else "no cirrhosis")
    assert job["series_instance_uid"] == new.target_series_uid
    (sr_series,) = found["SR"]
    (instance_id,) = sr_series["Instances"]
    sr = dcmread(BytesIO(orthanc.instance_file(instance_id)))
    assert sr.StudyInstanceUID == new.study_instance_uid
    contributions = [str(e.ContributionDescription) for e in sr.ContributingEquipmentSequence]
    assert any(f"classification model {SITE_NAME} {SITE_VERSION}" in c for c in contributions)
    assert not any(UNTRAINED in c for c in contributions), contributions
    assert study_id == orthanc.study_id(new.study_instance_uid)


def check_report(report: dict[str, Any], test_uids: list[str], truth: dict[str, int]) -> None:
    """Every number is there and agrees with the confusion matrix, which agrees with the cases."""
    from sklearn.metrics import roc_auc_score

    assert report["model_name"] == SITE_NAME
    assert report["model_version"] == SITE_VERSION
    assert report["model_demo"] is False
    assert report["split"] == "test"
    cases = report["cases"]
    assert sorted(c["study_uid"] for c in cases) == sorted(test_uids)
    assert report["n"] == len(cases) >= 4
    threshold = report["threshold"]
    for case in cases:
        assert case["label"] == truth[case["study_uid"]]
        assert 0.0 <= case["probability"] <= 1.0
        assert case["predicted"] == int(case["probability"] >= threshold)
    cm = report["confusion"]
    tp = sum(1 for c in cases if c["label"] == 1 and c["predicted"] == 1)
    fn = sum(1 for c in cases if c["label"] == 1 and c["predicted"] == 0)
    fp = sum(1 for c in cases if c["label"] == 0 and c["predicted"] == 1)
    tn = sum(1 for c in cases if c["label"] == 0 and c["predicted"] == 0)
    assert (cm["tp"], cm["fn"], cm["fp"], cm["tn"], cm["n"]) == (tp, fn, fp, tn, len(cases))
    assert tp + fn > 0
    assert tn + fp > 0
    for key, k, n in (
        ("accuracy", tp + tn, len(cases)),
        ("sensitivity", tp, tp + fn),
        ("specificity", tn, tn + fp),
    ):
        p = report[key]
        assert (p["k"], p["n"]) == (k, n), key
        assert p["value"] == pytest.approx(k / n), key
        assert p["ci_low"] is not None, key
        assert p["ci_high"] is not None, key
        assert 0.0 <= p["ci_low"] <= p["value"] <= p["ci_high"] <= 1.0, key
    labels = [c["label"] for c in cases]
    scores = [c["probability"] for c in cases]
    assert report["auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert report["auc_ci_low"] is not None
    assert report["auc_ci_high"] is not None
    assert 0.0 <= report["auc_ci_low"] <= report["auc_ci_high"] <= 1.0
    assert report["auc_bootstrap"]["used"] > 0
    assert report["roc"]["fpr"]
    assert len(report["roc"]["fpr"]) == len(report["roc"]["tpr"])
    calibration = report["calibration"]
    assert sum(calibration["counts"]) == len(cases)
    assert calibration["brier_score"] == pytest.approx(
        sum((s - y) ** 2 for s, y in zip(scores, labels, strict=True)) / len(cases)
    )
    (reader,) = report["readers"]
    assert reader["name"] == "a"
    assert reader["n"] == len(cases)
    rc = reader["confusion"]
    reads = [int(c["reader_a"]) for c in cases]
    assert rc["tp"] + rc["tn"] == sum(r == y for r, y in zip(reads, labels, strict=True))
    assert reader["accuracy"]["value"] == pytest.approx((rc["tp"] + rc["tn"]) / len(cases))
    assert reader["network_accuracy"]["value"] == report["accuracy"]["value"]
    assert 0.0 <= reader["chi_square"]["p_value"] <= 1.0
    assert 0.0 <= reader["mcnemar_p_value"] <= 1.0
    net_right = [c["predicted"] == c["label"] for c in cases]
    read_right = [r == y for r, y in zip(reads, labels, strict=True)]
    pairs = list(zip(net_right, read_right, strict=True))
    assert reader["both_correct"] == pairs.count((True, True))
    assert reader["discordant_network_only"] == pairs.count((True, False))
    assert reader["discordant_reader_only"] == pairs.count((False, True))
    assert reader["both_wrong"] == pairs.count((False, False))


@pytest.mark.parametrize("method", ["get", "wado"])
def test_cget_and_wado_feed_the_same_package(
    archive: Archive, moved: Pulled, method: str, tmp_path: Path
) -> None:
    """Part of the archive (both classes, three vendors) over C-GET or WADO-RS: the same slices
    and the same rows of labels.csv as over C-MOVE."""
    chosen = archive.studies[:SUBSET]
    agent = cohort_agent(
        tmp_path / "agent",
        archive.masks,
        archive.bundles,
        archive.orthanc,
        retrieve=method,
        register_modality=False,
    )
    package = tmp_path / "package"
    pull_run_export(agent, "subset", chosen, package)
    _, rows = read_rows(package / "labels.csv")
    _, moved_rows = read_rows(moved.package / "labels.csv")
    uids = {s.study_instance_uid for s in chosen}
    expected = {r["study_uid"]: r for r in moved_rows if r["study_uid"] in uids}
    assert len(expected) == SUBSET
    assert {r["study_uid"]: r for r in rows}.keys() == expected.keys()
    for row in rows:
        other = expected[row["study_uid"]]
        for column in ("accession", "patient_key", "series_uid", "sop_uid", "slice_index"):
            assert row[column] == other[column], column
        assert float(row["predicted_probability"]) == pytest.approx(
            float(other["predicted_probability"]), abs=1e-5
        )
