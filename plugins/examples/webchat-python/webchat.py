"""The web chat channel in Python: the same behaviour as the Rust plugin `plugins/webchat`.

The site's backend POSTs each visitor message as JSON signed with Standard Webhooks;
replies go back as signed JSON POSTs to the site's `callback_url`
(payloads: docs/channels/webchat.md).
"""

import json

from omnigate_sdk import (
    BadRequest,
    Channel,
    Invalid,
    fetch,
    host,
    ok_json,
    outcome,
    referral_from_url,
    require_method,
    signature,
    time,
)
from wit_world.imports import types as t

SIGNING_SECRET = "signing_secret"
"""The secret the site signs its requests with and we sign replies with (`whsec_…`)."""
CALLBACK_URL = "callback_url"
"""The config key holding the URL replies are POSTed to."""
TOLERANCE_SECS = 5 * 60
"""How old (or how far in the future) a request's `webhook-timestamp` may be."""
SEND_TIMEOUT_MS = 10_000

MEDIA_KINDS = {kind.name.lower(): kind for kind in t.MediaKind}


def _text(value, field: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise BadRequest(f"invalid JSON body: `{field}` is not a string")


def _required(obj: dict, field: str, path: str) -> str:
    if field not in obj or obj[field] is None:
        raise BadRequest(f"invalid JSON body: missing field `{field}`" + (f" in `{path}`" if path else ""))
    return _text(obj[field], f"{path}.{field}" if path else field)


def _media(attachment) -> t.Part:
    if not isinstance(attachment, dict):
        raise BadRequest("invalid JSON body: an attachment is not an object")
    kind = _required(attachment, "type", "attachments")
    if kind not in MEDIA_KINDS:
        raise BadRequest(f"invalid JSON body: unknown variant `{kind}`")
    size = attachment.get("size")
    return t.Part_Media(t.Media(
        kind=MEDIA_KINDS[kind], id=None, url=_required(attachment, "url", "attachments"),
        mime_type=_text(attachment.get("mime_type"), "mime_type"),
        caption=_text(attachment.get("caption"), "caption"),
        filename=_text(attachment.get("filename"), "filename"),
        size=size if isinstance(size, int) else None, sha256=None,
    ))


def to_event(message: dict) -> t.InboundEvent:
    """A visitor message → the normalized event."""
    msg_id = _required(message, "id", "")
    visitor = message.get("visitor")
    if not isinstance(visitor, dict):
        raise BadRequest("invalid JSON body: missing field `visitor`")
    visitor_id = _required(visitor, "id", "visitor")
    if not msg_id.strip():
        raise BadRequest("`id` is empty")
    if not visitor_id.strip():
        raise BadRequest("`visitor.id` is empty")
    text = _text(message.get("text"), "text") or None
    attachments = message.get("attachments") or []
    interactive = message.get("interactive_reply")
    if text is None and not attachments and interactive is None:
        raise BadRequest("message has no text, attachments or interactive_reply")
    occurred_at = None
    if message.get("sent_at") is not None:
        occurred_at = time.parse_rfc3339(str(message["sent_at"]))
        if occurred_at is None:
            raise BadRequest(f"`sent_at` is not an RFC 3339 timestamp: {json.dumps(message['sent_at'])}")
    verified = visitor.get("authenticated") is True
    handles = [
        t.Handle(kind, value, verified)
        for kind, value in ((t.HandleKind.EMAIL, visitor.get("email")), (t.HandleKind.PHONE, visitor.get("phone")))
        if value
    ]
    reply = None
    if interactive is not None:
        kind = t.InteractiveKind.LIST if interactive.get("kind") == "list" else t.InteractiveKind.BUTTON
        reply = t.InteractiveReply(kind, _required(interactive, "id", "interactive_reply"), interactive.get("title"))
    page = message.get("page")
    referral = referral_from_url(page["url"], page.get("referrer")) if isinstance(page, dict) and page.get("url") else None
    return t.InboundEvent(
        external_id=msg_id,
        occurred_at=occurred_at,
        account=None,
        contact=t.Party(visitor_id, _text(visitor.get("name"), "visitor.name"), handles),
        body=t.EventBody_Message(t.Message(
            direction=t.Direction.INBOUND, text=text, parts=[_media(a) for a in attachments],
            reply_to=_text(message.get("reply_to"), "reply_to"), forwarded=False,
            interactive_reply=reply, referral=referral,
        )),
        raw=None,
    )


def to_payload(message: t.OutboundMessage, now_ms: int) -> dict:
    """A reply → the JSON the site receives."""
    if message.template is not None:
        raise Invalid("webchat cannot send templates")
    if message.reaction is not None:
        raise Invalid("webchat cannot send reactions")
    parts = []
    for part in message.parts:
        if isinstance(part, t.Part_Media):
            media = part.value
            if media.url is None:
                raise Invalid("webchat cannot send media without a url")
            entry = {"type": media.kind.name.lower(), "url": media.url}
            for field in ("mime_type", "filename", "caption", "size"):
                if getattr(media, field) is not None:
                    entry[field] = getattr(media, field)
            parts.append(entry)
        elif isinstance(part, t.Part_Location):
            raise Invalid("webchat cannot send locations")
        elif isinstance(part, t.Part_Contact):
            raise Invalid("webchat cannot send contact cards")
        else:
            raise Invalid(f'webchat cannot send unsupported part "{part.value.provider_type}"')
    if message.text is None and not parts and message.interactive is None:
        raise Invalid("webchat cannot send an empty message")
    payload = {
        "type": "message", "id": message.id, "conversation_id": message.conversation_id,
        "visitor_id": message.recipient, "text": message.text, "parts": parts,
        "reply_to": message.reply_to,
    }
    if message.interactive is not None:
        element = message.interactive
        interactive = {"style": element.style.name.lower(), "body": element.body}
        if element.action_label is not None:
            interactive["action_label"] = element.action_label
        interactive["choices"] = [
            {"id": c.id, "title": c.title, **({"description": c.description} if c.description is not None else {})}
            for c in element.choices
        ]
        payload["interactive"] = interactive
    payload["sent_at"] = time.format_rfc3339(now_ms)
    return payload


class WebChat(Channel):
    """The web chat channel."""

    def describe(self) -> t.PluginInfo:
        return t.PluginInfo(
            id="webchat", name="Web chat", version="0.2.0", kind=t.ChannelKind.WEBCHAT,
            capabilities=[t.Capability.TEXT, t.Capability.MEDIA, t.Capability.INTERACTIVE,
                          t.Capability.REFERRALS, t.Capability.REPLIES],
            config=[t.Setting(CALLBACK_URL, "URL on the site that receives replies (POST, JSON)", True)],
            secrets=[t.Setting(SIGNING_SECRET, "Standard Webhooks key (whsec_…) shared with the site, both directions", True)],
            outbound_hosts=[],
        )

    def handle_webhook(self, request: t.HttpRequest) -> t.WebhookOutcome:
        require_method(request, "POST")
        # Check the signature before looking at the body: unsigned input is never parsed.
        signature.verify_standard_webhooks(request, SIGNING_SECRET, TOLERANCE_SECS)
        try:
            message = json.loads(request.body)
        except (ValueError, UnicodeDecodeError) as error:
            raise BadRequest(f"invalid JSON body: {error}") from None
        if not isinstance(message, dict):
            raise BadRequest("invalid JSON body: not an object")
        if message.get("type") != "message":
            raise BadRequest(f"unknown type `{message.get('type')}`")
        return outcome(ok_json({"ok": True}), [to_event(message)])

    def send(self, message: t.OutboundMessage) -> t.SendReceipt:
        callback_url = host.config(CALLBACK_URL)
        if callback_url is None:
            raise Invalid(f"config `{CALLBACK_URL}` is not set")
        now_ms = host.now()
        body = json.dumps(to_payload(message, now_ms), separators=(",", ":"), ensure_ascii=False).encode()
        # The host signs; the plugin only names the secret. The message id doubles as
        # `webhook-id`, so the site can drop a retried delivery it already has.
        signed = signature.sign_standard_webhooks(SIGNING_SECRET, message.id, now_ms // 1000, body)
        headers = [(h.name, h.value) for h in signed] + [("content-type", "application/json")]
        response = fetch.send_request("POST", callback_url, headers, body, SEND_TIMEOUT_MS)
        external_id = message.id
        try:
            ack = json.loads(response.body)
            if isinstance(ack, dict) and isinstance(ack.get("id"), str):
                external_id = ack["id"]
        except (ValueError, UnicodeDecodeError):
            pass
        raw = response.body.decode("utf-8", "replace") if response.body else None
        return t.SendReceipt(external_id, raw)
