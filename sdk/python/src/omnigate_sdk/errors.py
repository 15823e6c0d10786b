"""Typed errors: raise them from a plugin; the SDK turns them into the contract's error values.

A webhook is refused with `Unauthorized` (401), `Forbidden` (403) or `BadRequest` (400);
a reply fails with `RateLimited`, `Rejected`, `SendUnauthorized`, `Transient` or
`Invalid`. Anything else a plugin raises is a bug: it traps, and the host discards the
instance and answers 500.
"""

from wit_world.imports import types


class WebhookRefused(Exception):
    """Why a webhook was refused; one of the subclasses."""

    def to_wit(self) -> types.WebhookError:
        raise NotImplementedError


class Unauthorized(WebhookRefused):
    """Signature or secret missing or wrong (HTTP 401)."""

    def to_wit(self) -> types.WebhookError:
        return types.WebhookError_Unauthorized(str(self))


class Forbidden(WebhookRefused):
    """A handshake that must fail, e.g. a wrong verify token (HTTP 403)."""

    def to_wit(self) -> types.WebhookError:
        return types.WebhookError_Forbidden(str(self))


class BadRequest(WebhookRefused):
    """The request cannot be understood; the reason goes back to the caller (HTTP 400)."""

    def to_wit(self) -> types.WebhookError:
        return types.WebhookError_BadRequest(str(self))


class SendFailed(Exception):
    """Why a reply was not delivered; one of the subclasses."""

    def to_wit(self) -> types.SendError:
        raise NotImplementedError


class RateLimited(SendFailed):
    """The provider throttled us; `retry_after` seconds if it said."""

    def __init__(self, retry_after: int | None = None):
        super().__init__(f"rate limited, retry after {retry_after} s" if retry_after else "rate limited")
        self.retry_after = retry_after

    def to_wit(self) -> types.SendError:
        return types.SendError_RateLimited(self.retry_after)


class Rejected(SendFailed):
    """The provider refused this message for good; retrying will not help."""

    def __init__(self, code: str, title: str, detail: str | None = None):
        super().__init__(f"{code}: {title}")
        self.code, self.title, self.detail = code, title, detail

    def to_wit(self) -> types.SendError:
        return types.SendError_Rejected(types.ProviderError(self.code, self.title, self.detail))


class SendUnauthorized(SendFailed):
    """Credentials are wrong or expired."""

    def to_wit(self) -> types.SendError:
        return types.SendError_Unauthorized(str(self))


class Transient(SendFailed):
    """A temporary failure (5xx, timeout); retrying may help."""

    def to_wit(self) -> types.SendError:
        return types.SendError_Transient(str(self))


class Invalid(SendFailed):
    """The message cannot be expressed on this channel (capability, recipient, config)."""

    def to_wit(self) -> types.SendError:
        return types.SendError_Invalid(str(self))


class SecretError(Exception):
    """The channel has no secret of that name, or its value does not fit the scheme."""


class FetchFailed(Exception):
    """`http-fetch` produced no response: denied, invalid, timeout, too large, connection."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail = kind, detail
