"""Replies through `host.fetch`, with provider answers mapped to the typed send errors
(the same mapping as the Rust SDK's `send_error_for_status` and `send_error_for_fetch`)."""

from . import host
from .errors import FetchFailed, Invalid, RateLimited, Rejected, SendFailed, SendUnauthorized, Transient

MAX_DETAIL = 500
"""The longest provider body quoted in an error."""


def send_error_for_status(status: int, headers, body: bytes) -> SendFailed:
    """The error a non-2xx provider answer means: 429 rate limited (with `retry-after`
    seconds), 401/403 unauthorized, 408 and 5xx transient, any other refused for good."""
    detail = body.decode("utf-8", "replace").strip()[:MAX_DETAIL] or None
    described = f"HTTP {status}: {detail}" if detail else f"HTTP {status}"
    if status == 429:
        retry = next((h.value for h in headers if h.name.lower() == "retry-after"), None)
        return RateLimited(int(retry) if retry and retry.strip().isdigit() else None)
    if status in (401, 403):
        return SendUnauthorized(described)
    if status == 408 or 500 <= status <= 599:
        return Transient(described)
    return Rejected(str(status), f"HTTP {status}", detail)


def send_error_for_fetch(error: FetchFailed) -> SendFailed:
    """The error a fetch without an answer means: timeouts and connection failures are
    transient, a denied or invalid request is invalid."""
    if error.kind in ("Denied", "InvalidRequest"):
        return Invalid(f"fetch {error.kind.lower()}: {error.detail}")
    return Transient(f"{error.kind}: {error.detail}")


def send_request(method: str, url: str, headers=(), body: bytes = b"", timeout_ms: int | None = None):
    """`host.fetch`, raising the matching `SendFailed` unless the provider answered 2xx."""
    try:
        response = host.fetch(method, url, headers, body, timeout_ms)
    except FetchFailed as error:
        raise send_error_for_fetch(error) from None
    if not 200 <= response.status <= 299:
        raise send_error_for_status(response.status, response.headers, response.body)
    return response
