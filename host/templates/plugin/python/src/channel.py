"""omnigate channel plugin `__NAME__`.

The provider POSTs each customer message as JSON, signed with HMAC-SHA256 of the body in
`X-Hub-Signature-256: sha256=<hex>`:

    {"id": "m-1", "from": {"id": "u-1", "name": "Ana"}, "text": "Hello"}

Replies go to `POST {api_base}/messages` as `{"to": …, "text": …}` with the API token as
a bearer token; the provider answers `{"id": …}`. Change both to your provider's.
"""

import json

from omnigate_sdk import (
    BadRequest,
    Channel,
    Invalid,
    Transient,
    fetch,
    host,
    json_body,
    ok_json,
    outcome,
    require_method,
    signature,
)
from wit_world.imports import types as t


class __TYPE__(Channel):
    """The channel."""

    def describe(self) -> t.PluginInfo:
        return t.PluginInfo(
            id="__NAME__", name="__NAME__", version="0.1.0", kind=t.ChannelKind.OTHER,
            capabilities=[t.Capability.TEXT],
            config=[t.Setting("api_base", "the provider's API base URL", True)],
            secrets=[
                t.Setting("webhook_secret", "signs the provider's webhooks", True),
                t.Setting("api_token", "bearer token for the provider's API", True),
            ],
            outbound_hosts=[],
        )

    def handle_webhook(self, request: t.HttpRequest) -> t.WebhookOutcome:
        require_method(request, "POST")
        # The signature first: an unsigned body is never parsed.
        signature.verify_hub_signature(request, "webhook_secret")
        incoming = json_body(request)
        sender = incoming.get("from") if isinstance(incoming, dict) else None
        if not isinstance(sender, dict) or not isinstance(incoming.get("id"), str) \
                or not isinstance(sender.get("id"), str) or not isinstance(incoming.get("text"), str):
            raise BadRequest("invalid JSON body: `id`, `from.id` and `text` are required strings")
        event = t.InboundEvent(
            external_id=incoming["id"], occurred_at=None, account=None,
            contact=t.Party(sender["id"], sender.get("name"), []),
            body=t.EventBody_Message(t.Message(
                direction=t.Direction.INBOUND, text=incoming["text"], parts=[], reply_to=None,
                forwarded=False, interactive_reply=None, referral=None,
            )),
            raw=None,
        )
        return outcome(ok_json({"ok": True}), [event])

    def send(self, message: t.OutboundMessage) -> t.SendReceipt:
        base = host.config("api_base")
        if base is None:
            raise Invalid("config `api_base` is not set")
        if message.text is None:
            raise Invalid("this channel sends text only")
        body = json.dumps({"to": message.recipient, "text": message.text}).encode()
        headers = [("content-type", "application/json"), ("authorization", "Bearer {{secret:api_token}}")]
        response = fetch.send_request("POST", f"{base}/messages", headers, body, 10_000)
        try:
            accepted = json.loads(response.body)
            return t.SendReceipt(str(accepted["id"]), response.body.decode("utf-8", "replace"))
        except (ValueError, KeyError, TypeError) as error:
            raise Transient(f"unreadable answer: {error}") from None
