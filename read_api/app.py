"""The read API: dashboards, read models, audit replay and export over the read node's DuckDB.

Thin on purpose: every answer comes from the read models and the event history, never
from the write side, and no request writes to the database (a read-only connection
serves every endpoint: `tests/test_reads_never_write.py`). Two ways in:
- `read_router(get_db)`: an APIRouter to mount into another app (the `make run` process);
  `get_db()` returns anything with `.cursor()` (a DuckDB connection, or the read node);
- `create_read_app(db)`: a FastAPI app of its own (tests, benchmarks, a read-only node).
Both take the settings they need as arguments (`cache_seconds`, `timezone`, `policy`):
the composition root reads them from the environment, this module never does.

Each request reads through its own cursor of the one connection, so requests run in
parallel threads (DuckDB releases the GIL while a query runs).

(No `from __future__ import annotations`: FastAPI must see the real types.)
"""

import re
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal, Protocol
from uuid import UUID
from zoneinfo import ZoneInfo

import duckdb
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from pydantic import AwareDatetime, BaseModel, Field, create_model

from aggregates.access import (
    EXPORT, PERSONAL_DATA, READ_ALERTS, READ_AUDIT, READ_COMPLAINT, READ_EXECUTIVE, READ_MODELS,
    READ_PRODUCT, READ_SUPERVISOR, AccessDenied, Principal, masked,
)
from aggregates.categories import load_categories
from aggregates.complaint import Status
from aggregates.instants import InstantWindow
from aggregates.sla import SlaPolicy, load_sla_policy
from projections.queries import DEFAULT_TIMEZONE
from read_api import audit, export, figures
from read_api.figures import SLA_COLUMNS, TREND_COLUMNS, WORKLOAD_COLUMNS, Query as Sql
from read_api.cache import ResponseCache
from read_api.page import page_router
from read_api.queue import WINDOW_FILTERS, DatedBy, Queue, QueueSort, complaint_list
from read_api.schemas import (
    AlertDetail, AlertFilters, AlertList, AssignmentTimes, ComplaintClocks, Dimension, DimensionValues, ExecutiveDashboard, Filters,
    FIELD_NAME, Granularity, History, Order, Page, Problem,
    ProductDashboard, QueueAnswer, Rates, SearchResults, SlaRow, StateAt, SupervisorDashboard, TagTrends, Timeline,
    TrendRow, WorkloadRow,
)
from read_api.timeline import timeline


class CursorSource(Protocol):
    def cursor(self) -> duckdb.DuckDBPyConnection: ...


class AccessLog(Protocol):
    """Where views of personal data are recorded (the write side's log, given by the root)."""

    def record(self, principal: Principal, complaint_ids: Any, *, via: str, at: datetime) -> None: ...


class PersonalData(Protocol):
    """Opens the personal fields an event carries sealed (the write side's keyring, given by
    the root): the fields, or None once the customer is erased."""

    def open(self, sealed: str, complaint_id: UUID | str, version: int) -> dict[str, Any] | None: ...


# A complaint's hash chain as the event store holds it (given by the root): version ->
# {"link": hex or None, "intact": bool, "problem": str or None}.
ChainLinks = Callable[[UUID], dict[int, dict[str, Any]]]

# The composition root's dependency: the request's verified principal (401 without one).
Authenticate = Callable[..., Any]


NOT_FOUND = {404: {"model": Problem, "description": "no such complaint"}}
ALERT_NOT_FOUND = {404: {"model": Problem, "description": "no such alert"}}
NOT_READY = {503: {"model": Problem, "description": "the read node has no events table yet"}}

SlaSort = Literal[SLA_COLUMNS]  # type: ignore[valid-type]
WorkloadSort = Literal[WORKLOAD_COLUMNS]  # type: ignore[valid-type]
TrendSort = Literal[TREND_COLUMNS]  # type: ignore[valid-type]
Limit = Annotated[int, Query(ge=1, le=1000, description="rows per page")]
Offset = Annotated[int, Query(ge=0, le=10_000_000, description="rows to skip")]
Fmt = Annotated[export.Format, Query(alias="format", description="csv or parquet")]

# Export: every table the read API shows, by name: each gives a Query (streamed from
# DuckDB) or rows (a small dashboard section), for one request's view.
DATASETS: dict[str, Callable[..., Any]] = {
    "complaints": lambda r, **_: figures.complaints_rows(r),
    "events": lambda r, **_: figures.events_rows(r),
    "sla": lambda r, **_: figures.sla_rows(r),
    "workload": lambda r, **_: figures.workload_rows(r),
    "trends": lambda r, dimension, granularity, **_: figures.trend_rows(r, dimension, granularity),
    "supervisor.by_status": lambda r, **_: figures.by_status(r),
    "supervisor.daily": lambda r, **_: figures.daily_flow(r),
    "supervisor.agent_load": lambda r, **_: figures.agent_load(r),
    "supervisor.at_risk": lambda r, **_: figures.clocks_due(r, 10**9)["warning"],
    "supervisor.breached": lambda r, **_: figures.clocks_due(r, 10**9)["breached"],
    "product.by_product": lambda r, **_: figures.product(
        r.db, r.filters, now=r.now, policy=r.view.policy)["by_product"],
    "product.top_categories": lambda r, **_: figures.product(
        r.db, r.filters, now=r.now, policy=r.view.policy)["top_categories"],
    "product.week_over_week": lambda r, **_: figures.product(
        r.db, r.filters, now=r.now, policy=r.view.policy)["week_over_week"],
    "executive.satisfaction": lambda r, granularity, **_: figures.executive(
        r.db, r.filters, granularity=granularity, now=r.now, policy=r.view.policy)["satisfaction"],
    "executive.high_priority_monthly": lambda r, **_: figures.executive(
        r.db, r.filters, now=r.now, policy=r.view.policy)["high_priority_monthly"],
}
Dataset = Literal[tuple(DATASETS)]  # type: ignore[valid-type]


def _validation(field: str, message: str) -> HTTPException:
    """A 422 shaped like FastAPI's own, so clients read one error format."""
    return HTTPException(422, [{"loc": ["query", field], "msg": message, "type": "value_error"}])


def utc_now() -> datetime:
    return datetime.now(UTC)


def operation_id(route: APIRoute) -> str:
    """A short, stable operation id: the route's first tag and its name (`dashboards-supervisor`),
    as the command API's (commands.api.operation_id: this layer may not import it)."""
    tag = re.sub(r"\W+", "_", str(route.tags[0])) if route.tags else None
    return f"{tag}-{route.name}" if tag else route.name


DEFAULT_CACHE_SECONDS = 5.0
# as_of is rounded down to this many seconds: one computation per minute asked about.
DEFAULT_AS_OF_GRANULARITY = 60
MAX_ERRORS = 20


def query_names(route: APIRoute) -> frozenset[str]:
    """The query parameters `route` and its dependencies take, by alias (a parameter model's
    fields for a parameter model, such as the filters)."""
    names: set[str] = set()
    dependants = [route.dependant]
    while dependants:
        dependant = dependants.pop()
        for field in dependant.query_params:
            model = field.field_info.annotation
            if isinstance(model, type) and issubclass(model, BaseModel):
                names |= {info.alias or name for name, info in model.model_fields.items()}
            else:
                names.add(field.alias)
        dependants += dependant.dependencies
    return frozenset(names)


def refuse_unknown_parameters() -> Callable[[Request], Any]:
    """A GET route's guard: an unknown query parameter is a 422 naming it (a typo is told,
    not silently ignored, and `?_=<random>` cannot make every request a new computation).
    Each router has its own, remembering what each of its routes takes."""
    known_by_path: dict[str, frozenset[str]] = {}

    async def guard(request: Request) -> None:
        route = request.scope.get("route")
        if not isinstance(route, APIRoute):
            return
        known = known_by_path.get(route.path)
        if known is None:
            known = known_by_path[route.path] = query_names(route)
        unknown = [name for name in request.query_params.keys() if name not in known]
        if unknown:
            takes = ", ".join(sorted(known)) or "none"
            raise HTTPException(422, [{"loc": ["query", _safe(name, 100)], "type": "extra_forbidden",
                                       "msg": f"unknown query parameter: this endpoint takes {takes}",
                                       "ctx": {"takes": takes}}
                                      for name in unknown[:MAX_ERRORS]])

    return guard


def at_granularity(instant: datetime, seconds: int) -> datetime:
    """`instant` rounded down to a whole number of `seconds` since 1970 (0: as given)."""
    if seconds <= 0:
        return instant
    step = timedelta(seconds=seconds)
    try:
        return instant - (instant - datetime(1970, 1, 1, tzinfo=UTC)) % step
    except OverflowError:  # at the ends of time: as given (the filters' window refuses those)
        return instant


def _safe(value: Any, length: int = 300) -> Any:
    """A location part or message fit for a JSON answer: short, and UTF-8 encodable."""
    if isinstance(value, bool | int | float) or value is None:
        return value
    text = str(value)
    text = text if len(text) <= length else text[:length] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def validation_problems(errors: Sequence[Any]) -> dict[str, Any]:
    """A 422's body: at most MAX_ERRORS errors, never their input, every string encodable."""
    shown = []
    for error in errors[:MAX_ERRORS]:
        problem: dict[str, Any] = {"type": _safe(error.get("type", "value_error")),
                                   "loc": [_safe(part) for part in error.get("loc", ())],
                                   "msg": _safe(error.get("msg", ""))}
        ctx = {key: _safe(value) for key, value in (error.get("ctx") or {}).items()
               if isinstance(value, str | int | float | bool)}
        if ctx:
            problem["ctx"] = ctx
        shown.append(problem)
    answer: dict[str, Any] = {"detail": shown}
    if len(errors) > MAX_ERRORS:
        answer["truncated"] = {"shown": MAX_ERRORS, "total": len(errors)}
    return answer


def filters_model(timezone: str, instants: InstantWindow | None = None,
                  categories: Sequence[str] | None = None) -> type[Filters]:
    """The filters, with `timezone` as the default of their `tz` (`instants` the window
    their start, end and as_of must lie in; `categories` the values `category` takes,
    default the packaged ones)."""
    ZoneInfo(timezone)  # an unknown zone fails here, at start-up, not in every request
    bounded = Filters.bounded(instants) if instants is not None else Filters
    bounded = bounded.of_categories(categories or load_categories())
    if timezone == Filters.model_fields["tz"].default:
        return bounded
    described = Filters.model_fields["tz"].description
    return create_model(Filters.__name__, __base__=bounded, __module__=Filters.__module__,
                        tz=(str, Field(timezone, description=described)))


def read_router(get_db: Callable[[], CursorSource], authenticate: Authenticate, *,
                clock: Callable[[], datetime] = utc_now,
                cache_seconds: float = DEFAULT_CACHE_SECONDS, timezone: str = DEFAULT_TIMEZONE,
                policy: SlaPolicy | None = None, access_log: AccessLog | None = None,
                personal_data: PersonalData | None = None, chain_links: ChainLinks | None = None,
                instants: InstantWindow | None = None, categories: Sequence[str] | None = None,
                as_of_granularity: int = DEFAULT_AS_OF_GRANULARITY) -> APIRouter:
    """All read endpoints, reading through cursors of `get_db()`; `clock` says what "now" is.

    - `authenticate`: the dependency giving the request's principal; each endpoint asks
      for its permission (`aggregates.access`), team-bound principals see their team only,
      and personal data is masked unless the principal may see it and `access_log` records
      the view; then `personal_data` opens what events carry sealed (`[erased]` once the
      customer is erased);
    - `chain_links`: each history entry shows its link in the complaint's hash chain and
      whether it holds, checked against the event store;

    - `cache_seconds`: JSON answers are reused that long (0 turns it off) unless new
      events arrive: see `read_api.cache`;
    - `timezone`: the default time zone of days, weeks and "today" (the `tz` filter);
    - `policy`: the SLA policy the clocks are judged with (warning time, calendars); the
      one the read node's SLA projector uses (default: the packaged one);
    - `categories`: the values the `category` filter takes (default: the packaged ones,
      aggregates/categories.toml);
    - `as_of_granularity`: `as_of` is rounded down to this many seconds (the answer's
      `window.as_of` says to what; 0: not rounded), so an `as_of` view costs one
      computation per distinct instant at that granularity, kept until an event at or
      before it arrives.

    Every GET route refuses a query parameter it does not know (422 naming it).
    """
    router = APIRouter(responses={401: {"model": Problem, "description": "no valid bearer token"},
                                  403: {"model": Problem, "description": "not allowed for the role or team"}})
    cache = ResponseCache(cache_seconds)
    policy = policy or load_sla_policy(None)
    RequestFilters = filters_model(timezone, instants, categories)

    known_only = Depends(refuse_unknown_parameters())

    def get(path: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """A GET route that refuses unknown query parameters."""
        return router.get(path, dependencies=[known_only], **options)

    def allowed(permission: str) -> Any:
        async def check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
            try:
                principal.require(permission)
            except AccessDenied as error:
                raise HTTPException(403, str(error)) from None
            return principal

        return Annotated[Principal, Depends(check)]

    def scoped(filters: Filters, principal: Principal, db: duckdb.DuckDBPyConnection) -> Filters:
        """A team-bound principal's filters: its own team, whatever it asked for; and for
        everyone, `as_of` rounded down to the granularity."""
        if filters.as_of is not None:
            rounded = at_granularity(filters.as_of, as_of_granularity)
            # Rounding never hides an event: "as of now" sees the events of the last seconds.
            # Decided by the events alone (not by the clock), so read nodes holding the same
            # events give the same answer to the same request, whenever it arrives.
            if rounded < filters.as_of and (filters.start is None or filters.end is not None
                                            or rounded > filters.start) \
                    and not _any_event_between(db, rounded, filters.as_of):
                filters = filters.model_copy(update={"as_of": rounded})
        if not principal.team_bound:
            return filters
        if filters.team not in (None, principal.team):
            raise HTTPException(403, f"{principal.subject} sees team {principal.team}'s complaints only")
        if principal.team is None:
            raise HTTPException(403, f"{principal.subject} belongs to no team: its token has no team claim")
        return filters.model_copy(update={"team": principal.team})

    def shows_personal(principal: Principal, complaint_ids: Any, via: str) -> bool:
        """Whether the principal sees these complaints' personal data: only when it may, and
        once the view is on record."""
        if principal.may(PERSONAL_DATA) and access_log is not None:
            access_log.record(principal, complaint_ids, via=via, at=clock())
            return True
        return False

    def replayed_for(principal: Principal, complaint_id: UUID, replay: Callable[..., Any], db: Any,
                     **options: Any) -> tuple[Any, bool]:
        """`replay` of the complaint (None or empty: not there), with its personal fields
        opened when the principal may see them (the view then on record), and whether they were."""
        found = _replayed(replay, db, complaint_id, **options)
        if not found:
            return found, False
        require_team(db, principal, complaint_id)
        if not shows_personal(principal, [complaint_id], "audit"):
            return masked(found), False
        if personal_data is None:
            return found, True
        return _replayed(replay, db, complaint_id, opener=personal_data.open, **options), True

    def require_team(db: duckdb.DuckDBPyConnection, principal: Principal, complaint_id: UUID) -> None:
        if principal.team_bound:
            try:
                principal.require_team(audit.team_of(db, complaint_id))
            except AccessDenied as error:
                raise HTTPException(403, str(error)) from None

    def cached(request: Request, db: duckdb.DuckDBPyConnection, compute: Callable[[], Any],
               filters: Filters | AlertFilters | None = None, **params: Any) -> Any:
        """`compute`'s answer through the cache, keyed by the route and the validated
        parameters only: the filters as scoped and rounded, and the endpoint's own `params`
        (never the raw query string: `?a=1&b=2`, `?b=2&a=1` and `?a=0&a=1&b=2` are one key)."""
        route = getattr(request.scope.get("route"), "path", request.url.path)
        key = (route, filters.model_dump_json() if filters is not None else None, tuple(sorted(params.items())))
        return cache.get(key, db, compute, as_of=getattr(filters, "as_of", None))

    def with_alerts(answer: dict[str, Any], principal: Principal) -> dict[str, Any]:
        """A dashboard's answer, without its open alerts for a role that may not read alerts."""
        return answer if principal.may(READ_ALERTS) else answer | {"open_alerts": []}

    def open_cursor() -> duckdb.DuckDBPyConnection:
        try:
            cursor = get_db().cursor()
        except Exception as error:  # the read node is starting or gone
            raise HTTPException(503, f"the read database is not available: {error}") from error
        if not figures.has_table(cursor, "events"):
            cursor.close()
            raise HTTPException(503, "the read node has no events table yet: start the read node"
                                     " (complaints read-node) or wait for its first batch")
        return cursor

    def cursor() -> Iterator[duckdb.DuckDBPyConnection]:
        db = open_cursor()
        try:
            yield db
        finally:
            db.close()

    Db = Annotated[duckdb.DuckDBPyConnection, Depends(cursor)]
    Auditing = allowed(READ_AUDIT)
    Models = allowed(READ_MODELS)
    Filtered = Annotated[RequestFilters, Query()]
    ComplaintId = Annotated[UUID, Path(description="the complaint's id")]

    # ---------------------------------------------------------------- audit
    @get("/audit/complaints/{complaint_id}/history", response_model=History, tags=["audit"],
         responses=NOT_FOUND | NOT_READY,
         summary="Every event of a complaint in order, with who, when, and what it changed")
    def history(complaint_id: ComplaintId, db: Db, principal: Auditing) -> dict[str, Any]:
        entries, _ = replayed_for(principal, complaint_id, audit.history, db)
        if not entries:
            raise HTTPException(404, f"no complaint with id {complaint_id} in the read model")
        if chain_links is not None:
            links = chain_links(complaint_id)
            for entry in entries:
                entry["chain"] = links.get(entry["version"]) or {
                    "link": None, "intact": False, "problem": "the event store holds no such event"}
        return {"complaint_id": complaint_id, "events": entries}

    @get("/audit/complaints/{complaint_id}/state", response_model=StateAt, tags=["audit"],
         responses=NOT_FOUND | NOT_READY,
         summary="The complaint as it was at a version or an instant (default: now)")
    def state(complaint_id: ComplaintId, db: Db, principal: Auditing,
              version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
              at: Annotated[AwareDatetime | None, Query(description="an instant (with time zone)")] = None,
              ) -> dict[str, Any]:
        if version is not None and at is not None:
            raise _validation("at", "give version or at, not both")
        if at is not None and at not in RequestFilters.instants:
            raise _validation("at", f"{at.isoformat()} is outside the instants this system accepts"
                                    f" ({RequestFilters.instants.describe()})")
        found, _ = replayed_for(principal, complaint_id, audit.state_at, db, version=version, at=at)
        if found is None:
            if _replayed(audit.state_at, db, complaint_id) is None:
                raise HTTPException(404, f"no complaint with id {complaint_id} in the read model")
            raise HTTPException(404, f"complaint {complaint_id} did not exist yet at that version or instant")
        return {"complaint_id": complaint_id, "version": found["version"], "state": found}

    @get("/audit/complaints/{complaint_id}/timeline", response_model=Timeline, tags=["audit"],
         responses=NOT_FOUND | NOT_READY, summary="The complaint's life, one line per event")
    def complaint_timeline(complaint_id: ComplaintId, db: Db, principal: Auditing) -> dict[str, Any]:
        entries = _replayed(audit.history, db, complaint_id)
        if not entries:
            raise HTTPException(404, f"no complaint with id {complaint_id} in the read model")
        require_team(db, principal, complaint_id)
        return masked(timeline(complaint_id, entries))

    @get("/audit/complaints/{complaint_id}/sla", response_model=ComplaintClocks, tags=["audit"],
         responses=NOT_FOUND | NOT_READY,
         summary="The complaint's SLA clocks now, each with its life so far: "
                 "activated, paused, resumed, warned, breached, fulfilled, cancelled")
    def complaint_clocks(complaint_id: ComplaintId, db: Db, principal: Auditing) -> dict[str, Any]:
        at = clock()
        found = audit.clocks(db, complaint_id, at, policy=policy, tz=timezone)
        if not found:
            raise HTTPException(404, f"no complaint with id {complaint_id} in the read model")
        require_team(db, principal, complaint_id)
        return {"complaint_id": complaint_id, "now": at, "clocks": found}

    @get("/audit/search", response_model=SearchResults, tags=["audit"], responses=NOT_READY,
         summary="Complaints by customer, order, product and text (title or description)")
    def search(db: Db, principal: Auditing,
               customer: Annotated[str | None, Query(max_length=200)] = None,
               order: Annotated[str | None, Query(max_length=200)] = None,
               product: Annotated[str | None, Query(max_length=200)] = None,
               text: Annotated[str | None, Query(max_length=200)] = None,
               limit: Annotated[int, Query(ge=1, le=500)] = 50, offset: Offset = 0) -> dict[str, Any]:
        team = principal.team or "" if principal.team_bound else None
        items = audit.search(db, customer=customer, order=order, product=product, text=text,
                             team=team, limit=limit, offset=offset)
        return {"items": items, "limit": limit, "offset": offset}

    # ---------------------------------------------------------------- workspace
    @get("/queue", response_model=QueueAnswer, tags=["workspace"], responses=NOT_READY,
         summary="The complaints to work on: mine, my team's, unassigned, breached, at risk, or all the filters select")
    def complaint_queue(request: Request, db: Db, filters: Filtered, principal: allowed(READ_COMPLAINT),  # type: ignore[valid-type]
                        queue: Queue = "mine", status: Status | Literal["open"] | None = None,
                        dated_by: DatedBy = "registered", sort: QueueSort = "due", order: Order | None = None,
                        limit: Limit = 50, offset: Offset = 0) -> dict[str, Any]:
        if queue == "team" and filters.team is None and principal.team is not None:
            filters = filters.model_copy(update={"team": principal.team})
        filters = scoped(filters, principal, db)
        windowed = bool(WINDOW_FILTERS & filters.model_fields_set)
        caller = principal.subject

        def compute() -> dict[str, Any]:
            with figures.request(db, filters, clock(), policy) as r:
                return complaint_list(r, queue, caller=caller, status=status, dated_by=dated_by, sort=sort, order=order,
                                      limit=limit, offset=offset,
                                      unassigned_of_no_team=principal.team_bound and principal.may_work_on(None))

        return cached(request, db, compute, filters, queue=queue, status=status, dated_by=dated_by, sort=sort, order=order,
                      limit=limit, offset=offset, windowed=windowed, caller=caller if queue == "mine" else None)

    # ---------------------------------------------------------------- dashboards
    @get("/dashboards/supervisor", response_model=SupervisorDashboard, tags=["dashboards"],
         responses=NOT_READY, summary="Today's flow, backlog, agents' load, SLA attainment, at-risk and breached")
    def supervisor(request: Request, db: Db, filters: Filtered, principal: allowed(READ_SUPERVISOR),  # type: ignore[valid-type]
                   list_limit: Annotated[int, Query(ge=1, le=200, description="rows of the at-risk and breached lists")] = 20,
                   ) -> dict[str, Any]:
        filters = scoped(filters, principal, db)
        return with_alerts(cached(request, db, lambda: figures.supervisor(
            db, filters, list_limit=list_limit, now=clock(), policy=policy), filters, list_limit=list_limit), principal)

    @get("/dashboards/product", response_model=ProductDashboard, tags=["dashboards"],
         responses=NOT_READY, summary="Product lines ranked, top categories, week-over-week growth, defects around a release")
    def product(request: Request, db: Db, filters: Filtered, principal: allowed(READ_PRODUCT),  # type: ignore[valid-type]
                release: Annotated[date | None, Query(description="a release date: defect trend around it")] = None,
                release_days: Annotated[int, Query(ge=1, le=90)] = 14) -> dict[str, Any]:
        if release is not None and not date(1971, 1, 1) <= release <= date(9000, 1, 1):
            raise _validation("release", "release must be a date between 1971 and 9000")
        filters = scoped(filters, principal, db)
        return with_alerts(cached(request, db, lambda: figures.product(
            db, filters, release=release, release_days=release_days, now=clock(), policy=policy), filters,
            release=release, release_days=release_days), principal)

    @get("/dashboards/executive", response_model=ExecutiveDashboard, tags=["dashboards"],
         responses=NOT_READY, summary="CSAT/NPS trend, monthly high-priority volume, handling time, reopen and repeat rates")
    def executive(request: Request, db: Db, filters: Filtered, principal: allowed(READ_EXECUTIVE),  # type: ignore[valid-type]
                  granularity: Granularity = "week") -> dict[str, Any]:
        filters = scoped(filters, principal, db)
        return with_alerts(cached(request, db, lambda: figures.executive(
            db, filters, granularity=granularity, now=clock(), policy=policy), filters, granularity=granularity),
            principal)

    @get("/dimensions", response_model=DimensionValues, tags=["dashboards"], responses=NOT_READY,
         summary="The teams, products, categories and regions in the read model (for filters)")
    def dimensions(request: Request, db: Db, principal: Models) -> dict[str, list[str]]:
        def compute() -> dict[str, list[str]]:
            with figures.request(db, RequestFilters(), clock(), policy) as r:
                return figures.dimension_values(r)

        return cached(request, db, compute)

    # ---------------------------------------------------------------- alerts
    Alerting = allowed(READ_ALERTS)
    NO_ALERTS = {503: {"model": Problem, "description": "the read node has no events table or no alerts read model"}}

    def alerts_table(db: duckdb.DuckDBPyConnection) -> None:
        if not figures.has_table(db, figures.ALERTS):
            raise HTTPException(503, "the read node keeps no alerts read model: run it with every read model"
                                     " (COMPLAINTS_PROJECTORS=projections.models:ALL_SPEC)")

    @get("/alerts", response_model=AlertList, tags=["alerts"], responses=NO_ALERTS,
         summary="Alerts: active ones (open or acknowledged) unless `status` says otherwise, "
                 "critical first, then newest first")
    def alert_list(request: Request, db: Db, query: Annotated[AlertFilters, Query()],
                   principal: Alerting) -> dict[str, Any]:
        if principal.team_bound:
            if query.team not in (None, principal.team):
                raise HTTPException(403, f"{principal.subject} sees team {principal.team}'s alerts only")
            if principal.team is None:
                raise HTTPException(403, f"{principal.subject} belongs to no team: its token has no team claim")
            query = query.model_copy(update={"team": principal.team})
        alerts_table(db)

        def compute() -> dict[str, Any]:
            items, total = figures.alerts(db, query)
            return {"items": items, "total": total, "limit": query.limit}

        return cached(request, db, compute, query)

    @get("/alerts/{alert_id}", response_model=AlertDetail, tags=["alerts"],
         responses=ALERT_NOT_FOUND | NO_ALERTS,
         summary="One alert with its evidence and its history (its events in order)")
    def alert_detail(alert_id: Annotated[UUID, Path(description="the alert's id")], db: Db,
                     principal: Alerting) -> dict[str, Any]:
        alerts_table(db)
        found = figures.alert(db, alert_id)
        if found is None:
            raise HTTPException(404, f"no alert with id {alert_id} in the read model")
        if principal.team_bound and (principal.team is None or found["team"] != principal.team):
            raise HTTPException(403, f"{principal.subject} sees team {principal.team or '(none)'}'s alerts only;"
                                     f" this one is {'no team' if found['team'] is None else 'team ' + found['team']}'s")
        return found

    # ---------------------------------------------------------------- read models
    @get("/sla", response_model=Page[SlaRow], tags=["read models"], responses=NOT_READY,
         summary="The SLA clocks of every complaint registered in the period (first response, resolution, "
                 "one next response per customer message), judged at as_of (or now)")
    def sla(request: Request, db: Db, filters: Filtered, principal: Models, sort: SlaSort = "registered_at",
            order: Order = "asc", limit: Limit = 100, offset: Offset = 0) -> dict[str, Any]:
        filters = scoped(filters, principal, db)

        def compute() -> dict[str, Any]:
            with figures.request(db, filters, clock(), policy) as r:
                rows, total = figures.paged(figures.sla_rows(r), sort, order, limit, offset,
                                             ("complaint_id", "metric", "cycle"))
                return {"items": rows.rows(r.db), "total": total.rows(r.db)[0]["total"], "limit": limit,
                        "offset": offset, "sort": sort, "order": order}

        return cached(request, db, compute, filters, sort=sort, order=order, limit=limit, offset=offset)

    def page(rows: list[dict[str, Any]], sort: str, order: str, limit: int, offset: int,
             key: tuple[str, ...]) -> dict[str, Any]:
        return {"items": figures.sort_page(rows, sort, order, limit, offset, key), "total": len(rows),
                "limit": limit, "offset": offset, "sort": sort, "order": order}

    @get("/workload", response_model=Page[WorkloadRow], tags=["read models"], responses=NOT_READY,
         summary="Per agent: open, waiting and overdue complaints now; resolved today and in 7 days")
    def workload(request: Request, db: Db, filters: Filtered, principal: Models, sort: WorkloadSort = "open",
                 order: Order = "desc", limit: Limit = 100, offset: Offset = 0) -> dict[str, Any]:
        filters = scoped(filters, principal, db)

        def compute() -> dict[str, Any]:
            with figures.request(db, filters, clock(), policy) as r:
                return page(figures.workload_rows(r), sort, order, limit, offset, ("team", "agent"))

        return cached(request, db, compute, filters, sort=sort, order=order, limit=limit, offset=offset)

    @get("/trends", response_model=Page[TrendRow], tags=["read models"], responses=NOT_READY,
         summary="New complaints per time bucket and value of a dimension, registered in the period")
    def trends(request: Request, db: Db, filters: Filtered, principal: Models, dimension: Dimension = "product",
               granularity: Granularity = "day", sort: TrendSort = "bucket", order: Order = "asc",
               limit: Limit = 100, offset: Offset = 0) -> dict[str, Any]:
        filters = scoped(filters, principal, db)

        def compute() -> dict[str, Any]:
            with figures.request(db, filters, clock(), policy) as r:
                return page(figures.trend_rows(r, dimension, granularity), sort, order, limit, offset, ("bucket", "key"))

        return cached(request, db, compute, filters, dimension=dimension, granularity=granularity, sort=sort,
                      order=order, limit=limit, offset=offset)

    @get("/rates", response_model=Rates, tags=["read models"], responses=NOT_READY,
         summary="A true/false custom field's rate (complaints with true among those with a value) per group, "
                 "of the complaints registered in the period")
    def field_rates(request: Request, db: Db, filters: Filtered, principal: Models,
                    of: Annotated[str, Query(pattern=rf"^{FIELD_NAME}$",
                                             description="a true/false custom field, e.g. timely_response")],
                    by: Annotated[Dimension | None, Query(
                        description="a dimension, or a custom field as field:<name>; none: one row")] = None,
                    ) -> dict[str, Any]:
        filters = scoped(filters, principal, db)

        def compute() -> dict[str, Any]:
            with figures.request(db, filters, clock(), policy) as r:
                kinds = figures.field_kinds(r, of)
                if not kinds["boolean"] and (kinds["text"] or kinds["number"]):
                    raise _validation("of", f"custom field {of} holds no true/false values")
                return {"of": of, "by": by, "window": r.window(), "items": figures.rates(r, of, by)}

        return cached(request, db, compute, filters, of=of, by=by)

    @get("/assignment-times", response_model=AssignmentTimes, tags=["read models"], responses=NOT_READY,
         summary="Time to first assignment (registration to the first Assigned): p50 and p90 per team and "
                 "bucket of registration, of the complaints registered in the period")
    def assignment_times(request: Request, db: Db, filters: Filtered, principal: Models,
                         granularity: Granularity = "month") -> dict[str, Any]:
        filters = scoped(filters, principal, db)

        def compute() -> dict[str, Any]:
            with figures.request(db, filters, clock(), policy) as r:
                return {"granularity": granularity, "window": r.window(),
                        "items": figures.assignment_times(r, granularity)}

        return cached(request, db, compute, filters, granularity=granularity)

    @get("/tags/trends", response_model=TagTrends, tags=["read models"], responses=NOT_READY,
         summary="The tags most added this week (to as_of, or now) against last week, of the filtered complaints")
    def tag_trends(request: Request, db: Db, filters: Filtered, principal: Models,
                   limit: Annotated[int, Query(ge=1, le=200, description="the top this many tags")] = 10,
                   ) -> dict[str, Any]:
        filters = scoped(filters, principal, db)

        def compute() -> dict[str, Any]:
            with figures.request(db, filters, clock(), policy) as r:
                return figures.tag_trends(r, limit)

        return cached(request, db, compute, filters, limit=limit)

    # ---------------------------------------------------------------- export
    @get("/export/{dataset}", tags=["export"], responses={
        200: {"content": {export.MEDIA_TYPES["csv"]: {}, export.MEDIA_TYPES["parquet"]: {}},
              "description": "the rows, streamed"}} | NOT_READY,
        response_class=StreamingResponse,
        summary="Any read model or dashboard section as CSV or Parquet, streamed")
    def export_dataset(dataset: Dataset, filters: Filtered, principal: allowed(EXPORT),  # type: ignore[valid-type]
                       fmt: Fmt = "csv", dimension: Dimension = "product",
                       granularity: Granularity = "day") -> StreamingResponse:
        # Its own cursor and view, closed by the stream: they must outlive this function.
        db = open_cursor()
        try:
            filters = scoped(filters, principal, db)
        except BaseException:
            db.close()
            raise
        opened = figures.request(db, filters, clock(), policy)
        try:
            r = opened.__enter__()
            made = DATASETS[dataset](r, dimension=dimension, granularity=granularity)
            reader = (r.db.sql(made.sql, params=made.params).to_arrow_reader(export.BATCH_ROWS)
                      if isinstance(made, Sql) else export.rows_reader(made))
        except BaseException:
            opened.__exit__(None, None, None)
            db.close()
            raise

        def close() -> None:
            opened.__exit__(None, None, None)
            db.close()

        body = export.stream(reader, fmt, close=close)
        name = f"{dataset.replace('.', '-')}.{fmt}"
        return StreamingResponse(body, media_type=export.MEDIA_TYPES[fmt],
                                 headers={"content-disposition": f'attachment; filename="{name}"'})

    return router


def _any_event_between(db: duckdb.DuckDBPyConnection, after: datetime, until: datetime) -> bool:
    """Whether an event occurred in (after, until]."""
    try:
        return db.execute("SELECT 1 FROM events WHERE occurred_at > ? AND occurred_at <= ? LIMIT 1",
                          [after, until]).fetchone() is not None
    except duckdb.CatalogException:  # no events table yet
        return False


def _replayed(replay: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A replay of a complaint's events, or 409 when the node lacks its beginning."""
    try:
        return replay(*args, **kwargs)
    except audit.IncompleteHistory as error:
        raise HTTPException(409, str(error)) from None


def create_read_app(db: CursorSource, authenticate: Authenticate, *, clock: Callable[[], datetime] = utc_now,
                    cache_seconds: float = DEFAULT_CACHE_SECONDS, timezone: str = DEFAULT_TIMEZONE,
                    policy: SlaPolicy | None = None, access_log: AccessLog | None = None,
                    personal_data: PersonalData | None = None, chain_links: ChainLinks | None = None,
                    instants: InstantWindow | None = None, categories: Sequence[str] | None = None,
                    as_of_granularity: int = DEFAULT_AS_OF_GRANULARITY) -> FastAPI:
    """The read API with the dashboard page, as an app of its own, over `db` (settings:
    see `read_router`)."""
    # Swagger UI and ReDoc from the installed fastapi-offline package, not a CDN.
    app = FastAPIOffline(
        generate_unique_id_function=operation_id,
        title="Complaints: read API",
        version="1.0",
        summary="Dashboards, read models, audit replay and export, from the read node's DuckDB.",
        description=(
            "Answers from the read models and the event history only. Filters: period, team, agent, "
            "category, product, region, channel, severity, tier, custom fields (`field=name:value`), tags "
            "(`tag`), and `as_of` to see the figures as they stood at "
            "an instant. Every request carries a bearer token; each role sees its own view "
            "(docs/security.md): team leads and agents their team, and personal data only for the "
            "roles allowed to see it, every view on record. Errors: 401 no valid token, 403 not "
            "allowed, 422 invalid parameter (with its `loc`), 404 unknown complaint or alert, 429 too many "
            "requests, 503 read node not ready. The dashboard page is at /dashboard."
        ),
    )
    app.include_router(read_router(lambda: db, authenticate, clock=clock, cache_seconds=cache_seconds,
                                   timezone=timezone, policy=policy, access_log=access_log, personal_data=personal_data,
                                   chain_links=chain_links, instants=instants, categories=categories,
                                   as_of_granularity=as_of_granularity))
    app.include_router(page_router(timezone))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_problems(error.errors()), status_code=422)

    return app
