"""HTTP abuse against the running agent: every route with no, a wrong and a short token;
path traversal; injection in query parameters; huge numbers; malformed STOW-RS bodies. Never
a 5xx, never data without the token, never a file from outside."""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests

from tests.hostile.helpers import alive, db_count, files_under, outside_spool
from tests.hostile.ledger import Ledger
from tests.integration.truth_agent import TruthAgentProcess

pytestmark = [pytest.mark.hostile, pytest.mark.integration, pytest.mark.slow]

WEB_PAGES = [
    ("GET", "/"),
    ("GET", "/studies"),
    ("GET", "/models"),
    ("GET", "/jobs/1"),
    ("GET", "/fragments/jobs"),
    ("GET", "/fragments/jobs/1"),
    ("POST", "/jobs/1/retry"),
    ("POST", "/jobs/1/cancel"),
]
TOKENS: dict[str, dict[str, str]] = {
    "no token": {},
    "wrong token": {"Authorization": "Bearer wrong-token-0123456789"},
    "short token": {"Authorization": "Bearer abc"},
}


def _url(agent: TruthAgentProcess, path: str) -> str:
    return f"http://127.0.0.1:{agent.http_port}{path}"


def _request(agent: TruthAgentProcess, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, _url(agent, path), timeout=30, allow_redirects=False, **kwargs)


def _auth(agent: TruthAgentProcess) -> dict[str, str]:
    return {"Authorization": f"Bearer {agent.token}"}


def _api_routes(agent: TruthAgentProcess) -> list[tuple[str, str]]:
    """Every (method, path) of the API, from its OpenAPI document, ids filled with 1."""
    spec = requests.get(_url(agent, "/openapi.json"), headers=_auth(agent), timeout=30).json()
    routes = []
    for path, methods in spec["paths"].items():
        if path == "/healthz":
            continue
        filled = re.sub(r"\{[^}]+\}", "1", path)
        routes += [(method.upper(), filled) for method in methods]
    return [*routes, ("GET", "/openapi.json")]


def test_every_route_refuses_no_wrong_or_short_token(
    shared_agent: TruthAgentProcess, ledger: Ledger
) -> None:
    agent = shared_agent
    api = _api_routes(agent)
    assert len(api) >= 10, api
    for variant, headers in TOKENS.items():
        row = ledger.row(
            "http",
            f"{len(api) + len(WEB_PAGES)} routes, {variant}",
            note="API 401, pages 303 to /login (fragments 401)",
        )
        for method, path in api + WEB_PAGES:
            response = _request(agent, method, path, headers=headers)
            row.tried += 1
            page = (method, path) in WEB_PAGES
            if page:  # a page sends the browser to the login form; a fragment says 401
                ok = response.status_code == 401 or (
                    response.status_code == 303
                    and response.headers.get("location", "").startswith("/login")
                )
            else:
                ok = response.status_code == 401
            if ok:
                row.handled += 1
            else:
                row.note += f"; {method} {path}: {response.status_code}"
        row.crashed = not alive(agent)
        assert row.holds, row.problems() + row.note


TRAVERSALS = [
    "/static/../../../../etc/passwd",
    "/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static/....//....//etc/passwd",
    "/api/jobs/..%2f..%2fetc%2fpasswd",
    "/jobs/1%2f..%2f..%2fetc%2fpasswd",
    "/dicomweb/studies/..%2f..%2fetc",
]


def test_path_traversal_reaches_no_file(shared_agent: TruthAgentProcess, ledger: Ledger) -> None:
    agent = shared_agent
    row = ledger.row(
        "http",
        f"path traversal, {len(TRAVERSALS)} forms, with the token",
        note="4xx, never a file's content",
    )
    for path in TRAVERSALS:
        for method in ("GET", "POST"):
            response = _request(agent, method, path, headers=_auth(agent))
            row.tried += 1
            if 400 <= response.status_code < 500 and "root:" not in response.text:
                row.handled += 1
            else:
                row.note += f"; {method} {path}: {response.status_code}"
    row.crashed = not alive(agent)
    assert row.holds, row.problems() + row.note


INJECTIONS = [
    "' OR '1'='1",
    "1; DROP TABLE jobs; --",
    '"><script>alert(1)</script>',
    "%' UNION SELECT sop_instance_uid FROM instances --",
    "\x00",
    "a" * 5000,
]
FILTERS = ("study_instance_uid", "accession_number", "status", "created_from", "created_to")
QUERY_ROUTES = [
    ("/api/jobs", FILTERS),
    ("/api/studies", ("study_instance_uid", "accession_number")),  # no filters: ignored
    ("/", FILTERS),
    ("/studies", ("study_instance_uid", "accession_number")),
    ("/fragments/jobs", FILTERS),
]


def test_injection_in_query_parameters(shared_agent: TruthAgentProcess, ledger: Ledger) -> None:
    agent = shared_agent
    row = ledger.row(
        "http",
        "injection in query parameters (SQL, HTML, NUL)",
        note="200 with no match or 4xx; nothing echoed unescaped; tables intact",
    )
    jobs_before = db_count(agent, "select count(*) from jobs")
    studies = requests.get(_url(agent, "/api/studies"), headers=_auth(agent), timeout=30)
    all_studies = int(studies.json()["total"])
    for path, params in QUERY_ROUTES:
        for param in params:
            for value in INJECTIONS:
                response = _request(agent, "GET", path, headers=_auth(agent), params={param: value})
                row.tried += 1
                html = response.headers.get("content-type", "").startswith("text/html")
                echoed = html and "<script>alert(1)" in response.text  # JSON escapes by type
                ok = response.status_code < 500 and not echoed
                if response.status_code == 200 and path.startswith("/api/"):
                    # a filter matches nothing; an unknown parameter changes nothing
                    total = int(response.json().get("total", 0))
                    ok = ok and total == (all_studies if path == "/api/studies" else 0)
                if ok:
                    row.handled += 1
                else:
                    row.note += f"; {path}?{param}={value[:20]!r}: {response.status_code}"
    if db_count(agent, "select count(*) from jobs") < jobs_before:
        row.lost += 1
    row.crashed = not alive(agent)
    assert row.holds, row.problems() + row.note


HUGE = ["99999999999999999999", "1e20", "-1", "2147483648", "9" * 400]


def test_huge_numbers_are_404_or_422(shared_agent: TruthAgentProcess, ledger: Ledger) -> None:
    agent = shared_agent
    row = ledger.row("http", "huge numbers in ids, limits and offsets", note="404 / 422")
    for number in HUGE:
        for method, path, params in [
            ("GET", f"/api/jobs/{number}", None),
            ("GET", f"/jobs/{number}", None),
            ("GET", f"/fragments/jobs/{number}", None),
            ("GET", f"/api/jobs/{number}/preview.png", None),
            ("POST", f"/api/jobs/{number}/retry", None),
            ("GET", "/api/jobs", {"offset": number}),
            ("GET", "/api/jobs", {"limit": number}),
            ("GET", "/api/studies", {"offset": number}),
            ("GET", "/", {"offset": number}),
            ("GET", "/studies", {"offset": number}),
        ]:
            response = _request(agent, method, path, headers=_auth(agent), params=params)
            row.tried += 1
            if response.status_code in (404, 422):
                row.handled += 1
            else:
                row.note += f"; {method} {path} {params}: {response.status_code}"
    row.crashed = not alive(agent)
    assert row.holds, row.problems() + row.note


def _stow_bodies() -> list[tuple[str, dict[str, str], bytes]]:
    related = 'multipart/related; type="application/dicom"; boundary=B'
    part = b"--B\r\nContent-Type: application/dicom\r\n\r\n"
    return [
        ("no boundary", {"Content-Type": 'multipart/related; type="application/dicom"'}, b"x"),
        ("wrong media type", {"Content-Type": "application/json"}, b'{"a": 1}'),
        ("empty body", {"Content-Type": related}, b""),
        ("no closing boundary", {"Content-Type": related}, part + b"\x00" * 300),
        (
            "a part that is not DICOM",
            {"Content-Type": related},
            part + b"hello, not dicom" + b"\r\n--B--\r\n",
        ),
        (
            "a part cut short (DICM prefix only)",
            {"Content-Type": related},
            part + b"\x00" * 128 + b"DICM" + b"\r\n--B--\r\n",
        ),
        (
            "headers without a blank line",
            {"Content-Type": related},
            b"--B\r\nContent-Type: application/dicom" + b"\r\n--B--\r\n",
        ),
        (
            "boundary of 2000 characters",
            {"Content-Type": related.replace("B", "B" * 2000)},
            b"--" + b"B" * 2000 + b"--\r\n",
        ),
    ]


def test_malformed_stow_bodies_store_nothing(
    shared_agent: TruthAgentProcess, ledger: Ledger
) -> None:
    agent = shared_agent
    row = ledger.row("http", "malformed STOW-RS bodies, 8 kinds", note="4xx, nothing stored")
    before = files_under(agent.workdir)
    instances = db_count(agent, "select count(*) from instances")
    for label, headers, body in _stow_bodies():
        response = _request(
            agent, "POST", "/dicomweb/studies", headers={**_auth(agent), **headers}, data=body
        )
        row.tried += 1
        if 400 <= response.status_code < 500:
            row.handled += 1
        else:
            row.note += f"; {label}: {response.status_code}"
    if db_count(agent, "select count(*) from instances") != instances:
        row.lost += 1  # something was stored from garbage
    row.outside = outside_spool(agent, files_under(agent.workdir) - before)
    row.crashed = not alive(agent)
    assert row.holds, row.problems() + row.note
