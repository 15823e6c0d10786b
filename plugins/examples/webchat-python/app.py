"""The module componentize-py builds: exports the web chat channel."""

from omnigate_sdk import export

from webchat import WebChat

Plugin = export(WebChat)
