"""The plugin run natively against the SDK's fake host, with the Rust plugin's fixtures."""

import pathlib
import unittest

from componentize_py_types import Err
from omnigate_sdk import BadRequest, Invalid, RateLimited, Rejected, Transient, Unauthorized, signature
from omnigate_sdk.testing import Harness, request, response, standard_webhooks_request
from wit_world.imports import host as wit_host
from wit_world.imports import types as t

from webchat import WebChat

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW_SECS = 1_795_514_400  # 2026-11-24T10:00:00Z
FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "webchat" / "fixtures"


def harness() -> Harness:
    return (Harness().secret("signing_secret", SECRET)
            .config("callback_url", "https://shop.example/omnigate/replies")
            .allow_host("shop.example").now(NOW_SECS * 1000 + 30_000))


def receive(name: str) -> t.InboundEvent:
    with harness():
        outcome = WebChat().handle_webhook(standard_webhooks_request(SECRET, (FIXTURES / name).read_bytes(), NOW_SECS))
    assert outcome.response.status == 200
    assert outcome.response.body == b'{"ok":true}'
    assert len(outcome.events) == 1
    return outcome.events[0]


def reply() -> t.OutboundMessage:
    return t.OutboundMessage(
        id="omni-msg-1", recipient="v-42", conversation_id="cv_1", text="Yes, in stock!", parts=[],
        reply_to="site-msg-1002",
        interactive=t.Interactive(t.InteractiveStyle.BUTTONS, "Want it?", None, [t.Choice("buy", "Buy", None)]),
        template=None, reaction=None, options=[])


class Inbound(unittest.TestCase):
    def test_describe(self):
        info = WebChat().describe()
        self.assertEqual((info.id, info.config[0].name, info.secrets[0].name), ("webchat", "callback_url", "signing_secret"))

    def test_text_message_with_utm_page(self):
        event = receive("message_utm.json")
        self.assertEqual(event.external_id, "site-msg-1001")
        self.assertEqual(event.occurred_at, NOW_SECS * 1000)
        self.assertEqual(event.contact.id, "v-42")
        referral = event.body.value.referral
        self.assertEqual(referral.source, t.ReferralSource.LINK)
        self.assertIn(t.Pair("source", "instagram"), referral.utm)

    def test_attachment(self):
        message = receive("message_attachment.json").body.value
        self.assertIsInstance(message.parts[0], t.Part_Media)

    def test_wrong_signature_and_malformed_bodies(self):
        with harness():
            bad = standard_webhooks_request("whsec_d3JvbmctZ2F0ZXdheS1zZWNyZXQtZm9yLXRlc3Q=", b"{}", NOW_SECS)
            self.assertRaises(Unauthorized, WebChat().handle_webhook, bad)
            self.assertRaises(BadRequest, WebChat().handle_webhook, request("GET", "/webhooks/web", [], b""))
            with self.assertRaisesRegex(BadRequest, "unknown type `typing`"):
                WebChat().handle_webhook(standard_webhooks_request(SECRET, (FIXTURES / "unknown_type.json").read_bytes(), NOW_SECS))
            with self.assertRaisesRegex(BadRequest, "missing field `id`"):
                WebChat().handle_webhook(standard_webhooks_request(SECRET, (FIXTURES / "malformed_missing_visitor_id.json").read_bytes(), NOW_SECS))


class Outbound(unittest.TestCase):
    def test_send_posts_a_signed_reply(self):
        h = harness().on_fetch(lambda _: response(200, [], '{"id":"site-77"}'))
        with h:
            receipt = WebChat().send(reply())
            self.assertEqual(receipt.external_id, "site-77")
            body = h.sent_json()
            self.assertEqual((body["visitor_id"], body["sent_at"]), ("v-42", "2026-11-24T10:00:30Z"))
            self.assertEqual(body["interactive"]["choices"][0]["id"], "buy")
            sent = h.sent[0]
            signature.verify_standard_webhooks(request("POST", "/", [(x.name, x.value) for x in sent.headers], sent.body), "signing_secret", 300)

    def test_send_maps_provider_errors(self):
        for answer, error in [
            (lambda _: response(429, [("Retry-After", "120")]), RateLimited),
            (lambda _: response(400, [], "unknown visitor"), Rejected),
            (lambda _: response(500), Transient),
        ]:
            with harness().on_fetch(answer), self.assertRaises(error):
                WebChat().send(reply())

        def timeout(_):
            raise Err(wit_host.FetchError_Timeout())
        with harness().on_fetch(timeout), self.assertRaises(Transient):
            WebChat().send(reply())

    def test_send_refuses_what_it_cannot_do(self):
        with Harness().secret("signing_secret", SECRET), self.assertRaisesRegex(Invalid, "callback_url"):
            WebChat().send(reply())
        located = reply()
        located.parts.append(t.Part_Location(t.Location(40.4, -3.7, None, None, None)))
        with harness() as h, self.assertRaisesRegex(Invalid, "locations"):
            WebChat().send(located)
        self.assertEqual(h.sent, [])


if __name__ == "__main__":
    unittest.main()
