"""The host's capabilities: log, clock, config, signatures, HTTP.

Inside the component these call the host; under `omnigate_sdk.testing.Harness` they call
the harness, so plugin logic runs under plain `python -m unittest`.
"""

from componentize_py_types import Err
from wit_world.imports import host as _host
from wit_world.imports import types

from .errors import FetchFailed, SecretError

LogLevel = _host.LogLevel
SignatureScheme = _host.SignatureScheme


def log(level: LogLevel, message: str) -> None:
    """Write a line to the host's log, tagged with the plugin and channel."""
    _host.log(level, message)


def now() -> int:
    """The current time, milliseconds since the Unix epoch."""
    return _host.now()


def config(key: str) -> str | None:
    """A configuration value of this channel; secrets are not readable here."""
    return _host.config(key)


def verify(scheme: SignatureScheme, secret: str, message: bytes, signature: str) -> bool:
    """Whether `signature` over `message` is right for the channel secret `secret`."""
    try:
        return _host.verify(scheme, secret, message, signature)
    except Err as error:
        raise SecretError(f"secret `{secret}`: {error.value.value}") from None


def sign(scheme: SignatureScheme, secret: str, message: bytes) -> str:
    """Sign `message` with the channel secret `secret`; the scheme's header value."""
    try:
        return _host.sign(scheme, secret, message)
    except Err as error:
        raise SecretError(f"secret `{secret}`: {error.value.value}") from None


def fetch(
    method: str,
    url: str,
    headers: list[tuple[str, str]] = (),
    body: bytes = b"",
    timeout_ms: int | None = None,
) -> _host.FetchResponse:
    """An HTTP request made by the host (only to allowed hosts; `{{secret:NAME}}`
    placeholders are filled in by the host). Raises `FetchFailed` when there is no answer."""
    request = _host.FetchRequest(
        method, url, [types.Header(name, value) for name, value in headers], body, timeout_ms
    )
    try:
        return _host.http_fetch(request)
    except Err as error:
        kind = type(error.value).__name__.removeprefix("FetchError_")
        detail = getattr(error.value, "value", None)
        raise FetchFailed(kind, "" if detail is None else str(detail)) from None
