"""Request and response helpers."""

import json as _json
from urllib.parse import parse_qsl

from wit_world.imports import types

from .errors import BadRequest


def header(request: types.HttpRequest, name: str) -> str | None:
    """The first value of header `name` (case-insensitive), if present."""
    name = name.lower()
    for h in request.headers:
        if h.name.lower() == name:
            return h.value
    return None


def query(request: types.HttpRequest) -> list[tuple[str, str]]:
    """The decoded query parameters, in order."""
    return parse_qsl(request.query, keep_blank_values=True)


def require_method(request: types.HttpRequest, method: str) -> None:
    """Refuse (400) a request of another method."""
    if request.method.upper() != method:
        raise BadRequest(f"method {request.method} not allowed, expected {method}")


def json_body(request: types.HttpRequest):
    """The body parsed as JSON; a BadRequest saying why when it is not."""
    try:
        return _json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as error:
        raise BadRequest(f"body is not valid JSON: {error}") from None


def ok(body: bytes = b"", content_type: str | None = None) -> types.HttpResponse:
    """A 200 response."""
    headers = [types.Header("content-type", content_type)] if content_type else []
    return types.HttpResponse(200, headers, body)


def ok_json(value) -> types.HttpResponse:
    """A 200 response with `value` as compact JSON."""
    return ok(_json.dumps(value, separators=(",", ":")).encode(), "application/json")


def outcome(response: types.HttpResponse, events: list[types.InboundEvent]) -> types.WebhookOutcome:
    """A webhook's outcome: the provider's response and the events found."""
    return types.WebhookOutcome(response, events)
