"""Health routes: liveness (no token), readiness and Prometheus metrics (token)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from agent.health import Readiness, readiness
from agent.http.deps import CtxDep, require_token

public = APIRouter(tags=["health"])
protected = APIRouter(tags=["health"], dependencies=[Depends(require_token)])


@public.get("/healthz", summary="Liveness")
def healthz() -> dict[str, str]:
    """The process answers (no token needed)."""
    return {"status": "ok"}


@protected.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "a check failed"}},
    summary="Readiness",
)
def readyz(ctx: CtxDep) -> JSONResponse:
    """Database reachable, spool above ``spool.min_free_mb``, models loaded; 503 otherwise."""
    result = readiness(ctx)
    return JSONResponse(result.model_dump(), status_code=200 if result.ready else 503)


@protected.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
    summary="Prometheus metrics",
)
def metrics(ctx: CtxDep) -> Response:
    """The process's metrics in the Prometheus text format."""
    return Response(content=ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)
