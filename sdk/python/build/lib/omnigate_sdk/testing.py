"""A native test harness: run plugin code under `python -m unittest` against a fake host.

`wit_world` must be importable: generate it with
`componentize-py -d <wit dir> -w omnigate:channel/channel@0.2.0 bindings <dir>` and put
`<dir>` on `sys.path` (the example plugins' `build.py test` does both).

    h = Harness().secret("signing_secret", "whsec_…").config("callback_url", "https://…")
    with h:
        outcome = WebChat().handle_webhook(request)

Signatures are computed like the host computes them, so a test signs requests with the
real secret value and the plugin verifies them by name.
"""

import base64
import hashlib
import hmac
import json
import time as _time
from urllib.parse import urlsplit

from componentize_py_types import Err
from wit_world.imports import host as _host
from wit_world.imports import types

Scheme = _host.SignatureScheme


def _mac(algorithm, key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, algorithm).digest()


def compute_signature(scheme, secret_value: str, message: bytes) -> str:
    """The header value the host would produce for `message` signed with `secret_value`."""
    key = secret_value.encode()
    if scheme == Scheme.STANDARD_WEBHOOKS:
        if not secret_value.startswith("whsec_"):
            raise ValueError("not a whsec_ key")
        raw = base64.b64decode(secret_value.removeprefix("whsec_"))
        return "v1," + base64.b64encode(_mac(hashlib.sha256, raw, message)).decode()
    if scheme == Scheme.HMAC_SHA256_HEX:
        return _mac(hashlib.sha256, key, message).hex()
    if scheme == Scheme.HMAC_SHA256_BASE64:
        return base64.b64encode(_mac(hashlib.sha256, key, message)).decode()
    if scheme == Scheme.HMAC_SHA256_PREFIXED:
        return "sha256=" + _mac(hashlib.sha256, key, message).hex()
    if scheme == Scheme.HMAC_SHA1_BASE64:
        return base64.b64encode(_mac(hashlib.sha1, key, message)).decode()
    if scheme == Scheme.SLACK_V0:
        return "v0=" + _mac(hashlib.sha256, key, message).hex()
    return secret_value


def response(status: int, headers: list[tuple[str, str]] = (), body: str | bytes = b"") -> _host.FetchResponse:
    """A provider's answer, for `Harness.on_fetch`."""
    body = body.encode() if isinstance(body, str) else body
    return _host.FetchResponse(status, [types.Header(n, v) for n, v in headers], body)


def request(method: str, path: str, headers: list[tuple[str, str]], body: bytes, query: str = "") -> types.HttpRequest:
    """A webhook request as the host hands it to the plugin."""
    return types.HttpRequest(method, path, query, [types.Header(n, v) for n, v in headers], body)


def standard_webhooks_request(secret_value: str, body: bytes, ts_secs: int, msg_id: str = "msg_test") -> types.HttpRequest:
    """A POST signed with Standard Webhooks, as a site's backend sends it."""
    content = f"{msg_id}.{ts_secs}.".encode() + body
    signature = compute_signature(Scheme.STANDARD_WEBHOOKS, secret_value, content)
    return request("POST", "/webhooks/test", [
        ("content-type", "application/json"),
        ("webhook-id", msg_id),
        ("webhook-timestamp", str(ts_secs)),
        ("webhook-signature", signature),
    ], body)


class Harness:
    """The fake host: config, secrets, clock, allowed hosts and fetch answers of one test.
    Use it as a context manager; the host functions are the harness's inside it."""

    def __init__(self):
        self._config: dict[str, str] = {}
        self._secrets: dict[str, str] = {}
        self._now: int | None = None
        self._hosts: set[str] = set()
        self._answer = lambda fetch: response(200)
        self.sent: list[_host.FetchRequest] = []
        """Every fetch the plugin made, in order."""
        self.logs: list[tuple[_host.LogLevel, str]] = []
        """Every line the plugin logged."""
        self._saved = {}

    def config(self, key: str, value: str) -> "Harness":
        self._config[key] = value
        return self

    def secret(self, name: str, value: str) -> "Harness":
        self._secrets[name] = value
        return self

    def now(self, millis: int) -> "Harness":
        self._now = millis
        return self

    def allow_host(self, host: str) -> "Harness":
        self._hosts.add(host)
        return self

    def on_fetch(self, answer) -> "Harness":
        """`answer(request)` returns a FetchResponse or raises `Err(FetchError_…)`."""
        self._answer = answer
        return self

    def sent_json(self, index: int = -1):
        """The JSON body of a fetch the plugin made."""
        return json.loads(self.sent[index].body)

    # The fake host functions.
    def _log(self, level, message):
        self.logs.append((level, message))

    def _time(self):
        return self._now if self._now is not None else int(_time.time() * 1000)

    def _secret(self, name):
        if name not in self._secrets:
            raise Err(_host.SecretError_Unknown(name))
        return self._secrets[name]

    def _verify(self, scheme, secret, message, signature):
        value = self._secret(secret)
        try:
            expected = compute_signature(scheme, value, message)
        except ValueError as error:
            raise Err(_host.SecretError_Malformed(str(error))) from None
        presented = signature.split(" ") if scheme == Scheme.STANDARD_WEBHOOKS else [signature]
        return any(hmac.compare_digest(expected, p) for p in presented)

    def _sign(self, scheme, secret, message):
        try:
            return compute_signature(scheme, self._secret(secret), message)
        except ValueError as error:
            raise Err(_host.SecretError_Malformed(str(error))) from None

    def _fetch(self, fetch):
        host = urlsplit(fetch.url).hostname or ""
        if host not in self._hosts:
            raise Err(_host.FetchError_Denied(f"host {host} is not allowed"))
        self.sent.append(fetch)
        return self._answer(fetch)

    def __enter__(self) -> "Harness":
        fakes = {"log": self._log, "now": self._time, "config": self._config.get,
                 "verify": self._verify, "sign": self._sign, "http_fetch": self._fetch}
        for name, fake in fakes.items():
            self._saved[name] = getattr(_host, name)
            setattr(_host, name, fake)
        return self

    def __exit__(self, *exc):
        for name, original in self._saved.items():
            setattr(_host, name, original)
        return False
