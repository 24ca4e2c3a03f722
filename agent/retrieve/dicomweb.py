"""DICOMweb retrieval through dicomweb-client: QIDO-RS to find studies and series, WADO-RS to
fetch a series' instances (PS3.18 10.4 and 10.6), each handed to the ingest path."""

from __future__ import annotations

import logging
from io import BytesIO
from typing import Any

import requests
from pydicom import dcmwrite
from pydicom.dataset import Dataset

from agent.errors import RetrieveError
from agent.retrieve.base import InstanceSink, Retrieved, StudyMatch, StudyQuery
from agent.settings import Source
from pipeline.selection.prefilter import SeriesSummary

logger = logging.getLogger(__name__)


class DicomwebRetriever:
    """QIDO-RS + WADO-RS against one DICOMweb service (``base_url``)."""

    def __init__(self, source: Source) -> None:
        from dicomweb_client.api import DICOMwebClient

        assert source.base_url
        self.source = source
        self.name = source.name
        session = requests.Session()
        if source.token is not None:
            session.headers["Authorization"] = f"Bearer {source.token.get_secret_value()}"
        elif source.username:
            password = source.password.get_secret_value() if source.password else ""
            session.auth = (source.username, password)
        timeout = source.timeout_seconds
        self.client = DICOMwebClient(
            url=source.base_url, session=session, timeout=(timeout, timeout)
        )

    def _call(self, what: str, code: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except requests.ConnectionError as err:
            raise RetrieveError(
                "source_unreachable", f"source {self.name}: cannot connect ({err})"
            ) from err
        except (requests.RequestException, ValueError) as err:
            raise RetrieveError(code, f"source {self.name}: {what} failed: {err}") from err

    def find_studies(self, query: StudyQuery) -> list[StudyMatch]:
        filters: dict[str, Any] = {}
        if query.study_instance_uid:
            filters["StudyInstanceUID"] = query.study_instance_uid
        if query.accession_number:
            filters["AccessionNumber"] = query.accession_number
        if query.date_from or query.date_to:
            filters["StudyDate"] = f"{query.date_from or ''}-{query.date_to or ''}"
        if query.description:
            filters["StudyDescription"] = query.description
        if query.modality:
            filters["ModalitiesInStudy"] = query.modality
        answers = self._call(
            "QIDO-RS study search",
            "query_failed",
            self.client.search_for_studies,
            search_filters=filters,
            fields=["StudyDescription", "AccessionNumber", "StudyDate"],
        )
        matches = []
        for item in answers:
            ds = Dataset.from_json(item)
            uid = str(ds.get("StudyInstanceUID") or "")
            if uid:
                matches.append(
                    StudyMatch(
                        study_instance_uid=uid,
                        accession_number=_text(ds, "AccessionNumber"),
                        study_date=_text(ds, "StudyDate"),
                        study_description=_text(ds, "StudyDescription"),
                    )
                )
        return matches

    def find_series(self, study_instance_uid: str) -> list[SeriesSummary]:
        answers = self._call(
            "QIDO-RS series search",
            "query_failed",
            self.client.search_for_series,
            study_instance_uid=study_instance_uid,
            fields=["SeriesDescription", "NumberOfSeriesRelatedInstances", "SeriesNumber"],
        )
        out = []
        for item in answers:
            ds = Dataset.from_json(item)
            uid = str(ds.get("SeriesInstanceUID") or "")
            if uid:
                out.append(
                    SeriesSummary(
                        series_instance_uid=uid,
                        modality=_text(ds, "Modality"),
                        description=_text(ds, "SeriesDescription"),
                        series_number=_int(ds, "SeriesNumber"),
                        instances=_int(ds, "NumberOfSeriesRelatedInstances"),
                    )
                )
        return out

    def retrieve(
        self, study_instance_uid: str, series_instance_uids: list[str], sink: InstanceSink
    ) -> Retrieved:
        completed = 0
        for series_uid in series_instance_uids:
            instances = self._call(
                "WADO-RS series retrieval",
                "retrieve_failed",
                self.client.iter_series,
                study_instance_uid=study_instance_uid,
                series_instance_uid=series_uid,
                # as stored: no transcoding by the source
                media_types=(("application/dicom", "*"),),
            )
            try:
                for ds in instances:
                    sink(_part10(ds))
                    completed += 1
            except requests.RequestException as err:
                raise RetrieveError(
                    "retrieve_failed",
                    f"source {self.name}: WADO-RS of series {series_uid} broke off: {err}",
                ) from err
        return Retrieved(completed, 0)


def _part10(ds: Dataset) -> bytes:
    buffer = BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    return None if value in (None, "") else str(value)


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None
