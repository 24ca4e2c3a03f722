"""T2-first processing: start a study's job as soon as its axial T2 series is complete.

A liver MR study has 10-15 series and the agent needs one: the axial T2 that selection would
choose. While the study is still arriving, every completion check looks at the series recorded
so far; when the series that :func:`pipeline.selection.select_t2_series` chooses among them is
complete - nothing of it arrived for ``completion.series_quiet_seconds``, its slices form a
regular stack, and it has every image ``ImagesInAcquisition`` announces where the header gives
it - version 1 of the study's job is queued on a snapshot of the instances recorded so far
(``job.details["t2_first"]``) and the study keeps receiving.

When the study completes (the usual rule), :meth:`T2First.stands` decides whether that result
stands: the whole study chooses the same series with the same number of images. Then the study
is marked complete and nothing runs again; otherwise a new job version is queued, linked to
the first, as for any study that changed.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from agent.settings import CompletionSettings
from pipeline.selection import SelectionRules, load_rules, select_t2_series, series_features
from pipeline.study_headers import (
    SeriesHeaders,
    StudyHeaders,
    header_value,
    read_series_headers,
)
from storage import queries
from storage.models import Job, JobStatus, Study
from storage.spool import Spool

logger = logging.getLogger(__name__)

SNAPSHOT_KEY = "t2_first"


def snapshot_limit(details: dict[str, Any] | None) -> int | None:
    """The newest instance row a T2-first job runs on (None: the whole study)."""
    snapshot = (details or {}).get(SNAPSHOT_KEY)
    if not isinstance(snapshot, dict):
        return None
    top = snapshot.get("max_instance_id")
    return int(top) if isinstance(top, int) else None


@dataclass(frozen=True)
class _Choice:
    """What selection chose among the series recorded so far, and whether it is complete."""

    series_instance_uid: str | None
    ready: bool
    why: str
    n_images: int = 0
    n_positions: int = 0


class T2First:
    """Series-level completion for the studies that are still arriving (module docstring).

    Thread-safe: the scheduler may run a completion check while another is running. Headers
    are read once per series and number of images (a cache per study, dropped when the study
    stops receiving).
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        spool: Spool,
        settings: CompletionSettings,
        selection_rules: Path | None = None,
    ) -> None:
        self.sessions = sessions
        self.spool = spool
        self.settings = settings
        self.rules: SelectionRules = load_rules(selection_rules)
        self._lock = threading.Lock()
        self._headers: dict[str, tuple[int, SeriesHeaders]] = {}  # series UID -> (n, headers)
        self._seen: dict[int, tuple[Any, ...]] = {}  # study id -> arrivals last judged

    @property
    def enabled(self) -> bool:
        return self.settings.t2_first

    # --- while the study arrives ---------------------------------------------------------

    def start_ready_series(
        self, now: dt.datetime, *, watching_since: dt.datetime | None = None
    ) -> list[int]:
        """Queue a T2-first job for every receiving study whose chosen series is complete;
        return the new job ids. After a restart (``watching_since``) a series is judged only
        once the agent has watched it for the series quiet time: a sender may resend."""
        if not self.enabled:
            return []
        quiet = dt.timedelta(seconds=self.settings.series_quiet_seconds)
        if watching_since is not None and now - watching_since < quiet:
            return []
        created: list[int] = []
        with self._lock:
            with self.sessions() as session:
                candidates = queries.receiving_studies_without_job(session)
            self._forget_except(set(candidates))
            for study_id in candidates:
                job_id = self._judge(study_id, now, quiet)
                if job_id is not None:
                    created.append(job_id)
        return created

    def _judge(self, study_id: int, now: dt.datetime, quiet: dt.timedelta) -> int | None:
        with self.sessions() as session:
            arrivals = queries.series_arrivals(session, study_id)
            study_uid = session.get_one(Study, study_id).study_instance_uid
            quiet_ids = {a.series_id for a in arrivals if a.last_received_at <= now - quiet}
            # judged again only when a series became quiet (or grew after it was): a series
            # that is still arriving is judged once it stops
            signature = tuple(
                (a.series_instance_uid, a.instance_count if a.series_id in quiet_ids else None)
                for a in arrivals
            )
            if not quiet_ids or self._seen.get(study_id) == signature:
                return None
            self._seen[study_id] = signature
            study = self._study_headers(session, study_uid, arrivals)
        choice = self._choose(
            study, quiet_ids={a.series_instance_uid for a in arrivals if a.series_id in quiet_ids}
        )
        if not choice.ready or choice.series_instance_uid is None:
            logger.debug("study %s: T2-first waits: %s", study_uid, choice.why)
            return None
        snapshot = {
            "series_instance_uid": choice.series_instance_uid,
            "instance_count": choice.n_images,
            "instance_count_study": sum(a.instance_count for a in arrivals),
            "series_in_snapshot": len(arrivals),
            "max_instance_id": max(a.max_instance_id for a in arrivals),
            "rule": choice.why,
        }
        message = (
            f"axial T2 series complete while the study is still arriving ({choice.why}): "
            f"started on the {snapshot['instance_count_study']} instances of "
            f"{len(arrivals)} series received so far (T2-first)"
        )
        with self.sessions.begin() as session:
            job = queries.queue_t2_first_job(session, study_id, snapshot=snapshot, message=message)
            job_id = None if job is None else job.id
        if job_id is not None:
            logger.info(
                "study %s: T2-first job %s queued on series %s (%s)",
                study_uid,
                job_id,
                choice.series_instance_uid,
                choice.why,
            )
        return job_id

    def _choose(self, study: StudyHeaders, *, quiet_ids: set[str]) -> _Choice:
        """Selection over the series so far; ready when the chosen one is complete."""
        selection = select_t2_series(study, self.rules)
        uid = selection.series_instance_uid
        if uid is None:
            return _Choice(None, False, "no eligible axial T2 series yet")
        if uid not in quiet_ids:
            return _Choice(uid, False, "the chosen series is still arriving")
        series = study.series_by_uid(uid)
        features = series_features(series, self.rules.thresholds)
        if not features.regular_stack:
            return _Choice(uid, False, f"not a regular stack yet: {features.stack_note}")
        expected = _images_in_acquisition(series)
        if expected is not None and features.n_images < expected:
            return _Choice(
                uid,
                False,
                f"{features.n_images} of {expected} images (ImagesInAcquisition)",
            )
        why = (
            f"quiet for {self.settings.series_quiet_seconds:g} s, regular stack of "
            f"{features.n_positions} slices"
            + (f", all {expected} images of the acquisition" if expected is not None else "")
        )
        return _Choice(uid, True, why, features.n_images, features.n_positions)

    # --- when the study completes ----------------------------------------------------------

    def stands(self, study_id: int) -> str | None:
        """Whether the study's T2-first job still holds for the whole study: the same series
        is chosen, with the same number of images. Returns the sentence that says so, or
        None when a new job version is needed (or the study has no T2-first job)."""
        if not self.enabled:
            return None
        with self._lock:
            with self.sessions() as session:
                latest = queries.latest_job_id(session, study_id)
                if latest is None:
                    return None
                job = session.get_one(Job, latest)
                snapshot = (job.details or {}).get(SNAPSHOT_KEY)
                if not isinstance(snapshot, dict) or job.status in (
                    JobStatus.FAILED,
                    JobStatus.CANCELLED,
                ):
                    return None
                if job.version != 1:  # the latest job is v1: it is the only one
                    return None
                arrivals = queries.series_arrivals(session, study_id)
                study = self._study_headers(session, job.study.study_instance_uid, arrivals)
            selection = select_t2_series(study, self.rules)
            self._forget(study_id)
        chosen = selection.series_instance_uid
        if chosen is None or chosen != snapshot.get("series_instance_uid"):
            return None
        n_images = len(study.series_by_uid(chosen).headers)
        if n_images != snapshot.get("instance_count"):
            return None
        return (
            f"the study is complete with {len(arrivals)} series; the T2-first result stands "
            f"(same axial T2 series, same {n_images} images): nothing runs again"
        )

    # --- headers ----------------------------------------------------------------------------

    def _study_headers(
        self, session: Session, study_uid: str, arrivals: list[queries.SeriesArrival]
    ) -> StudyHeaders:
        series: list[SeriesHeaders] = []
        for arrival in arrivals:
            uid = arrival.series_instance_uid
            cached = self._headers.get(uid)
            if cached is None or cached[0] != arrival.instance_count:
                paths = [
                    self.spool.path_of(p)
                    for p in queries.series_instance_paths(session, arrival.series_id)
                ]
                earlier = None if cached is None else cached[1]
                read = read_series_headers(uid, paths, earlier)  # new files only
                if read is None:
                    continue
                cached = (arrival.instance_count, read)
                self._headers[uid] = cached
            series.append(cached[1])
        return StudyHeaders(study_uid, tuple(series), ())

    def _forget(self, study_id: int) -> None:
        self._seen.pop(study_id, None)

    def _forget_except(self, study_ids: set[int]) -> None:
        for gone in set(self._seen) - study_ids:
            del self._seen[gone]
        if len(self._headers) > 1000:  # a bounded cache: re-read what is needed next time
            self._headers.clear()


def _images_in_acquisition(series: SeriesHeaders) -> int | None:
    value = header_value(series.headers[0], "ImagesInAcquisition")
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
