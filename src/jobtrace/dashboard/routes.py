"""The dashboard's pages: jobs, one job, experiments, an experiment's runs, a comparison,
traces, one trace, services, and signing in.

Every page reads through the :class:`~jobtrace.store.Store` read API (the same queries as
the REST routes) and puts what its script needs in an escaped JSON element; charts fetch
more detail from ``/api/v1/metric-buckets`` on zoom. Filters, sort, paging, selection and
chart state live in the query string, so a page's address is a link to what it shows.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from jobtrace.dashboard import assets, wants_html
from jobtrace.dashboard.pages import (
    LoginNeeded,
    error_page,
    int_param,
    on_login_needed,
    page_auth,
    render,
)
from jobtrace.errors import JobtraceError, NotFoundError, QueryError
from jobtrace.model import JOB_STATUSES
from jobtrace.report.profile_html import PROFILE_BODY, SUMMARY_BODY, page_data
from jobtrace.report.traces import trace_json
from jobtrace.server.auth import SESSION_COOKIE
from jobtrace.store.core import Store
from jobtrace.store.search import FieldTerm, Query, unparse

__all__ = ["install_pages"]

#: Jobs per page of the jobs list unless the address says otherwise.
JOBS_PAGE = 50
#: Most runs a comparison overlays.
MAX_COMPARED = 10
#: Items of a batch shown on its job page (failures first).
ITEMS_SHOWN = 50
#: Metric charts drawn on a job or comparison page.
MAX_CHARTS = 24

pages = APIRouter(include_in_schema=False, dependencies=[Depends(page_auth)])
public = APIRouter(include_in_schema=False)


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _base(request: Request, section: str) -> dict[str, Any]:
    return {"section": section}


def _text(request: Request, name: str, limit: int = 2000) -> str | None:
    raw = request.query_params.get(name)
    if raw is None or not raw.strip():
        return None
    if len(raw) > limit:
        raise QueryError(f"{name} is longer than {limit} characters")
    return raw.strip()


def _tag_term(tag: str) -> str:
    """``key:value`` (or ``key=value``) as a search term on the tag ``key``."""
    key, sep, value = tag.replace("=", ":", 1).partition(":")
    if not sep or not key.strip():
        raise QueryError(f"tag filter must be KEY:VALUE, got {tag[:100]!r}")
    term = FieldTerm(f"tag.{key.strip()}", (value.strip(),))
    return unparse(Query((term,)))


# -- jobs ------------------------------------------------------------------------------------


async def root(request: Request) -> Response:
    """``/``: the API's index for programs, the jobs page for browsers."""
    if not wants_html(request):
        return JSONResponse(request.app.state.index)
    await page_auth(request)
    return await run_in_threadpool(jobs_page, request)


def jobs_page(request: Request) -> Response:
    """Jobs, newest first: the search box, status/experiment/tag filters, chosen metric
    columns, sortable columns and paging, all in the address."""
    store = _store(request)
    query = request.query_params
    try:
        search = _text(request, "q")
        tag = _text(request, "tag", 500)
        status = _text(request, "status", 20)
        experiment = _text(request, "experiment", 256)
        terms = [t for t in (search, _tag_term(tag) if tag else None) if t]
        columns = [m for m in query.getlist("metric") if m][:20]
        sort = _text(request, "sort", 300)
        descending = None if "desc" not in query else query.get("desc") == "1"
        index = int_param(query, "index", 0, 0, 10**12)
        length = int_param(query, "pageLength", JOBS_PAGE, 1, 1000)
        found, names = store.jobs_with_metrics(
            columns,
            experiment=experiment,
            status=status,
            search=", ".join(terms) or None,
            sort_by=sort,
            descending=descending,
            index=index,
            limit=length,
        )
    except (QueryError, NotFoundError) as exc:
        return error_page(request, exc)
    rows = []
    for job, points in found.data:
        latest = {p.name: p.value for p in points}
        rows.append({"job": job, "metrics": [latest.get(m) for m in columns]})
    return render(
        request,
        "jobs.html",
        **_base(request, "jobs"),
        rows=rows,
        page=found,
        columns=columns,
        names=sorted(set(names) | set(columns)),
        statuses=JOB_STATUSES,
        filters={
            "q": search or "",
            "status": status or "",
            "experiment": experiment or "",
            "tag": tag or "",
        },
        sort=sort,
        descending=descending,
        length=length,
    )


@pages.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str) -> Response:
    """One job: summary cards, error, params and tags, metric charts, batch items, traces,
    the profile's timeline and flamegraphs, and its report to download."""
    store = _store(request)
    try:
        job = store.job_by_id(job_id)
        latest = store.latest_metrics(job_id)
        profile = store.job_profile(job_id)
        traces = store.find_traces(job_id=job_id, limit=20)
    except (QueryError, NotFoundError) as exc:
        return error_page(request, exc)
    summary = store.batch_summary(job_id) if store.count_items(job_id) else None
    items: list[dict[str, Any]] = []
    durations: list[float] = []
    if summary is not None:
        failed = store.list_items(job_id, status="error", limit=ITEMS_SHOWN)
        rest = store.list_items(job_id, limit=ITEMS_SHOWN)
        seen = {item["id"] for item in failed}
        items = failed + [i for i in rest if i["id"] not in seen][: ITEMS_SHOWN - len(failed)]
        durations = [i["duration"] for i in store.list_items(job_id, limit=5000)]
    report = page_data(job, profile)
    return render(
        request,
        "job.html",
        **_base(request, "jobs"),
        job=job,
        metrics=latest,
        summary_body=SUMMARY_BODY,
        profile_body=PROFILE_BODY,
        has_profile=not profile.empty,
        report=report,
        chart={
            "jobs": [_chart_job(job)],
            "metrics": [p.name for p in latest][:MAX_CHARTS],
            "live": job.get("status") == "running",
            "durations": durations,
        },
        traces=traces.data,
        summary=summary,
        items=items,
    )


@pages.get("/jobs/{job_id}/report.html")
def job_report(request: Request, job_id: str) -> Response:
    """The job's self-contained report (the same page ``jobtrace run`` writes), to keep."""
    from jobtrace.report.profile_html import render_profile_html

    store = _store(request)
    try:
        job = store.job_by_id(job_id)
        profile = store.job_profile(job_id)
    except (QueryError, NotFoundError) as exc:
        return error_page(request, exc)
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in job_id)[:80]
    return HTMLResponse(
        render_profile_html(job, profile),
        headers={"Content-Disposition": f'attachment; filename="jobtrace-{safe}.html"'},
    )


# -- experiments -----------------------------------------------------------------------------


@pages.get("/experiments", response_class=HTMLResponse)
def experiments_page(request: Request) -> Response:
    """Experiments, newest first, with search and paging."""
    store = _store(request)
    query = request.query_params
    try:
        search = _text(request, "q")
        index = int_param(query, "index", 0, 0, 10**12)
        found = store.find_experiments(search=search, index=index, limit=JOBS_PAGE)
    except (QueryError, NotFoundError) as exc:
        return error_page(request, exc)
    return render(
        request,
        "experiments.html",
        **_base(request, "experiments"),
        page=found,
        q=search or "",
    )


@pages.get("/experiments/{name}", response_class=HTMLResponse)
def experiment_page(request: Request, name: str) -> Response:
    """An experiment's runs: params and latest (min to max) metrics, sortable, searchable;
    ticked runs open in a comparison."""
    store = _store(request)
    query = request.query_params
    try:
        experiment = store.get_experiment(name)
        search = _text(request, "q")
        sort = _text(request, "sort", 300)
        descending = None if "desc" not in query else query.get("desc") == "1"
        index = int_param(query, "index", 0, 0, 10**12)
        found = store.experiment_metrics(
            name, search=search, sort_by=sort, descending=descending, index=index, limit=100
        )
        extremes = store.metric_extremes([row.job["id"] for row in found.data])
    except (QueryError, NotFoundError) as exc:
        return error_page(request, exc)
    params = sorted({k for row in found.data for k in (row.job.get("params") or {})})
    names = sorted({p.name for row in found.data for p in row.metrics})
    runs = []
    for row in found.data:
        latest = {p.name: p.value for p in row.metrics}
        ranges = extremes.get(row.job["id"], {})
        runs.append(
            {
                "job": row.job,
                "params": [(row.job.get("params") or {}).get(p) for p in params],
                "metrics": [(latest.get(n), ranges.get(n)) for n in names],
            }
        )
    return render(
        request,
        "experiment.html",
        **_base(request, "experiments"),
        experiment=experiment,
        page=found,
        params=params,
        names=names,
        runs=runs,
        q=search or "",
        sort=sort,
        descending=descending,
    )


@pages.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request) -> Response:
    """Runs side by side: overlaid curves (one chart per metric, the same buckets for every
    run), params and latest metrics with an "only differences" switch."""
    store = _store(request)
    ids = list(dict.fromkeys(j for j in request.query_params.getlist("job") if j))
    try:
        if not ids:
            raise QueryError("pick runs to compare: /compare?job=ID&job=ID (tick them on a list)")
        if len(ids) > MAX_COMPARED:
            raise QueryError(f"compare at most {MAX_COMPARED} runs at once, got {len(ids)}")
        jobs = [store.job_by_id(job_id) for job_id in ids]
        latest = {job_id: {p.name: p.value for p in store.latest_metrics(job_id)} for job_id in ids}
    except (QueryError, NotFoundError) as exc:
        return error_page(request, exc)
    param_keys = sorted({k for job in jobs for k in (job.get("params") or {})})
    metric_names = sorted({n for values in latest.values() for n in values})
    _missing = object()

    def row(label: str, values: list[Any]) -> dict[str, Any]:
        shown = [None if v is _missing else v for v in values]
        same = all(_same(v, values[0]) for v in values)
        return {"label": label, "cells": shown, "same": same}

    rows = [
        row(f"param {k}", [(job.get("params") or {}).get(k, _missing) for job in jobs])
        for k in param_keys
    ]
    rows += [
        row(f"tag {k}", [(job.get("tags") or {}).get(k, _missing) for job in jobs])
        for k in sorted({k for job in jobs for k in (job.get("tags") or {})})
    ]
    rows += [
        row(f"metric {n}", [latest[job["id"]].get(n, _missing) for job in jobs])
        for n in metric_names
    ]
    chosen = [m for m in request.query_params.getlist("metric") if m in metric_names]
    return render(
        request,
        "compare.html",
        **_base(request, "experiments"),
        jobs=jobs,
        rows=rows,
        only_diff=request.query_params.get("diff") == "1",
        chart={
            "jobs": [_chart_job(j) for j in jobs],
            "metrics": (chosen or metric_names)[:MAX_CHARTS],
            "live": False,
        },
    )


def _chart_job(job: dict[str, Any]) -> dict[str, Any]:
    return {"id": job["id"], "name": job.get("name") or job["id"], "start": job.get("start_time")}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b) and type(a) is type(b)


# -- traces ----------------------------------------------------------------------------------


@pages.get("/traces", response_class=HTMLResponse)
def traces_page(request: Request) -> Response:
    """Recent traces (of one job if ``job`` is given), newest first, paged."""
    store = _store(request)
    query = request.query_params
    try:
        job_id = _text(request, "job", 256)
        index = int_param(query, "index", 0, 0, 10**12)
        found = store.find_traces(job_id=job_id, index=index, limit=JOBS_PAGE)
    except (QueryError, NotFoundError) as exc:
        return error_page(request, exc)
    return render(request, "traces.html", **_base(request, "traces"), page=found, job=job_id or "")


@pages.get("/traces/{trace_id}", response_class=HTMLResponse)
def trace_page(request: Request, trace_id: str) -> Response:
    """One trace's waterfall (the trace report's own script): nested spans to scale,
    expand/collapse, details on click, find, and ``#span=ID`` links."""
    store = _store(request)
    try:
        found = store.get_trace(trace_id)
    except JobtraceError as exc:
        return error_page(request, QueryError(str(exc)))
    if found is None:
        return error_page(request, NotFoundError(f"no trace {trace_id[:64]!r} in this store"))
    from jobtrace.report.html import TRACE_BODY

    return render(
        request,
        "trace.html",
        **_base(request, "traces"),
        report=trace_json(found),
        trace_body=TRACE_BODY,
    )


# -- services --------------------------------------------------------------------------------


@pages.get("/services", response_class=HTMLResponse)
def services_page(request: Request) -> Response:
    """The merged instrument series as profiles: per metric and context, count, mean and p95."""
    from jobtrace.dashboard.services import service_tables
    from jobtrace.server.scrape import ScrapeSettings, scrape_families

    settings: ScrapeSettings = request.app.state.scrape
    only_series = replace(settings, store_metrics=False)
    store = _store(request)
    families = store._read(scrape_families, now=time.time(), settings=only_series)
    tables = service_tables(families)
    return render(request, "services.html", **_base(request, "services"), tables=tables)


# -- signing in ------------------------------------------------------------------------------


def _local_target(raw: str | None) -> str:
    """Only a path on this server (never ``//host`` or ``https://…``): no open redirect."""
    if not raw or not raw.startswith("/") or raw.startswith("//") or "\\" in raw:
        return "/"
    parts = urlsplit(raw)
    return "/" if parts.scheme or parts.netloc else raw


@public.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    """The sign-in form: paste an API token (``jobtrace token create NAME``)."""
    target = _local_target(request.query_params.get("next"))
    return render(request, "login.html", **_base(request, "login"), target=target, message=None)


@public.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    """Check the token and keep it in an HttpOnly, SameSite=Strict cookie."""
    body = (await request.body())[:8192].decode("utf-8", "replace")
    form = parse_qs(body)
    token = (form.get("token") or [""])[0].strip()
    target = _local_target((form.get("next") or ["/"])[0])
    verifier = request.app.state.auth.tokens
    if verifier.stale:
        await run_in_threadpool(verifier.refresh)
    if verifier.enabled and (not token or verifier.identify(token) is None):
        message = "That token is not valid (unknown or revoked)." if token else "Paste a token."
        return render(
            request, "login.html", 401, **_base(request, "login"), target=target, message=message
        )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
        max_age=30 * 86400,
    )
    return response


@public.post("/logout")
def logout() -> Response:
    """Forget the sign-in cookie."""
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def install_pages(app: FastAPI, index: dict[str, Any]) -> None:
    """Mount the pages, the sign-in routes and the assets on ``app``."""
    app.state.index = index
    app.add_api_route("/", root, methods=["GET"], include_in_schema=False)
    app.include_router(public)
    app.include_router(assets.router)
    app.include_router(pages)
    app.add_exception_handler(LoginNeeded, on_login_needed)
