"""Webhook signature checks, computed by the host: a plugin never holds a secret.

Every check raises `Unauthorized` with the reason ("missing webhook-signature header",
"timestamp 912 s old, tolerance 300 s", "signature does not match").
"""

from wit_world.imports import types

from . import host
from .errors import SecretError, Unauthorized
from .http import header

Scheme = host.SignatureScheme


def _required(request: types.HttpRequest, name: str) -> str:
    value = header(request, name)
    if value is None:
        raise Unauthorized(f"missing {name} header")
    return value


def _check(scheme, secret: str, message: bytes, signature: str) -> None:
    try:
        valid = host.verify(scheme, secret, message, signature)
    except SecretError as error:
        raise Unauthorized(str(error)) from None
    if not valid:
        raise Unauthorized("signature does not match")


def _fresh(name: str, value: str, tolerance_secs: int) -> int:
    try:
        ts = int(value.strip())
    except ValueError:
        raise Unauthorized(f"{name} is not a Unix timestamp") from None
    age = host.now() // 1000 - ts
    if abs(age) > tolerance_secs:
        raise Unauthorized(f"timestamp {age} s old, tolerance {tolerance_secs} s")
    return ts


def standard_webhooks_content(msg_id: str, ts_secs: int, body: bytes) -> bytes:
    """What Standard Webhooks signs: `id.timestamp.body`."""
    return f"{msg_id}.{ts_secs}.".encode() + body


def verify_standard_webhooks(request: types.HttpRequest, secret: str, tolerance_secs: int) -> None:
    """Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`."""
    msg_id = _required(request, "webhook-id")
    timestamp = _required(request, "webhook-timestamp")
    signature = _required(request, "webhook-signature")
    ts = _fresh("webhook-timestamp", timestamp, tolerance_secs)
    _check(Scheme.STANDARD_WEBHOOKS, secret, standard_webhooks_content(msg_id, ts, request.body), signature)


def sign_standard_webhooks(secret: str, msg_id: str, ts_secs: int, body: bytes) -> list[types.Header]:
    """The three Standard Webhooks headers for sending `body`, signed by the host."""
    signature = host.sign(Scheme.STANDARD_WEBHOOKS, secret, standard_webhooks_content(msg_id, ts_secs, body))
    return [
        types.Header("webhook-id", msg_id),
        types.Header("webhook-timestamp", str(ts_secs)),
        types.Header("webhook-signature", signature),
    ]


def verify_hub_signature(request: types.HttpRequest, secret: str) -> None:
    """Meta's `X-Hub-Signature-256: sha256=<hex>` over the body."""
    _check(Scheme.HMAC_SHA256_PREFIXED, secret, request.body, _required(request, "x-hub-signature-256"))


def verify_slack(request: types.HttpRequest, secret: str, tolerance_secs: int) -> None:
    """Slack: `v0=<hex>` over `v0:timestamp:body`."""
    timestamp = _required(request, "x-slack-request-timestamp")
    signature = _required(request, "x-slack-signature")
    _fresh("x-slack-request-timestamp", timestamp, tolerance_secs)
    _check(Scheme.SLACK_V0, secret, f"v0:{timestamp}:".encode() + request.body, signature)


def verify_twilio(url: str, form_params: list[tuple[str, str]], signature: str, secret: str) -> None:
    """Twilio: HMAC-SHA1 (base64) over the URL followed by the sorted form parameters."""
    message = url + "".join(name + value for name, value in sorted(form_params))
    _check(Scheme.HMAC_SHA1_BASE64, secret, message.encode(), signature)


def verify_equals(presented: str, secret: str) -> None:
    """Plain constant-time equality with the secret (Telegram's secret token)."""
    _check(Scheme.EQUALS, secret, b"", presented)
