"""Exporting a channel: the SDK's typed errors become the contract's error values."""

from componentize_py_types import Err
from wit_world.imports import types

from .errors import SendFailed, WebhookRefused


class Channel:
    """A channel plugin: subclass it and implement the three functions as static methods
    (or plain methods); then `Plugin = export(MyChannel)` in the module componentize-py builds."""

    def describe(self) -> types.PluginInfo:
        """Who the plugin is and what it needs. Must not depend on configuration."""
        raise NotImplementedError

    def handle_webhook(self, request: types.HttpRequest) -> types.WebhookOutcome:
        """Verify and normalize one webhook; raise a `WebhookRefused` to refuse it."""
        raise NotImplementedError

    def send(self, message: types.OutboundMessage) -> types.SendReceipt:
        """Deliver a reply with `host.fetch`; raise a `SendFailed` when it fails."""
        raise NotImplementedError


def export(channel: type[Channel]) -> type:
    """The class componentize-py exports as `omnigate:channel/plugin@0.2.0`."""
    instance = channel()

    class Plugin:
        def describe(self) -> types.PluginInfo:
            return instance.describe()

        def handle_webhook(self, request: types.HttpRequest) -> types.WebhookOutcome:
            try:
                return instance.handle_webhook(request)
            except WebhookRefused as refused:
                raise Err(refused.to_wit()) from None

        def send(self, message: types.OutboundMessage) -> types.SendReceipt:
            try:
                return instance.send(message)
            except SendFailed as failed:
                raise Err(failed.to_wit()) from None

    return Plugin
