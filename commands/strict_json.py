"""Strict JSON at the command API's edge: how a body is read, and how a 422 is told.

A command's body is JSON as RFC 8259 has it, read once by `loads`:
- UTF-8 only; a key at most once in an object (`{"channel": "web", "channel": "phone"}` is
  refused, not "the last one wins");
- numbers are finite (no `NaN`, `Infinity`, nor `1e400`, which Python's parser would
  take as infinity), integers at most 4,300 digits (Python's own bound); `2.0` and `2e0`
  are the integer 2 (one kind of number in JSON, and JSON Schema's "integer"), so the
  models' strict integers refuse only what is not one: `2.5`, `"2"`, `true`;
- at most 1,000 members in an object and the parser's own nesting bound (about 1,000):
  a command has a few dozen fields, and a body of 100,000 unknown keys is refused after
  one C-speed scan instead of becoming 100,000 validation errors.
A refusal is FastAPI's own 422 for JSON that does not parse (`json_invalid`), its
`ctx.error` saying why. NUL bytes and lone surrogates are the models' to refuse, naming
the field (`commands.models.text_problem`).

`validation_problems` renders any 422: at most `MAX_ERRORS` errors (then `truncated`
says how many there were), each with its `type`, `loc`, `msg` and scalar `ctx`, never
the `input` (a 20 MB body is not sent back), every string encodable as UTF-8 (a lone
surrogate in an unknown key is shown escaped, not a 500).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

MAX_MEMBERS = 1_000
MAX_ERRORS = 20
MAX_TEXT = 300  # characters of a message or a location part shown in a 422


class _Refused(ValueError):
    pass


def _members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len(pairs) > MAX_MEMBERS:
        raise _Refused(f"an object with more than {MAX_MEMBERS} members")
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise _Refused(f"duplicate key {twice[:100]!r}: a key may appear once in an object")
    return found


def _number(text: str) -> float | int:
    """A number written with a fraction or an exponent: finite, and an integer when it is
    one (JSON has one kind of number: 2.0 is the integer 2, as JSON Schema says)."""
    number = float(text)
    if not math.isfinite(number):
        raise _Refused(f"{text[:40]} is not a finite number")
    if number.is_integer() and abs(number) <= 2**53:
        return int(number)
    return number


def _no_constant(text: str) -> Any:
    raise _Refused(f"{text} is not JSON (numbers are finite)")


def loads(body: bytes) -> Any:
    """The body as JSON, strictly (see the module); json.JSONDecodeError says why not."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise json.JSONDecodeError(f"the body is not UTF-8 ({error.reason} at byte {error.start})", "", 0) from None
    try:
        return json.loads(text, object_pairs_hook=_members, parse_float=_number, parse_constant=_no_constant)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", "", 0) from None
    except ValueError as error:  # a hook's refusal, or an integer of too many digits
        raise json.JSONDecodeError(str(error)[:MAX_TEXT], "", 0) from None


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    """A route whose JSON body is read by `loads` (FastAPI's documented way to change how a
    request is read: a route class handing the endpoint another Request)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict


def _safe(value: Any) -> Any:
    """A location part or message fit for a JSON answer: short, and UTF-8 encodable."""
    if isinstance(value, bool | int | float) or value is None:
        return value
    text = str(value)
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def validation_problems(errors: Sequence[Any]) -> dict[str, Any]:
    """A 422's body: the first MAX_ERRORS errors without their input."""
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
