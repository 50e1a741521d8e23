"""The HTTP command API: one POST per command, errors that say what to do.

(No `from __future__ import annotations` here: FastAPI must see the real command
classes in the endpoint signatures generated below.)
"""

import logging
import re
from collections.abc import Callable, Sequence
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, FastAPI, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline

from aggregates.access import ACCESS_LOG, READ_COMPLAINT, READ_DELIVERIES, AccessDenied, Principal
from aggregates.alert import AlertTransition
from aggregates.complaint import CommandIdReused, IllegalTransition, RuleViolation
from aggregates.fields import FieldValuesInvalid
from aggregates.subscription import SubscriptionTransition
from commands.alerts import ALERT_COMMANDS, AlertCommand, AlertResult
from commands.attachments import Attachments
from commands.correlation import CorrelationMiddleware
from commands.desk import (
    AlertAlreadyRaised, AlertNotFound, ComplaintDesk, ComplaintNotFound, SubscriptionNotFound, VersionConflict,
)
from commands.endpoints import EndpointRefused, check_url
from commands.knowledge import include_knowledge
from commands.metrics import count_command
from commands.strict_json import StrictJsonRoute, validation_problems
from commands.personal_data import UnknownCustomer
from commands.models import (
    COMPLAINT_COMMANDS,
    CommandResult,
    ComplaintCommand,
    ComplaintState,
    EraseCustomer,
    ErasureResult,
    InvalidCommand,
    PersonalDataView,
    Problem,
    RegisterComplaint,
)
from commands.subscriptions import (
    SUBSCRIPTION_COMMANDS, CreateSubscription, SubscriptionCommand, SubscriptionResult, SubscriptionView,
)

log = logging.getLogger(__name__)

OUTCOME = {403: "forbidden", 404: "not_found", 409: "conflict", 422: "invalid"}
# The composition root's dependency: the request's verified principal (401 without one).
Authenticate = Callable[..., Principal]

# The errors each kind of route answers besides 422 (documented, so clients and the
# schemathesis runs know them).
_ERROR = {
    401: "no valid bearer token", 403: "not allowed for the role or team", 404: "no such complaint, alert or subscription",
    409: "illegal transition, stale expected_version, or a command_id used before for another command",
    413: "the request body is larger than the server's limit (COMPLAINTS_MAX_BODY_BYTES)", 429: "too many requests",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": Problem, "description": _ERROR[code]} for code in codes}


READ_ERRORS = _errors(401, 403, 404, 429)
CREATE_ERRORS = _errors(401, 403, 409, 413, 429)
COMMAND_ERRORS = _errors(401, 403, 404, 409, 413, 429)


async def get_desk(request: Request) -> ComplaintDesk:
    desk: ComplaintDesk = request.app.state.desk
    return desk


Desk = Annotated[ComplaintDesk, Depends(get_desk)]


def operation_id(route: APIRoute) -> str:
    """A short, stable operation id: the route's first tag and its name (`complaints-add_note`).
    FastAPI's default adds the path and method (`add_note_complaints__complaint_id__notes_post`),
    which generated clients turn into unwieldy function names."""
    tag = re.sub(r"\W+", "_", str(route.tags[0])) if route.tags else None
    return f"{tag}-{route.name}" if tag else route.name


def create_app(desk: ComplaintDesk, authenticate: Authenticate, allow_hosts: Sequence[str] = (),
               attachments: Attachments | None = None) -> FastAPI:
    # Swagger UI and ReDoc from the installed fastapi-offline package, not a CDN.
    app = FastAPIOffline(
        generate_unique_id_function=operation_id,
        title="Complaints: command API",
        version="1.0",
        summary="Register and handle customer complaints; every command becomes an event.",
        description=(
            "Every request carries a bearer token (OAuth 2 / OpenID Connect): its subject is the "
            "actor of the command, its roles decide what it may do (docs/security.md). "
            "Each command is idempotent by `command_id` (the same id with another body is a 409) "
            "and may carry `expected_version` for optimistic concurrency. Errors: 401 no valid "
            "token, 403 not allowed for the role or team, 422 invalid input (with the field "
            "path), 404 unknown complaint, 409 illegal transition, version conflict or reused "
            "command id, 429 too many requests."
        ),
    )
    app.state.desk = desk
    # Bodies are read as strict JSON (commands.strict_json): duplicate keys, NaN and
    # oversized objects are a 422 before any model sees them.
    app.router.route_class = StrictJsonRoute
    app.add_middleware(CorrelationMiddleware)
    Actor = Annotated[Principal, Depends(authenticate)]
    # The command each POST route carries (route path -> action), for the errors and the log.
    actions: dict[str, str] = {"/complaints": RegisterComplaint.action}
    actions |= {f"/complaints/{{complaint_id}}/{path}": c.action for path, c in COMPLAINT_COMMANDS.items()}
    actions |= {f"/alerts/{{alert_id}}/{path}": c.action for path, c in ALERT_COMMANDS.items()}
    actions |= {"/subscriptions": CreateSubscription.action}
    actions |= {"/customers/{customer_id}/erasure": EraseCustomer.action}
    actions |= {f"/subscriptions/{{subscription_id}}/{path}": c.action for path, c in SUBSCRIPTION_COMMANDS.items()}
    _add_error_handlers(app, actions)

    @app.post(
        "/complaints",
        status_code=status.HTTP_201_CREATED,
        response_model=CommandResult,
        responses=CREATE_ERRORS,
        tags=["complaints"],
        summary="Register a complaint",
    )
    async def register(command: RegisterComplaint, desk: Desk, actor: Actor) -> CommandResult:
        return _done(RegisterComplaint.action, _claiming(attachments, command, desk.register(command, actor)))

    @app.get(
        "/complaints/{complaint_id}",
        response_model=ComplaintState,
        responses=READ_ERRORS,
        tags=["complaints"],
        summary="A complaint as it stands, or as it was at a past version",
    )
    def get_complaint(
        complaint_id: UUID,
        desk: Desk,
        actor: Actor,
        version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    ) -> dict[str, Any]:
        return desk.complaint_for(actor, complaint_id, version)

    @app.post(
        "/customers/{customer_id}/erasure",
        response_model=ErasureResult,
        responses=_errors(401, 403, 404, 413, 429),
        tags=["privacy"],
        summary="Erase a customer's personal data (crypto-shredding; idempotent)",
        description=(
            "Destroys the customer's data keys: every sealed copy of their name, contact, attachment names and"
            " the personal data found in their complaints' free text (in the store, on Kafka, in read nodes and"
            " dead letters) no longer opens and reads `[erased]`; each complaint records a PersonalDataErased"
            " event with the legal basis. Figures are unchanged. Erasing again answers with the first erasure"
            " (`replayed`). 404 when no complaint of this customer is on record. See docs/privacy.md."),
    )
    def erase_customer(customer_id: Annotated[str, Path(min_length=1, max_length=100)], command: EraseCustomer,
                       desk: Desk, actor: Actor) -> ErasureResult:
        erased = desk.erase_customer(customer_id, command, actor)
        count_command(EraseCustomer.action, "duplicate" if erased.replayed else "accepted")
        return erased

    @app.get("/field-definitions", responses=_errors(401, 403, 429), tags=["complaints"],
             summary="The custom fields a complaint may carry (their types, labels in en and zh, options, rules)")
    def field_definitions(desk: Desk, actor: Actor) -> dict[str, Any]:
        actor.require(READ_COMPLAINT)
        return desk.field_definitions.model_dump(mode="json")

    @app.get(
        "/complaints/{complaint_id}/personal-data-views",
        response_model=list[PersonalDataView],
        responses=READ_ERRORS,
        tags=["audit"],
        summary="Who saw this complaint's personal data, and when (auditors)",
    )
    def personal_data_views(complaint_id: UUID, desk: Desk, actor: Actor) -> list[dict[str, Any]]:
        actor.require(ACCESS_LOG)
        if desk.access_log is None:
            return []
        return desk.access_log.views(complaint_id)

    for path, command_class in COMPLAINT_COMMANDS.items():
        app.post(
            f"/complaints/{{complaint_id}}/{path}",
            response_model=CommandResult,
            responses=COMMAND_ERRORS,
            tags=["complaints"],
            summary=(command_class.__doc__ or command_class.__name__).strip().splitlines()[0],
            name=command_class.action,
        )(_endpoint_for(command_class, Actor, attachments))
    @app.post("/subscriptions", status_code=status.HTTP_201_CREATED, response_model=SubscriptionResult,
              responses=CREATE_ERRORS,
              tags=["subscriptions"], summary="Subscribe an endpoint to notifications (a webhook's secret is shown once)")
    def create_subscription(command: CreateSubscription, desk: Desk, actor: Actor) -> SubscriptionResult:
        _reachable(command.endpoint, command.kind, allow_hosts)
        return desk.create_subscription(command, actor)

    @app.get("/subscriptions/{subscription_id}", response_model=SubscriptionView, tags=["subscriptions"],
             responses=READ_ERRORS,
             summary="A subscription as it stands (never its secrets)")
    def get_subscription(subscription_id: UUID, desk: Desk, actor: Actor) -> dict[str, Any]:
        actor.require(READ_DELIVERIES)
        return desk.get_subscription(subscription_id).state()

    for path, subscription_command in SUBSCRIPTION_COMMANDS.items():
        app.post(
            f"/subscriptions/{{subscription_id}}/{path}",
            response_model=SubscriptionResult,
            responses=COMMAND_ERRORS,
            tags=["subscriptions"],
            summary=(subscription_command.__doc__ or subscription_command.__name__).strip().splitlines()[0],
            name=subscription_command.action,
        )(_subscription_endpoint_for(subscription_command, Actor, allow_hosts))
    for path, alert_command in ALERT_COMMANDS.items():
        app.post(
            f"/alerts/{{alert_id}}/{path}",
            response_model=AlertResult,
            responses=COMMAND_ERRORS,
            tags=["alerts"],
            summary=(alert_command.__doc__ or alert_command.__name__).strip().splitlines()[0],
            name=alert_command.action,
        )(_alert_endpoint_for(alert_command, Actor))
    include_knowledge(app, desk, authenticate, COMMAND_ERRORS)
    if attachments is not None:
        app.include_router(attachments.router(Actor))
    return app


def _reachable(endpoint: str, kind: str, allow_hosts: Sequence[str]) -> None:
    """The SSRF guard: an endpoint on a private address is a 422 unless allowed."""
    if kind in ("email", "sms"):  # addresses and phone numbers, not URLs
        return
    try:
        check_url(endpoint, allow_hosts)
    except EndpointRefused as error:
        raise InvalidCommand("endpoint", str(error)) from None


def _subscription_endpoint_for(command_class: type[SubscriptionCommand], actor_type: Any,
                               allow_hosts: Sequence[str]) -> Callable[..., Any]:
    def endpoint(subscription_id: UUID, command: command_class, desk: Desk,  # type: ignore[valid-type]
                 actor: actor_type) -> SubscriptionResult:  # type: ignore[valid-type]
        if getattr(command, "endpoint", None) is not None:
            _reachable(command.endpoint, desk.get_subscription(subscription_id).kind, allow_hosts)  # type: ignore[attr-defined]
        return desk.act_on_subscription(subscription_id, command, actor)

    endpoint.__name__ = command_class.action
    return endpoint


def _alert_endpoint_for(command_class: type[AlertCommand], actor_type: Any) -> Callable[..., Any]:
    async def endpoint(alert_id: UUID, command: command_class, desk: Desk,  # type: ignore[valid-type]
                       actor: actor_type) -> AlertResult:  # type: ignore[valid-type]
        return desk.act_on_alert(alert_id, command, actor)

    endpoint.__name__ = command_class.action
    return endpoint


def _endpoint_for(command_class: type[ComplaintCommand], actor_type: Any,
                  attachments: Attachments | None) -> Callable[..., Any]:
    # Commands run on the event loop, not in the thread pool: writes to one event store
    # take turns anyway (SQLite's write lock, PostgreSQL's table lock), and skipping the
    # thread hop doubled the throughput (docs/benchmarks.md).
    async def endpoint(complaint_id: UUID, command: command_class, desk: Desk,  # type: ignore[valid-type]
                       actor: actor_type) -> CommandResult:  # type: ignore[valid-type]
        return _done(command_class.action, _claiming(attachments, command, desk.execute(complaint_id, command, actor)))

    endpoint.__name__ = command_class.action
    return endpoint


def _claiming(attachments: Attachments | None, command: Any, result: CommandResult) -> CommandResult:
    """The files a stored command refers to become its complaint's customer's (encrypted for
    them, so erasing them erases the files: commands.sealed_blobs)."""
    if attachments is not None:
        attachments.claim(result.complaint_id, command)
    return result


def _done(action: str, result: CommandResult) -> CommandResult:
    """One DEBUG line per command the API carried out, with the request's correlation id
    (INFO would cost a tenth of the API's throughput: the metrics count them; refusals are
    logged at INFO)."""
    outcome = "duplicate" if result.replayed else "accepted"
    log.debug("%s %s: complaint %s v%d %s", action, outcome, result.complaint_id, result.version, result.status,
             extra={"action": action, "outcome": outcome, "complaint_id": str(result.complaint_id)})
    return result


def _add_error_handlers(app: FastAPI, actions: dict[str, str]) -> None:
    def action_of(request: Request) -> str | None:
        route = request.scope.get("route")
        return actions.get(getattr(route, "path", "")) if request.method == "POST" else None

    def problem(status_code: int, kind: str, detail: str, request: Request | None = None,
                **extra: Any) -> JSONResponse:
        """An error's answer: its words, and its stable `type` for programs (and for the
        words in the client's language: complaints.error_language)."""
        if request is not None and (action := action_of(request)):
            log.info("%s refused (%d): %s", action, status_code, detail,
                     extra={"action": action, "outcome": OUTCOME[status_code]})
        return JSONResponse({"detail": detail, "type": kind, **extra}, status_code=status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        # At most 20 errors, never the input, every string encodable (commands.strict_json).
        answer = validation_problems(error.errors())
        # Refused before the desk saw it: counted here (the desk counts everything else).
        if action := action_of(request):
            count_command(action, "invalid")
            problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in answer["detail"]]
            log.info("%s refused (422): %s", action, "; ".join(problems)[:500],
                     extra={"action": action, "outcome": "invalid"})
        return JSONResponse(answer, status_code=422)

    @app.exception_handler(ComplaintNotFound)
    def not_found(request: Request, error: ComplaintNotFound) -> JSONResponse:
        return problem(404, "complaint_not_found", str(error), request, complaint_id=str(error.complaint_id))

    @app.exception_handler(UnknownCustomer)
    def unknown_customer(request: Request, error: UnknownCustomer) -> JSONResponse:
        return problem(404, "customer_not_found", str(error), request, customer_id=error.customer_id)

    @app.exception_handler(AlertNotFound)
    def alert_not_found(request: Request, error: AlertNotFound) -> JSONResponse:
        return problem(404, "alert_not_found", str(error), request, alert_id=str(error.alert_id))

    @app.exception_handler(SubscriptionNotFound)
    def subscription_not_found(request: Request, error: SubscriptionNotFound) -> JSONResponse:
        return problem(404, "subscription_not_found", str(error), request, subscription_id=str(error.subscription_id))

    @app.exception_handler(SubscriptionTransition)
    def subscription_transition(request: Request, error: SubscriptionTransition) -> JSONResponse:
        return problem(409, "subscription_transition", str(error), request, status=error.status)

    @app.exception_handler(AlertTransition)
    def alert_transition(request: Request, error: AlertTransition) -> JSONResponse:
        return problem(409, "alert_transition", str(error), request, status=error.status)

    @app.exception_handler(AlertAlreadyRaised)
    def alert_raised(request: Request, error: AlertAlreadyRaised) -> JSONResponse:
        return problem(409, "alert_already_raised", str(error), request, alert_id=str(error.alert_id))

    @app.exception_handler(IllegalTransition)
    def illegal(request: Request, error: IllegalTransition) -> JSONResponse:
        return problem(409, "illegal_transition", str(error), request, status=error.status, action=error.action)

    @app.exception_handler(VersionConflict)
    def conflict(request: Request, error: VersionConflict) -> JSONResponse:
        return problem(409, "version_conflict", str(error), request, current_version=error.current_version,
                       status=error.status)

    @app.exception_handler(RuleViolation)
    def rule(request: Request, error: RuleViolation) -> JSONResponse:
        return problem(409, "rule_violation", str(error), request)

    @app.exception_handler(CommandIdReused)
    def reused(request: Request, error: CommandIdReused) -> JSONResponse:
        return problem(409, "command_id_reused", str(error), request)

    @app.exception_handler(AccessDenied)
    def forbidden(request: Request, error: AccessDenied) -> JSONResponse:
        return problem(403, "access_denied", str(error), request)

    @app.exception_handler(InvalidCommand)
    def invalid_here(request: Request, error: InvalidCommand) -> JSONResponse:
        # Shaped like FastAPI's own 422, so clients read one error format.
        detail = [{"loc": ["body", error.field], "msg": error.message, "type": "value_error"}]
        if action := action_of(request):
            log.info("%s refused (422): %s", action, error, extra={"action": action, "outcome": "invalid"})
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(FieldValuesInvalid)
    def invalid_fields(request: Request, error: FieldValuesInvalid) -> JSONResponse:
        # Custom fields' values the definitions refuse: shaped like FastAPI's own 422 too.
        if action := action_of(request):
            log.info("%s refused (422): %s", action, str(error)[:500], extra={"action": action, "outcome": "invalid"})
        return JSONResponse(validation_problems([p | {"loc": ("body", *p["loc"])} for p in error.problems]),
                            status_code=422)
