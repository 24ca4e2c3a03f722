"""``POST /api/requests``: retrieve one study from a configured source and process it like a
pushed study (:mod:`agent.retrieve.on_demand`); the job appears as usual once it completes.

The caller needs the role ``admin`` (the shared token, or a named admin token): a retrieval
puts load on the PACS and a result in its study."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from agent.errors import IngestError, RetrieveError
from agent.http.api import ApiError, ErrorBody
from agent.http.deps import AdminDep, CtxDep, require_token

router = APIRouter(prefix="/api", tags=["requests"], dependencies=[Depends(require_token)])

#: RetrieveError codes that mean "the study is not there" (404); others: the source failed
_NOT_FOUND = {"accession_not_found", "study_not_found", "no_candidate_series"}
_BAD_REQUEST = {"unknown_source", "no_source", "accession_ambiguous"}


class StudyRequest(BaseModel):
    study: str = Field(
        min_length=1, max_length=80, description="accession number or Study Instance UID"
    )
    source: str | None = Field(default=None, max_length=64, description="source name")


class RequestAccepted(BaseModel):
    source: str
    study_instance_uid: str
    accession_number: str | None
    series: int = Field(description="candidate series held (retrieved now or before)")
    instances: int
    latest_job_id: int | None = Field(
        description="the study's newest job before this request (a new one follows when new "
        "instances arrived)"
    )


@router.post(
    "/requests",
    status_code=202,
    response_model=RequestAccepted,
    responses={404: {"model": ErrorBody}, 422: {"model": ErrorBody}, 502: {"model": ErrorBody}},
)
def post_request(body: StudyRequest, ctx: CtxDep, _principal: AdminDep) -> RequestAccepted:
    """Retrieve the study now (the answer waits for the retrieval); its job follows."""
    from agent.retrieve.on_demand import choose_source, request_study

    try:
        source = choose_source(ctx.settings, body.source)
        outcome = request_study(ctx, source, body.study, scp_running=True)
    except RetrieveError as err:
        status = 404 if err.code in _NOT_FOUND else 422 if err.code in _BAD_REQUEST else 502
        raise ApiError(status, err.code, err.message) from err
    except IngestError as err:
        raise ApiError(503, err.code, err.message) from err
    return RequestAccepted(
        source=outcome.source,
        study_instance_uid=outcome.study_instance_uid,
        accession_number=outcome.accession_number,
        series=outcome.series,
        instances=outcome.instances,
        latest_job_id=outcome.latest_job_id,
    )
