"""The staff API's input contract, written once: base classes for request bodies and query strings, and
the field types they are built from.

- A body is a JSON object of known fields: an unknown field, or a body that is not an object (a list, a
  number, a string), is a 422 naming it (`BodyIn`: extra="forbid", strict types).
- JSON types are not coerced: `"is_public": "false"`, `"id": "3"` and `"scheduled_for": 0` are 422s
  (pydantic's strict mode; choice fields, whose JSON form is a string, are read with `Choice`).
- No string anywhere may hold a NUL character (PostgreSQL's text cannot store one).
- A time is an ISO 8601 string with a UTC offset between -14:00 and +14:00, from 2000 to 2099, and is
  read as UTC (`Moment`); a date is YYYY-MM-DD in the same years (`Day`).
- A query string names only known parameters, each once (checked for every operation by
  `refuse_unknown_input`, which also refuses a body sent to an operation that takes none, and an
  Idempotency-Key sent to an operation that does not honour it).
- A body is JSON (`Content-Type: application/json`, else 415) with no key given twice (`StrictParser`).
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import wraps
from typing import TYPE_CHECKING, Annotated, Any

from django.http import HttpRequest, HttpResponseBase
from ninja import Schema
from ninja.errors import ValidationError
from ninja.parser import Parser
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictInt,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

from incidents.models import (
    MAX_COMPONENT_DESCRIPTION_LENGTH,
    MAX_MESSAGE_LENGTH,
    MAX_REASON_LENGTH,
    MAX_REGION_LENGTH,
    MAX_REGIONS,
    MAX_WORKAROUND_LENGTH,
)
from incidents.text import is_blank, strip_invisible

if TYPE_CHECKING:
    from ninja.operation import Operation

# Ids are BigAutoFields; a larger number is no id of ours (and would overflow SQLite's INTEGER).
MAX_ID = 2**63 - 1
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
# Real UTC offsets run from -12:00 to +14:00; PostgreSQL refuses anything past ±15:59.
MAX_OFFSET = timedelta(hours=14)

_MOMENT = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|z|[+-]\d{2}:?\d{2})?")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _find_nul(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string holding a NUL inside value ("" for value itself), or None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        if isinstance(key, str) and "\x00" in key:
            return f"{path}.{key!r}".lstrip(".")
        found = _find_nul(item, f"{path}.{key}")
        if found is not None:
            return found.lstrip(".")
    return None


class InputSchema(Schema):
    """What every input shape shares: no NUL in any string it holds, at any depth."""

    @field_validator("*", mode="before")
    @classmethod
    def refuse_nul_characters(cls, value: Any, info: ValidationInfo) -> Any:
        where = _find_nul(value)
        if where is not None:
            inside = f" (at {where})" if where else ""
            raise PydanticCustomError(
                "nul_character", "must not contain NUL characters (\\u0000){inside}", {"inside": inside}
            )
        return value


class BodyIn(InputSchema):
    """A request body: a JSON object of known fields and exact JSON types."""

    model_config = ConfigDict(extra="forbid", strict=True)


class QueryIn(InputSchema):
    """Query-string parameters: strings by nature, so read as pydantic's lax mode reads them. Unknown
    parameters are refused per operation by refuse_unknown_input (ninja drops them before this model)."""

    model_config = ConfigDict(extra="forbid")


# --- field types --------------------------------------------------------------------------------


def _not_blank(value: str) -> str:
    if is_blank(value):
        raise PydanticCustomError("blank", "must not be empty or only spaces (or other invisible characters)")
    return value


def _says_something(value: str) -> str:
    """Required text. The actions refuse empty text and spaces with their own message naming the field; text
    of only invisible characters ("\u200b") survives their strip(), so it is refused here."""
    if value.strip() and is_blank(value):
        raise PydanticCustomError(
            "blank", "must say something: it holds only invisible characters (such as a zero-width space, U+200B)"
        )
    return value


def _moment(value: Any) -> datetime:
    if not isinstance(value, str):
        raise PydanticCustomError(
            "datetime_type", "must be a string: an ISO 8601 time with an offset, e.g. 2026-03-14T22:00:00+01:00"
        )
    text = value.strip()
    if not _MOMENT.fullmatch(text):
        raise PydanticCustomError(
            "datetime_format", "must be an ISO 8601 time with an offset, e.g. 2026-03-14T22:00:00+01:00 or …Z"
        )
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise PydanticCustomError("datetime_invalid", "is not a real time: {reason}", {"reason": str(exc)}) from None
    offset = moment.utcoffset()
    if offset is None:
        raise PydanticCustomError(
            "timezone_aware", "must have a UTC offset, e.g. +01:00 or Z (a time without one is not guessed)"
        )
    if abs(offset) > MAX_OFFSET:
        raise PydanticCustomError("datetime_offset", "has a UTC offset beyond ±14:00, which no place uses")
    try:
        in_utc = moment.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:00:00-14:00 is past the last year a datetime holds
        in_utc = None
    if in_utc is None or not EARLIEST <= in_utc < LATEST:
        raise PydanticCustomError("datetime_range", "must be from 2000 to 2099 in UTC (before 2100-01-01T00:00:00Z)")
    return in_utc


def _day(value: Any) -> date:
    if not isinstance(value, str):
        raise PydanticCustomError("date_type", "must be a string: a date as YYYY-MM-DD")
    if not _DAY.fullmatch(value.strip()):
        raise PydanticCustomError("date_format", "must be a date as YYYY-MM-DD")
    try:
        day = date.fromisoformat(value.strip())
    except ValueError as exc:
        raise PydanticCustomError("date_invalid", "is not a real date: {reason}", {"reason": str(exc)}) from None
    if not EARLIEST.date() <= day < LATEST.date():
        raise PydanticCustomError("date_range", "must be from the year 2000 to 2099")
    return day


_MOMENT_SCHEMA = {
    "type": "string",
    "format": "date-time",
    "description": "ISO 8601 with a UTC offset (-14:00 to +14:00), from 2000 to 2099; read as UTC.",
}

# A time: an ISO 8601 string with an offset, 2000–2099, returned in UTC (so no offset reaches the database).
Moment = Annotated[datetime, BeforeValidator(_moment), WithJsonSchema(_MOMENT_SCHEMA)]
# A date: YYYY-MM-DD, 2000–2099.
Day = Annotated[
    date,
    BeforeValidator(_day),
    WithJsonSchema({"type": "string", "format": "date", "description": "YYYY-MM-DD, from 2000 to 2099."}),
]
# A string that must say something. The actions refuse empty or blank text with their own message
# (which names the field); this states the rule in the OpenAPI schema as minLength and pattern.
NonBlank = Annotated[str, Field(json_schema_extra={"minLength": 1, "pattern": r"\S"}), AfterValidator(_says_something)]


def _empty_or_not_blank(value: str) -> str:
    if value and is_blank(value):
        raise PydanticCustomError(
            "blank",
            'must not be only spaces (or other invisible characters): send text, or "" (or leave it out) for none',
        )
    return value


# Optional free text: "" (or left out) means none, and anything else must say something: text of only
# spaces is a mistake (a template with an empty variable, say), not a way to write "none". With the limits
# the domain keeps (refused beyond them, never cut).
_EMPTY_OR_TEXT: dict[str, Any] = {"pattern": r"^$|\S"}
OptionalMarkdown = Annotated[
    str, Field(max_length=MAX_MESSAGE_LENGTH, json_schema_extra=_EMPTY_OR_TEXT), AfterValidator(_empty_or_not_blank)
]
Workaround = Annotated[
    str, Field(max_length=MAX_WORKAROUND_LENGTH, json_schema_extra=_EMPTY_OR_TEXT), AfterValidator(_empty_or_not_blank)
]
OptionalReason = Annotated[
    str, Field(max_length=MAX_REASON_LENGTH, json_schema_extra=_EMPTY_OR_TEXT), AfterValidator(_empty_or_not_blank)
]
ComponentDescription = Annotated[
    str,
    Field(max_length=MAX_COMPONENT_DESCRIPTION_LENGTH, json_schema_extra=_EMPTY_OR_TEXT),
    AfterValidator(_empty_or_not_blank),
]
NonBlankMarkdown = Annotated[
    str,
    Field(max_length=MAX_MESSAGE_LENGTH, json_schema_extra={"minLength": 1, "pattern": r"\S"}),
    AfterValidator(_says_something),
]
NonBlankReason = Annotated[
    str,
    Field(max_length=MAX_REASON_LENGTH, json_schema_extra={"minLength": 1, "pattern": r"\S"}),
    AfterValidator(_says_something),
]
# A choice (an enum whose JSON form is a string): BodyIn's strict mode would want an enum instance.
Choice = Strict(False)
Id = Annotated[StrictInt, Field(ge=1, le=MAX_ID)]


def _json_number(value: Any) -> Any:
    """A JSON number as StrictParser reads it: an int, or a Decimal for one with a fraction or exponent
    (read exactly, never rounded). Strings and booleans are not numbers here."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise PydanticCustomError("decimal_type", "Input should be a number")
    return Decimal(value)


# A share of customers, 0-100 with at most 2 decimal places, compared exactly: 100.000000000000000001 is
# refused, not rounded to 100; 1e400 is over 100, not "infinite".
Percent = Annotated[
    Decimal,
    BeforeValidator(_json_number),
    Field(ge=0, le=100, decimal_places=2),
    WithJsonSchema({"type": "number", "minimum": 0, "maximum": 100, "multipleOf": 0.01}),
]


def _digits(value: Any) -> Any:
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise PydanticCustomError("int_parsing", "must be a whole number written with digits only")
    return value


# A whole number in a query string: "1", never "1.0", "+1" or " 1".
QueryInt = Annotated[int, BeforeValidator(_digits)]


def _region(value: str) -> str:
    """A region as the actions keep it (invisible characters at the ends dropped, NFC), its length counted
    then, as the staff UI's form counts it: " " + 100 letters is 100 characters, not 101."""
    _not_blank(value)
    cleaned = unicodedata.normalize("NFC", strip_invisible(value))
    if len(cleaned) > MAX_REGION_LENGTH:
        raise PydanticCustomError(
            "string_too_long", "String should have at most {max_length} characters", {"max_length": MAX_REGION_LENGTH}
        )
    return cleaned


Region = Annotated[
    str, Field(json_schema_extra={"minLength": 1, "maxLength": MAX_REGION_LENGTH}), AfterValidator(_region)
]
Regions = Annotated[list[Region], Field(max_length=MAX_REGIONS)]


# --- parsing: JSON only, each key once ----------------------------------------------------------


class BodyRefused(ValueError):
    """A body the API will not read; `status` is what it answers (422, or 415 for a body that is not JSON)."""

    def __init__(self, message: str, status: int = 422, code: str = "invalid") -> None:
        super().__init__(message)
        self.message, self.status, self.code = message, status, code


# No body of ours nests beyond a few levels; far deeper would exhaust the recursion of validation.
MAX_DEPTH = 32


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in value (0 for a scalar), without recursing."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def _pairs_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise BodyRefused(f"The request body gives {key!r} twice; give each field once.")
        seen[key] = value
    return seen


def _media_type_problem(request: HttpRequest) -> str | None:
    """Why the body is not one we read, or None: only application/json, in UTF-8 (a charset, if given, says
    so). A +json type (application/merge-patch+json, json-patch+json, …) means something else by its body."""
    kind = (request.content_type or "").strip().lower()
    if kind != "application/json":
        return f"Send the body as JSON with Content-Type: application/json (not {request.content_type or 'none'})."
    charset = (request.content_params or {}).get("charset", "utf-8").strip().lower()
    if charset not in ("utf-8", "utf8"):
        return f"Send the body in UTF-8 (Content-Type: application/json; charset=utf-8), not {charset}."
    return None


class StrictParser(Parser):
    """ninja's parser, stricter: a body must say it is JSON and give each key once (json.loads would keep
    the last of two), and nesting too deep for the decoder is bad input, not a server fault. Query
    strings name each parameter once, unless it is a list."""

    def parse_body(self, request: HttpRequest) -> dict[str, Any]:
        problem = _media_type_problem(request)
        if problem is not None:
            raise BodyRefused(problem, status=415, code="unsupported_media_type")
        try:
            text = request.body.decode("utf-8")
        except UnicodeDecodeError:
            raise BodyRefused("The request body is not valid UTF-8.") from None
        # A byte order mark ahead of the JSON says only "UTF-8", which it is: RFC 8259 lets a parser ignore it.
        text = text.removeprefix("\ufeff")
        try:
            # Numbers with a fraction or exponent are read exactly (a float would round
            # 100.000000000000000001 to 100 and 1e400 to infinity before any check saw them).
            data = json.loads(text, object_pairs_hook=_pairs_once, parse_float=Decimal)
        except RecursionError:
            raise BodyRefused("The request body is nested too deeply.") from None
        except (json.JSONDecodeError, BodyRefused):
            raise
        except ValueError:  # Python reads no integer of more than sys.get_int_max_str_digits() digits
            limit = sys.get_int_max_str_digits()
            raise BodyRefused(
                f"The request body holds a number too long to read (more than {limit:,} digits)."
            ) from None
        if data is None:  # where the body is optional, null would read as no body at all
            raise BodyRefused("The request body must be a JSON object (or left out), not null.")
        if _depth(data) > MAX_DEPTH:  # validating it would recurse as deep (a 500, not an answer)
            raise BodyRefused(f"The request body is nested too deeply (more than {MAX_DEPTH} levels).")
        return data

    def parse_querydict(self, data: Any, list_fields: list[str], request: HttpRequest) -> dict[str, Any]:
        repeated = sorted(key for key in data if key not in list_fields and len(data.getlist(key)) > 1)
        if repeated:
            raise ValidationError(
                [
                    {"loc": ("query", key), "msg": "Given more than once; give it once", "type": "duplicate"}
                    for key in repeated
                ]
            )
        return super().parse_querydict(data, list_fields, request)


# --- per operation: unknown query parameters, and a body where none is taken -------------------


IDEMPOTENCY_HEADER = "Idempotency-Key"


def _header_names(operation: Operation) -> set[str]:
    names: set[str] = set()
    for model in operation.models:
        if model.__ninja_param_source__ == "header":
            names |= {(field.alias or name).lower() for name, field in model.model_fields.items()}
    return names


def _query_names(operation: Operation) -> set[str]:
    names: set[str] = set()
    for model in operation.models:
        if model.__ninja_param_source__ != "query":
            continue
        flatten = getattr(model, "__ninja_flatten_map__", None)
        names |= set(flatten) if flatten else {field.alias or name for name, field in model.model_fields.items()}
    return names


_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def _empty_body(request: HttpRequest) -> bool:
    """No body, `{}`, or a form with no fields (what a bare POST from many clients carries). Not `null`: a
    body, if sent, is a JSON object, as `[]` is refused."""
    raw = request.body.strip()
    if not raw:
        return True
    if request.content_type in _FORM_TYPES:
        return not request.POST and not request.FILES
    try:
        return bool(json.loads(raw) == {})
    except ValueError:
        return False


def refuse_unknown_input(run: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """An api.add_decorator(mode="view") decorator: ninja ignores query parameters no operation declares,
    and a body sent to an operation without one; both are 422s naming what was not understood."""
    operation: Operation = run.__self__  # type: ignore[attr-defined]
    if not operation.include_in_schema:
        return run  # the catch-all 404 for unknown URLs
    allowed = _query_names(operation)
    takes_body = any(model.__ninja_param_source__ in ("body", "form", "file") for model in operation.models)
    # Only declaring honours an Idempotency-Key: elsewhere a client that relies on one to make a retry
    # safe would post twice without knowing, so it is told.
    honours_key = IDEMPOTENCY_HEADER.lower() in _header_names(operation)

    @wraps(run)
    def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            errors = _unknown_input(request)
        except Exception as exc:  # e.g. RequestDataTooBig: answered by the API's handlers, in JSON
            return operation.api.on_exception(request, exc)
        if errors:
            return operation.api.on_exception(request, ValidationError(errors))
        return run(request, *args, **kwargs)

    def _unknown_input(request: HttpRequest) -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = [
            {
                "loc": ("query", name),
                "msg": "Unknown query parameter"
                + (f"; this endpoint takes {', '.join(sorted(allowed))}" if allowed else "; this endpoint takes none"),
                "type": "extra_forbidden",
            }
            for name in sorted(set(request.GET) - allowed)
        ]
        if not takes_body and request.method in ("POST", "PUT", "PATCH") and not _empty_body(request):
            errors.append({"loc": ("body",), "msg": "This endpoint takes no request body", "type": "extra_forbidden"})
        if not honours_key and IDEMPOTENCY_HEADER in request.headers and request.method != "GET":
            errors.append(
                {
                    "loc": ("header", IDEMPOTENCY_HEADER),
                    "msg": "Only POST /api/v1/incidents honours an Idempotency-Key; this request would not be "
                    "made safe to retry by it, so it is refused. Send it without the header",
                    "type": "extra_forbidden",
                }
            )
        return errors

    return checked
