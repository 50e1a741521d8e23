"""The customer's satisfaction survey: `POST /s/{token}/survey` records `verify` as the customer.

The survey link is the customer's only credential (`aggregates.customer_links`): the
form's answer becomes `VerifyResolution` with the command id `survey:<jti>`, carried out
by the desk for the principal `customer:<customer id>` (role `customer`, allowed to
verify and nothing else). So a survey is answered once: the same link again (a replay,
or another answer under the same command id), a complaint no longer resolved, or a
forged or expired link all get the same 404 as the status page's, which tells nothing.

Fields (an HTML form, url-encoded, or JSON): csat 1-5, nps 0-10 and effort 1-7 (both
optional, empty = not given), comment (optional), lang (the page's language). A bad
value is a 422 naming the field: an HTML page in the customer's language, or FastAPI's
error shape for JSON. The pages and the per-address limit come from the composition root
(`read_api.customer_page` makes both), so the form's answers look and count like the page.

(No `from __future__ import annotations`: FastAPI must see the real types.)
"""

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from aggregates.access import Principal
from aggregates.complaint import DomainError
from aggregates.customer_links import (
    STATUS_PATH, SURVEY_PATH, CustomerLinks, Language, LinkClaims, LinkInvalid, choose_language, complaint_number,
)
from commands.desk import ComplaintDesk, ComplaintNotFound, VersionConflict
from commands.models import CommandResult, VerifyResolution

ANSWERS = ("csat", "nps", "effort", "comment")
MAX_BODY_BYTES = 256 * 1024  # a comment of 20,000 CJK characters, url-encoded, fits
CUSTOMER_NAME = "customer (survey link)"  # the principal's display name: no personal data in events' metadata

# The request's client address: None, or the seconds to wait (the request is refused).
Limit = Callable[[Request], float | None]


class SurveyPages(Protocol):
    """The customer's pages the survey answers with (`read_api.customer_page.CustomerPages`)."""

    def thanks(self, language: Language, number: str) -> Response: ...

    def invalid(self, language: Language, field: str, back: str) -> Response: ...

    def not_found(self) -> Response: ...

    def too_many(self, wait: float) -> Response: ...


class InvalidAnswer(Exception):
    """A survey field (or the body) that cannot be recorded: a 422 naming it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class SurveyClosed(Exception):
    """Answered already, or the complaint is not resolved (any more): the link is done."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def customer_principal(customer_id: str) -> Principal:
    """Who answers a survey: the complaint's customer, through the link."""
    return Principal(f"customer:{customer_id}", CUSTOMER_NAME, frozenset({"customer"}))


def survey_command(answers: dict[str, Any], claims: LinkClaims) -> VerifyResolution:
    """The verification the answers make, under the survey's own command id (InvalidAnswer
    naming the first bad field)."""
    given = {name: value for name in ANSWERS if (value := _given(answers.get(name))) is not None}
    for name in ("csat", "nps", "effort"):  # a form's fields are text; the command's scores are numbers
        if isinstance(given.get(name), str) and given[name].isascii() and given[name].isdigit():
            given[name] = int(given[name])
    try:
        return VerifyResolution(**given, command_id=claims.survey_command_id)
    except ValidationError as error:
        first = error.errors()[0]
        raise InvalidAnswer(str(first["loc"][0]) if first["loc"] else "body", first["msg"]) from None


def record_answer(desk: ComplaintDesk, claims: LinkClaims, command: VerifyResolution) -> CommandResult:
    """Carry out the verification as the complaint's customer; SurveyClosed unless it was
    recorded now, for the first time."""
    try:
        complaint = desk.get_complaint(claims.complaint_id)
        result = desk.execute(claims.complaint_id, command, customer_principal(str(complaint.customer["id"])))
    except (ComplaintNotFound, DomainError, VersionConflict):
        raise SurveyClosed() from None
    if result.replayed:
        raise SurveyClosed()
    return result


def customer_survey_router(desk: ComplaintDesk, links: CustomerLinks, *, pages: SurveyPages, limit: Limit,
                           clock: Callable[[], datetime] = utc_now) -> APIRouter:
    """`POST /s/{token}/survey`, answered with `pages`; `limit` is checked before anything else."""
    router = APIRouter(include_in_schema=False)

    @router.post(SURVEY_PATH)
    async def answer_survey(token: str, request: Request) -> Response:
        if (wait := limit(request)) is not None:
            return pages.too_many(wait)
        try:
            claims = links.read(token, "survey", clock())
        except LinkInvalid:
            return pages.not_found()
        as_json = request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json"
        answers: dict[str, Any] = {}
        try:
            answers = await _answers(request, as_json)
            command = survey_command(answers, claims)
        except InvalidAnswer as error:
            return _invalid(error, as_json, _language(request, answers), pages, request, token)
        try:
            result = await run_in_threadpool(record_answer, desk, claims, command)
        except SurveyClosed:
            return pages.not_found()
        number = complaint_number(claims.complaint_id)
        if as_json:
            return JSONResponse({"complaint_number": number, "status": result.status},
                                headers={"cache-control": "no-store"})
        return pages.thanks(_language(request, answers), number)

    return router


async def _answers(request: Request, as_json: bool) -> dict[str, Any]:
    """The request's fields: a JSON object, or a url-encoded form (first value of each)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise InvalidAnswer("body", f"more than {MAX_BODY_BYTES} bytes")
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise InvalidAnswer("body", f"more than {MAX_BODY_BYTES} bytes")
    try:
        if as_json:
            found = json.loads(body or b"{}")
            if not isinstance(found, dict):
                raise InvalidAnswer("body", "a JSON object is expected")
            return found
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidAnswer("body", "neither a url-encoded form nor JSON in UTF-8") from None
    return {name: values[0] for name, values in fields.items()}


def _given(value: Any) -> Any:
    """A form's empty field (or a JSON null) is a question left unanswered."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def _language(request: Request, answers: dict[str, Any]) -> Language:
    """The form's language (its hidden `lang`, as the page was shown), else the browser's."""
    lang = answers.get("lang")
    return choose_language(lang if isinstance(lang, str) else None, request.headers.get("accept-language"))


def _invalid(error: InvalidAnswer, as_json: bool, language: Language, pages: SurveyPages, request: Request,
             token: str) -> Response:
    if as_json:
        return JSONResponse({"detail": [{"loc": ["body", error.field], "msg": error.message, "type": "value_error"}]},
                            422, headers={"cache-control": "no-store"})
    back = request.scope.get("root_path", "") + STATUS_PATH.format(token=token) + f"?lang={language}"
    return pages.invalid(language, error.field, back)
