"""STOW-RS ingress (PS3.18 10.5): ``POST /dicomweb/studies[/{study}]``, multipart/related;
type="application/dicom". Each part goes through the one ingest path (durable before success).

Failure reasons (PS3.18 Table I.2-2): the ingest status (0xC000 cannot understand, 0xA900 does
not match, 0xA700 out of resources); 0xC000 for a part that is not application/dicom or cannot
be parsed; 0xA900 for an instance of another study than the one in the URL. HTTP status: 200
when every instance was stored, 202 when some failed, 409 when all failed. The agent offers no
WADO-RS, so the Retrieve URL attributes (Type 2) are present and empty.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from io import BytesIO

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from agent.access import Role
from agent.context import AgentContext
from agent.dicom_status import StoreStatus
from agent.errors import IngestError
from agent.http.deps import CtxDep, require_role
from agent.http.multipart import MultipartError, MultipartParser, Part, parse_content_type
from agent.settings import AgentRole
from storage.models import AssociationStatus, IngestProtocol
from storage.spool import InvalidUIDError, validate_uid

logger = logging.getLogger(__name__)

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
STOW_CALLING_AE = "STOW"
_ACCEPTABLE = {DICOM_JSON, "application/json", "application/*", "*/*"}

# sending studies in needs the role admin (the PACS's token; viewers and readers may not)
router = APIRouter(
    prefix="/dicomweb", tags=["dicomweb"], dependencies=[Depends(require_role(Role.ADMIN))]
)


@dataclass
class StowOutcome:
    """What happened to the parts of one request."""

    stored: list[tuple[str, str]] = field(default_factory=list)  # (class UID, instance UID)
    failed: list[tuple[str, str, int]] = field(default_factory=list)  # (..., failure reason)

    def http_status(self) -> int:
        if not self.failed:
            return 200
        return 202 if self.stored else 409

    def dataset(self) -> Dataset:
        """The Store Instances Response Module (PS3.18 Annex I)."""
        ds = Dataset()
        ds.RetrieveURL = None
        if self.failed:
            items = []
            for class_uid, instance_uid, reason in self.failed:
                item = Dataset()
                item.ReferencedSOPClassUID = class_uid or None
                item.ReferencedSOPInstanceUID = instance_uid or None
                item.FailureReason = reason
                items.append(item)
            ds.FailedSOPSequence = items
        if self.stored:
            items = []
            for class_uid, instance_uid in self.stored:
                item = Dataset()
                item.ReferencedSOPClassUID = class_uid
                item.ReferencedSOPInstanceUID = instance_uid
                item.RetrieveURL = None
                items.append(item)
            ds.ReferencedSOPSequence = items
        return ds


def as_part10(content: bytes) -> bytes:
    """Add the 128-byte preamble and ``DICM`` prefix when a part starts with the File Meta
    Information itself (pydicom, and so dicomweb-client, writes in-memory data sets so)."""
    if content[128:132] != b"DICM" and content[:2] == b"\x02\x00":
        return bytes(128) + b"DICM" + content
    return content


def _peek(content: bytes) -> tuple[str, str, str] | None:
    """SOP Class, SOP Instance and Study Instance UIDs of a Part 10 data set, if readable."""
    try:
        ds = dcmread(
            BytesIO(content),
            stop_before_pixels=True,
            specific_tags=["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"],
        )
        return (
            str(ds.get("SOPClassUID", "") or ""),
            str(ds.get("SOPInstanceUID", "") or ""),
            str(ds.get("StudyInstanceUID", "") or ""),
        )
    except (InvalidDicomError, AttributeError, ValueError, KeyError, EOFError, OSError):
        return None


def store_part(
    ctx: AgentContext,
    part: Part,
    outcome: StowOutcome,
    *,
    association_id: int,
    study: str | None,
    default_type: str,
) -> None:
    """Store one part through the ingest path and record the outcome (runs in a thread)."""
    media_type = part.media_type or default_type
    if media_type != DICOM:
        ctx.metrics.instances_rejected.labels("stow", "media_type").inc()
        logger.warning("STOW request %s: refused a %s part", association_id, media_type)
        outcome.failed.append(("", "", StoreStatus.CANNOT_UNDERSTAND))
        return
    content = as_part10(part.content)
    uids = _peek(content)
    class_uid, instance_uid, study_uid = uids or ("", "", "")
    if study is not None and uids is not None and study_uid != study:
        ctx.metrics.instances_rejected.labels("stow", "study_mismatch").inc()
        logger.warning(
            "STOW request %s: instance %s belongs to study %s, not %s",
            association_id,
            instance_uid,
            study_uid,
            study,
        )
        outcome.failed.append(
            (class_uid, instance_uid, StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS)
        )
        return
    try:
        received = ctx.ingestor.store(
            content,
            association_id=association_id,
            source_ae=STOW_CALLING_AE,
            protocol=IngestProtocol.STOW,
        )
    except IngestError as err:
        outcome.failed.append((class_uid, instance_uid, err.status))
        return
    outcome.stored.append((received.sop_class_uid, received.sop_instance_uid))


def _check_request(request: Request, study: str | None) -> tuple[str, str]:
    """Validate the request's headers; return (boundary, part media type)."""
    try:
        content_type = parse_content_type(request.headers.get("content-type"))
    except MultipartError as err:
        raise HTTPException(status_code=400, detail=str(err)) from err
    if content_type.media_type != "multipart/related":
        raise HTTPException(
            status_code=415,
            detail=f'send multipart/related; type="{DICOM}", not {content_type.media_type}',
        )
    if content_type.type not in (None, DICOM):
        raise HTTPException(
            status_code=415,
            detail=f"only {DICOM} parts are supported, not {content_type.type}",
        )
    accept = request.headers.get("accept")
    if accept:
        offered = {item.split(";", 1)[0].strip().lower() for item in accept.split(",")}
        if not offered & _ACCEPTABLE:
            raise HTTPException(status_code=406, detail=f"the response is {DICOM_JSON}")
    if study is not None:
        try:
            validate_uid("StudyInstanceUID", study)
        except InvalidUIDError as err:
            raise HTTPException(status_code=400, detail=str(err)) from err
    return content_type.boundary, content_type.type or DICOM


async def _store(request: Request, ctx: AgentContext, study: str | None) -> Response:
    if ctx.settings.cluster.role == AgentRole.WORKER:
        raise HTTPException(
            status_code=503,
            detail="this agent is a worker (cluster.role): send instances to a receiver",
        )
    boundary, default_type = _check_request(request, study)
    peer = request.client.host if request.client else "unknown"
    association_id = await run_in_threadpool(
        lambda: ctx.ingestor.begin(
            calling_ae=STOW_CALLING_AE,
            called_ae=ctx.settings.dicom.ae_title,
            peer_host=peer[:64],
            protocol=IngestProtocol.STOW,
        )
    )
    parser = MultipartParser(boundary)
    outcome = StowOutcome()
    status = AssociationStatus.ABORTED
    malformed: str | None = None
    try:
        async for chunk in request.stream():
            for part in parser.feed(chunk):
                await run_in_threadpool(
                    store_part,
                    ctx,
                    part,
                    outcome,
                    association_id=association_id,
                    study=study,
                    default_type=default_type,
                )
        parser.close()
        status = AssociationStatus.RELEASED
    except MultipartError as err:
        malformed = str(err)
        status = AssociationStatus.RELEASED
    except ClientDisconnect:
        logger.warning("STOW request %s: the client went away mid-request", association_id)
        return Response(status_code=400)
    finally:
        await run_in_threadpool(ctx.ingestor.end, association_id, status)
    if malformed is not None:
        if not outcome.stored and not outcome.failed:
            raise HTTPException(status_code=400, detail=f"malformed multipart body: {malformed}")
        logger.warning("STOW request %s: %s", association_id, malformed)
        outcome.failed.append(("", "", StoreStatus.CANNOT_UNDERSTAND))
    if not outcome.stored and not outcome.failed:
        raise HTTPException(status_code=400, detail="the request holds no instances")
    logger.info(
        "STOW request %s from %s: %s stored, %s failed",
        association_id,
        peer,
        len(outcome.stored),
        len(outcome.failed),
    )
    return Response(
        content=json.dumps(outcome.dataset().to_json_dict()),
        status_code=outcome.http_status(),
        media_type=DICOM_JSON,
    )


_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"description": "every instance stored", "content": {DICOM_JSON: {}}},
    202: {"description": "some instances stored, some failed", "content": {DICOM_JSON: {}}},
    400: {"description": "malformed request"},
    401: {"description": "no or wrong token"},
    409: {"description": "no instance stored", "content": {DICOM_JSON: {}}},
    415: {"description": "not multipart/related with application/dicom parts"},
}


@router.post("/studies", responses=_RESPONSES, summary="STOW-RS: store instances")
async def store_instances(request: Request, ctx: CtxDep) -> Response:
    """Store instances of any study (PS3.18 10.5)."""
    return await _store(request, ctx, None)


@router.post("/studies/{study}", responses=_RESPONSES, summary="STOW-RS: store into a study")
async def store_study_instances(study: str, request: Request, ctx: CtxDep) -> Response:
    """Store instances of one study; instances of another study fail with 0xA900."""
    return await _store(request, ctx, study)
