"""Monitoring test data: 21 jobs of one model version written straight into the database (20
with a finding and a known truth over two ISO weeks, one not evaluated), scripted feedback (a
verdict changed later, one label from a report CSV) and three inputs flagged as drift.

Worked out by hand: TP 8, TN 7, FP 3, FN 2; accuracy 15/20, sensitivity 8/10, specificity
7/10; week A 8/10 correct, week B 7/10; 11 of 20 findings positive; 3 of 21 jobs drifted.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from agent.feedback import FeedbackSource, import_labels, record_feedback
from storage.models import Job, JobStatus, Study, utcnow

MODEL, VERSION = "liver-cls", "1.0"
# (predicted positive, truth positive) per job: week A then week B
WEEK_A = [(True, True)] * 5 + [(False, False)] * 3 + [(True, False)] + [(False, True)]
WEEK_B = [(True, True)] * 3 + [(False, False)] * 4 + [(True, False)] * 2 + [(False, True)]


def _monday(now: dt.datetime) -> dt.datetime:
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return start - dt.timedelta(days=now.weekday())


def _job(session: Any, n: int, when: dt.datetime, **fields: Any) -> Job:
    study = Study(study_instance_uid=f"1.2.826.0.1.{n}", accession_number=f"MON-{n}")
    session.add(study)
    session.flush()
    job = Job(study_id=study.id, created_at=when, **{"status": JobStatus.DONE, **fields})
    session.add(job)
    session.flush()
    return job


def make_jobs(sessions: sessionmaker[Session]) -> tuple[dict[int, bool], list[str]]:
    """The 21 jobs and the scripted feedback; return each job's truth and the two weeks."""
    now = utcnow()
    weeks = [_monday(now) - dt.timedelta(days=7), _monday(now)]
    truth: dict[int, bool] = {}
    with sessions.begin() as session:
        for n, (predicted, positive) in enumerate(WEEK_A + WEEK_B):
            week = weeks[0] if n < len(WEEK_A) else weeks[1]
            details: dict[str, Any] = {}
            if n in (1, 11, 12):
                details["drift"] = {"flagged": True, "reasons": ["manufacturer unknown"]}
            elif n == 2:
                details["drift"] = {"flagged": False, "reasons": []}
            elif n == 3:
                details["drift"] = "not a dict"  # read defensively
            job = _job(
                session,
                n,
                week + dt.timedelta(hours=1 + n),
                evaluated=True,
                label="cirrhosis" if predicted else "no cirrhosis",
                probability=0.85 if predicted else 0.15,
                model_name=MODEL,
                model_version=VERSION,
                details=details,
            )
            truth[job.id] = positive
        _job(
            session,
            99,
            weeks[1] + dt.timedelta(hours=2),
            evaluated=False,
            status=JobStatus.NOT_EVALUATED,
            reason_code="no_axial_t2",
            model_name=MODEL,
            model_version=VERSION,
        )
    ids = sorted(truth)
    with sessions.begin() as session:
        for job_id in ids:
            job = session.get_one(Job, job_id)
            predicted = job.label == "cirrhosis"
            if job_id == ids[0]:  # first a wrong verdict, then the one in force
                record_feedback(
                    session, job_id, agree=False, user="dr-a", source=FeedbackSource.API
                )
            if job_id == ids[10]:
                continue  # from the report CSV below
            record_feedback(
                session,
                job_id,
                agree=predicted == truth[job_id],
                user="dr-b",
                source=FeedbackSource.WEB,
            )
        label = "1" if truth[ids[10]] else "0"
        import_labels(session, f"accession,finding\nMON-10,{label}\n")
    return truth, [w.strftime("%G-W%V") for w in weeks]
