"""The plugin run natively against the SDK's fake host (`python -m unittest`, see README)."""

import pathlib
import unittest

from omnigate_sdk import Unauthorized
from omnigate_sdk.testing import Harness, compute_signature, request, response
from wit_world.imports import host as wit_host
from wit_world.imports import types as t

from channel import __TYPE__

SECRET = "__WEBHOOK_SECRET__"
BODY = (pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "message.json").read_bytes()


def harness() -> Harness:
    return (Harness().config("api_base", "https://api.provider.example")
            .secret("webhook_secret", SECRET).secret("api_token", "t0k3n")
            .allow_host("api.provider.example"))


def signed(body: bytes, signature: str | None = None) -> t.HttpRequest:
    signature = signature or compute_signature(wit_host.SignatureScheme.HMAC_SHA256_PREFIXED, SECRET, body)
    return request("POST", "/webhooks/__NAME__", [("X-Hub-Signature-256", signature)], body)


class Test__TYPE__(unittest.TestCase):
    def test_a_signed_message_becomes_an_event(self):
        with harness():
            outcome = __TYPE__().handle_webhook(signed(BODY))
        self.assertEqual(len(outcome.events), 1)
        self.assertEqual(outcome.events[0].external_id, "m-1")
        self.assertEqual(outcome.events[0].body.value.text, "Hello")

    def test_a_wrong_signature_is_refused(self):
        with harness(), self.assertRaises(Unauthorized):
            __TYPE__().handle_webhook(signed(BODY + b" ", compute_signature(
                wit_host.SignatureScheme.HMAC_SHA256_PREFIXED, SECRET, BODY)))

    def test_a_reply_is_posted_with_the_token(self):
        h = harness().on_fetch(lambda _request: response(200, [], '{"id": "out-1"}'))
        message = t.OutboundMessage("msg-1", "u-1", "conv-1", "Hi!", [], None, None, None, None, [])
        with h:
            receipt = __TYPE__().send(message)
        self.assertEqual(receipt.external_id, "out-1")
        self.assertEqual(h.sent[0].url, "https://api.provider.example/messages")


if __name__ == "__main__":
    unittest.main()
